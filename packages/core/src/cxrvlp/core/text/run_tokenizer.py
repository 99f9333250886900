"""A WordPiece vocabulary built for one training run from its own texts (tiny/demo configs, no hub vocab).

One rule for every method:
- a resumed run reuses `<output_dir>/tokenizer` (a rebuilt vocabulary could renumber the tokens its
  checkpoint was trained with);
- otherwise rank 0 builds the vocabulary (deterministic: the same texts give the same vocab) and every
  other rank receives rank 0's files, so no shared file system is needed before the run folder exists;
- the vocabulary is written next to the weights by the task's `save_resources` (final/, best/) and into
  `<output_dir>/tokenizer` (for resume) with `save_run_tokenizer` once the run folder passed its checks.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RUN_TOKENIZER_DIR = "tokenizer"


def build_run_tokenizer(
    texts: Callable[[], Sequence[str]],
    output_dir: str | os.PathLike,
    vocab_size: int,
    resume: bool,
    state: Any,
) -> tuple[Any, bool]:
    """(the run's tokenizer, True when freshly built and still to be saved into the run folder).

    `texts` is only called on rank 0; `state` is the loop's `process_state(cfg)`.
    """
    from cxrvlp.core.text.tokenize import build_tokenizer_on_main, check_same_vocab, load_tokenizer

    saved = Path(output_dir) / RUN_TOKENIZER_DIR
    if resume and saved.is_dir():
        tok = load_tokenizer(saved)
        check_same_vocab(tok, state)
        return tok, False
    folder = build_tokenizer_on_main(lambda: [t for t in texts() if t], state, vocab_size=vocab_size)
    tok = load_tokenizer(folder)
    check_same_vocab(tok, state)
    return tok, True


def save_run_tokenizer(tokenizer: Any, output_dir: str | os.PathLike) -> Path:
    """Write `tokenizer` to `<output_dir>/tokenizer` atomically (call on the main process only)."""
    out = Path(output_dir) / RUN_TOKENIZER_DIR
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tokenizer-", dir=out.parent))
    tokenizer.save_pretrained(str(tmp))
    if out.is_dir():  # overwrite=true of an older run: its vocabulary is not this run's
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out
