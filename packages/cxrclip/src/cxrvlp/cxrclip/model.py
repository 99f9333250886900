"""The CXR-CLIP dual encoder: image encoder + BERT, linear projections to 512-d, learned logit scale.

Faithful to `cxrclip/model/clip.py` of kakaobrain/cxr-clip (spec §3): ResNet-50 global = avgpool(layer4)
(all BN as SyncBatchNorm), Swin global = token 0 of `last_hidden_state`, text feature = BERT hidden state at
`attention_mask.sum(-1) - 1` (the [SEP] token, not [CLS]), `nn.Linear` projections with bias and no dropout,
L2-normalised embeddings, `logit_scale` initialised to ln(1/0.07) and never clamped.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from cxrvlp.core.encoders import create_image_encoder
from cxrvlp.core.encoders.base import TextEncoderOutput
from cxrvlp.cxrclip.config import CxrClipModelConfig
from torch import nn
from transformers import BertConfig, BertModel


class BertTextEncoder(nn.Module):
    """HF BertModel (with its unused pooler, kept for checkpoint compatibility) + [SEP]/EOS pooling."""

    def __init__(self, config: dict[str, Any], pretrained: str | None = None) -> None:
        super().__init__()
        if pretrained:
            self.model = BertModel.from_pretrained(pretrained, add_pooling_layer=True)
        else:
            self.model = BertModel(BertConfig(**config), add_pooling_layer=True)
        self.out_dim = self.model.config.hidden_size

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> TextEncoderOutput:
        """(B, L) tokens -> last_hidden_state (B, L, D) and pooled = hidden state at the last real token."""
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        hidden = out.last_hidden_state  # (B, L, D)
        return TextEncoderOutput(
            last_hidden_state=hidden,
            attention_mask=attention_mask,
            pooled=eos_pool(hidden, attention_mask),
            hidden_states=out.hidden_states,
            attentions=out.attentions[-1] if output_attentions else None,
        )


def eos_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, L, D) -> (B, D): the row at index mask.sum(-1) - 1 ([SEP] for right-padded BERT input)."""
    idx = attention_mask.sum(-1) - 1  # (B,)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]


class CxrClip(nn.Module):
    """CXR-CLIP: `forward` gives the four embeddings of a training batch; `encode_*` the evaluation path."""

    def __init__(self, config: CxrClipModelConfig) -> None:
        super().__init__()
        self.config = config
        self.image_encoder = create_image_encoder(
            config.image_encoder, pretrained=config.image_pretrained, **config.image_encoder_kwargs
        )
        if config.text_encoder == "bert":
            self.text_encoder = BertTextEncoder(config.text_config, config.text_pretrained)
        else:
            from cxrvlp.core.encoders import create_text_encoder

            # a core text encoder (e.g. minilm-l6), pooled at the last real token as CXR-CLIP does
            pretrained = config.text_pretrained if config.text_pretrained is not None else False
            self.text_encoder = create_text_encoder(config.text_encoder, pretrained=pretrained, pooling="eos")
        img_dim = getattr(self.image_encoder, "out_dim", None) or self._probe_image_dim()
        txt_dim = getattr(self.text_encoder, "out_dim", None) or self.text_encoder.hidden_size
        self.image_projection = nn.Linear(img_dim, config.proj_dim)
        self.text_projection = nn.Linear(txt_dim, config.proj_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.temperature_init)))

    def _probe_image_dim(self) -> int:
        with torch.no_grad():
            x = torch.zeros(1, 3, self.config.image_size, self.config.image_size)
            return int(self.image_encoder.eval()(x).global_feat.shape[-1])

    # --- features (before projection) -------------------------------------------------------------------
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, D_img) global image feature (ResNet avgpool / Swin token 0)."""
        return self.image_encoder(images).global_feat

    def text_features(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        """(B, L) tokens -> (B, D_txt) EOS-pooled text feature."""
        out = self.text_encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        )
        return out.pooled if out.pooled is not None else eos_pool(out.last_hidden_state, attention_mask)

    # --- embeddings (projected, L2-normalised) -------------------------------------------------------------
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, proj_dim) unit-norm image embedding."""
        return F.normalize(self.image_projection(self.image_features(images)), dim=-1)

    def encode_text(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        """(B, L) tokens -> (B, proj_dim) unit-norm text embedding."""
        feats = self.text_features(input_ids, attention_mask, token_type_ids)
        return F.normalize(self.text_projection(feats), dim=-1)

    def forward(
        self,
        images: torch.Tensor,
        image_views: torch.Tensor,
        text_tokens: dict[str, torch.Tensor],
        text_tokens2: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """Training forward: two separate image-encoder calls (own BN batch statistics), two text calls."""
        return {
            "image_embeddings": self.encode_image(images),
            "image_view_embeddings": self.encode_image(image_views),
            "text_embeddings": self.encode_text(**_text_args(text_tokens)),
            "text_embeddings2": self.encode_text(**_text_args(text_tokens2)),
            "logit_scale": self.logit_scale.exp(),
        }


def _text_args(tokens: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | None]:
    return {
        "input_ids": tokens["input_ids"],
        "attention_mask": tokens["attention_mask"],
        "token_type_ids": tokens.get("token_type_ids"),
    }


def trim_padding(tokens: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Cut right padding to the batch's longest sequence: EXACT for the EOS-pooled embedding (speed_notes)."""
    length = int(tokens["attention_mask"].sum(-1).max())
    return {k: v[:, :length] for k, v in tokens.items()}


def build_model(config: CxrClipModelConfig | dict[str, Any]) -> CxrClip:
    """A CxrClip from a config (dataclass or dict)."""
    if isinstance(config, dict):
        config = CxrClipModelConfig(**config)
    return CxrClip(config)


def save_model(model: CxrClip, out_dir, tokenizer=None, extra: dict[str, Any] | None = None):
    """`save_pretrained` (safetensors + config.json) plus the tokenizer in `out_dir/tokenizer/`."""
    from pathlib import Path

    from cxrvlp.core.training.checkpoint import save_pretrained

    out = save_pretrained(
        model, {"model": model.config.to_dict(), **(extra or {})}, out_dir, model_name="cxrclip"
    )
    if tokenizer is not None:
        tokenizer.save_pretrained(str(Path(out) / "tokenizer"))
    return out


def load_pretrained(pretrained_dir) -> tuple[CxrClip, Any]:
    """(model, tokenizer folder or name) from a folder written by `save_model`; weights loaded strictly."""
    from pathlib import Path

    from cxrvlp.core.training.checkpoint import load_pretrained_weights, read_pretrained_config

    doc = read_pretrained_config(pretrained_dir)
    model = build_model(dict(doc["config"]["model"], image_pretrained=None, text_pretrained=None))
    load_pretrained_weights(model, pretrained_dir, strict=True)
    tok_dir = Path(pretrained_dir) / "tokenizer"
    return model.eval(), (tok_dir if tok_dir.is_dir() else model.config.tokenizer)
