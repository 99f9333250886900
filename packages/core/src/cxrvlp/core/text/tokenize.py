"""Tokenisation helpers: load a hub/local tokenizer, build a small WordPiece vocab, tokenise a batch."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from cxrvlp.core.errors import ConfigError
from transformers import AutoTokenizer, BertTokenizerFast, PreTrainedTokenizerBase

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0..4, the BERT convention
PADDING_MODES = ("max_length", "longest")


def build_tokenizer_from_texts(
    texts: Iterable[str],
    out_dir: str | Path,
    vocab_size: int = 2000,
    lowercase: bool = True,
    min_frequency: int = 1,
) -> BertTokenizerFast:
    """Build a BERT WordPiece vocab from `texts`, save it (vocab.txt + tokenizer files) to `out_dir`.

    For tiny demo configs that have no pretrained vocabulary; `load_tokenizer(out_dir)` reloads the result.
    DETERMINISTIC (the same texts give the same vocab in every process and run): the special tokens, every
    character seen (word-initial and "##" continuation, so no training text maps to [UNK]), then whole words
    by frequency (ties by spelling) up to `vocab_size`; a word beyond the budget is split into pieces by the
    usual greedy longest-match. The `tokenizers` WordPiece trainer is not used: it numbers its words in hash
    map order, so two runs on the same texts gave different vocabularies and the same seed trained
    different models (demo zero-shot AUROC moved by up to 0.1 between identical runs).
    """
    from collections import Counter

    from tokenizers import normalizers, pre_tokenizers

    if vocab_size < len(SPECIAL_TOKENS) + 1:
        n = len(SPECIAL_TOKENS)
        raise ConfigError(f"vocab_size must exceed the {n} special tokens, got {vocab_size}")
    texts = [t for t in texts if isinstance(t, str)]
    if not texts:
        raise ConfigError("build_tokenizer_from_texts: no texts to train on")
    # Same normaliser / pre-tokeniser as BertTokenizerFast, so the words counted are the ones it will see.
    norm = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    pre = pre_tokenizers.BertPreTokenizer()
    words: Counter[str] = Counter()
    for text in texts:
        words.update(w for w, _ in pre.pre_tokenize_str(norm.normalize_str(text)))
    initial = sorted({w[0] for w in words})
    continuation = sorted({f"##{c}" for w in words for c in w[1:]})
    vocab = list(SPECIAL_TOKENS) + [t for t in initial + continuation if t not in SPECIAL_TOKENS]
    seen = set(vocab)
    by_count = sorted((w for w, n in words.items() if n >= min_frequency), key=lambda w: (-words[w], w))
    for w in by_count:
        if len(vocab) >= vocab_size:
            break
        if w not in seen:
            vocab.append(w)
            seen.add(w)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab_file = out / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    hf_tok = _bert_tokenizer_from_vocab(vocab_file, do_lower_case=lowercase, strip_accents=None)
    hf_tok.save_pretrained(str(out))
    return hf_tok


_BUILT_VOCAB_DIRS: list[tempfile.TemporaryDirectory] = []


def build_tokenizer_on_main(
    texts: Callable[[], Iterable[str]], state: Any, vocab_size: int = 2000, prefix: str = "tokenizer-"
) -> Path:
    """A temp folder holding ONE WordPiece vocab for every process: the main process trains it on `texts()`
    (`build_tokenizer_from_texts`), the others receive its files: the vocab is deterministic, but only the
    main process needs the texts, and every rank ends on the same files even when their text shards differ.

    `state`: the process state (`cxrvlp.core.training.loop.process_state(cfg)`); `texts` is called on the
    main process only. Reload with `load_tokenizer(folder)`; check with `check_same_vocab`.

    The folder lives until the process exits (transformers 4's fast tokenizers copy their vocab.txt on
    `save_pretrained` only while that file exists), then it is removed.
    """
    holder = tempfile.TemporaryDirectory(prefix=prefix)  # its finalizer removes the folder at exit
    _BUILT_VOCAB_DIRS.append(holder)
    folder = Path(holder.name)
    files: dict[str, bytes] = {}
    if state.is_main_process:
        build_tokenizer_from_texts(texts(), folder, vocab_size=vocab_size)
        files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        files = broadcast_object_list([files])[0]
        if not state.is_main_process:
            for name, data in files.items():
                (folder / name).write_bytes(data)
    return folder


def check_same_vocab(tokenizer: PreTrainedTokenizerBase, state: Any) -> None:
    """ConfigError unless every process holds the main process's vocabulary (no-op in one process)."""
    if state.num_processes <= 1:
        return
    from accelerate.utils import broadcast_object_list

    digest = hashlib.sha256("\n".join(sorted(tokenizer.get_vocab())).encode()).hexdigest()
    if broadcast_object_list([digest])[0] != digest:
        raise ConfigError("the vocab built or read on this rank differs from rank 0's")


def _bert_tokenizer_from_vocab(vocab_file: str | Path, **kwargs) -> BertTokenizerFast:
    # Positional on purpose: the first parameter is `vocab_file` in transformers 4 and `vocab` in 5.
    return BertTokenizerFast(str(vocab_file), **kwargs)


def load_tokenizer(name_or_path: str | Path, **kwargs) -> PreTrainedTokenizerBase:
    """Load a tokenizer from a hub name, a local folder (a folder with only vocab.txt works too) or the
    name of packaged weights (`minilm-l6`, see `cxrvlp.core.encoders.packaged`)."""
    from cxrvlp.core.encoders.packaged import resolve_model_source

    path = Path(resolve_model_source(name_or_path))
    if path.is_dir():
        if (path / "tokenizer_config.json").exists() or (path / "tokenizer.json").exists():
            return AutoTokenizer.from_pretrained(str(path), **kwargs)
        if (path / "vocab.txt").exists():  # a bare WordPiece vocab, as some hub BERT repos ship it
            return _bert_tokenizer_from_vocab(path / "vocab.txt", **kwargs)
        raise ConfigError(
            f"tokenizer folder '{path}' has no tokenizer_config.json, tokenizer.json or vocab.txt"
        )
    if path.suffix == ".txt" and path.is_file():
        return _bert_tokenizer_from_vocab(path, **kwargs)
    name = str(name_or_path)
    if _looks_like_path(name):
        raise ConfigError(f"tokenizer path '{path}' does not exist (tried {path.resolve()})")
    cached = _hub_cache_dir(name)
    if cached is None and _hub_offline():
        # no minute of hub retries: offline and not in the local cache is an error at once
        raise ConfigError(
            f"cannot load tokenizer '{name}': HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set and it is not in "
            f"the local hub cache (tried {_hub_repo_folder(name)}). Download it once with "
            f"`huggingface-cli download {name}` or pass a local folder"
        )
    if cached is not None:
        kwargs.setdefault("local_files_only", True)  # in the cache: never touch the network
    try:
        return AutoTokenizer.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"cannot load tokenizer '{name_or_path}': it is not a local folder and the hub copy is not "
            f"reachable or cached (offline?). Download it once with "
            f"`huggingface-cli download {name_or_path}` or pass a local folder. Cause: {err}"
        ) from err


def _looks_like_path(name: str) -> bool:
    """A local path rather than a hub id ('org/name'): absolute, ~, ./ ../, or more than one '/'."""
    return name.startswith(("/", "~", "./", "../", ".\\")) or name.count("/") > 1 or "\\" in name


def _hub_offline() -> bool:
    return any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _hub_repo_folder(repo_id: str) -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))


def _hub_cache_dir(repo_id: str) -> Path | None:
    """The cached snapshot holding a tokenizer file of `repo_id`, or None (no network is used)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    for fname in ("tokenizer_config.json", "tokenizer.json", "vocab.txt"):
        try:
            hit = try_to_load_from_cache(repo_id, fname)
        except Exception:  # an invalid repo id: let transformers report it
            return None
        if isinstance(hit, str):
            return Path(hit).parent
    return None


def tokenize(
    tokenizer: PreTrainedTokenizerBase,
    texts: str | Sequence[str],
    max_length: int,
    padding: str = "max_length",
    truncation: bool = True,
) -> dict[str, torch.Tensor]:
    """Tokenise a batch to tensors: input_ids, attention_mask, token_type_ids, each (B, L).

    padding="max_length" gives L = max_length (the official methods); "longest" pads to the batch's longest
    (exact for masked encoders, faster).
    """
    if padding not in PADDING_MODES:
        raise ConfigError(f"padding must be one of {PADDING_MODES}, got '{padding}'")
    if isinstance(texts, str):
        texts = [texts]
    enc = tokenizer(
        list(texts),
        max_length=max_length,
        padding=padding,
        truncation=truncation,
        return_tensors="pt",
        return_token_type_ids=True,
    )
    return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
