"""The MAVL model (spec mavl.md §3): image trunk, AttentionPool2d, 75 x 9 aspect queries through a DETR-style
pre-norm decoder, presence classifier, Conv1d location embedding, aspect-wise global similarity.

Parameter names are the official ones (`backbone.{0,1,4,5,6}`, `pool.*`, `res_l1`, `res_l2`,
`disease_embedding_layer`, `decoder.layers.{i}.*`, `decoder.norm`, `location_emb`, `classifier`, `temp`), so a
release loads by name once `module.` is stripped.

The frozen text "books" (CLS embeddings of the knowledge texts, computed once by a text encoder) are buffers
here (`ana_book` (L, 768), `concept_book` (E*9, 768), row 9*e + k = entity e, aspect k), so a saved run
carries them; the official code keeps them as plain attributes outside the state dict, and the importer
allows them to be absent from a release.

`variant="medklip"` (`medklip-r50`) is MAVL's base, MedKLIP as the MAVL repository ships it
(`Pretrain/models/model_MedKLIP.py`, spec §3.6): the queries are the 75 entity descriptions only (one
"aspect": the concept book's description rows), the trunk is `res_features` (random init), location and
presence heads are per-query Linears (`cl_fc` 256 -> 768, `classifier` 256 -> 2), the feature dropout is
plain Dropout, and there is no AttentionPool2d, no `temp` and no global contrastive term (`x_global` and
`global_sim` are None).
The rest (res_l1/res_l2, the pre-norm decoder with self-attention, the location logits) is shared.

Shapes at every change are noted as comments; Q = E * A queries (E entities, A = 9 aspects), M = h*w
memory tokens.

Deviations from the official code that do not change the math (speed_notes.md hot spots):
- the decoder's attention runs without `need_weights` unless the maps are asked for (grounding);
- AttentionPool2d computes only the mean-token query (the only output the official code keeps);
- the location logits are `l_emb @ ana_book.T` gathered at the 8 candidates, not a gathered
  (B, E, 8, 768) copy of the books;
- the queries are expanded over the batch instead of repeated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from cxrvlp.core.layers.decoder import DecoderLayer, TransformerDecoder
from cxrvlp.mavl.config import MavlModelConfig
from torch import nn


@dataclass
class MavlOutput:
    """What the forward returns (B images, E entities, A aspects, Q = E*A, M memory tokens, D = d_model)."""

    x_global: torch.Tensor | None  # (B, D) AttentionPool2d output (None: medklip)
    query_embed: torch.Tensor  # (Q, D)
    features: torch.Tensor  # (Q, B, D) decoder output after the final LayerNorm (before feature dropout)
    cls_logits: torch.Tensor  # (B, E, 2)
    l_emb: torch.Tensor  # (B, E, text_dim) location embeddings
    global_sim: torch.Tensor | None  # (B, E, A) cosine(x_global, query_embed) (None: medklip)
    aspect_features: torch.Tensor  # (B, E, A, D) after feature dropout (what the heads read)
    attention_maps: list[torch.Tensor]  # need_maps: L x (B, Q, M) head-averaged cross-attention, else []


class AttentionPool2d(nn.Module):
    """CLIP's attention pooling: [mean token; tokens] + positional embedding, one MHA, mean-token output."""

    def __init__(self, spacial_dim: int, embed_dim: int, num_heads: int, output_dim: int) -> None:
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(spacial_dim**2 + 1, embed_dim) / embed_dim**0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.num_heads = num_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, output_dim)."""
        x = x.flatten(2).permute(2, 0, 1)  # (M, B, C)
        x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)  # (M+1, B, C)
        x = x + self.positional_embedding[:, None, :].to(x.dtype)
        # Only the mean-token query is kept by the official code: compute only it (same numbers).
        out, _ = F.multi_head_attention_forward(
            query=x[:1], key=x, value=x,
            embed_dim_to_check=x.shape[-1], num_heads=self.num_heads,
            q_proj_weight=self.q_proj.weight, k_proj_weight=self.k_proj.weight,
            v_proj_weight=self.v_proj.weight,
            in_proj_weight=None,
            in_proj_bias=torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]),
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
            out_proj_weight=self.c_proj.weight, out_proj_bias=self.c_proj.bias,
            use_separate_proj_weight=True, training=self.training, need_weights=False,
        )  # fmt: skip
        return out[0]  # (B, output_dim)


def _resnet50_trunk(pretrained: Any) -> tuple[nn.Module, int, int]:
    """torchvision ResNet-50 children[:-3] (conv1, bn1, relu, maxpool, layer1..3): backbone.{0,1,4,5,6}."""
    tv = torchvision.models.resnet50(weights=None)
    if pretrained:
        from cxrvlp.core.encoders.resnet import resnet50_pretrained_state_dict

        sd = resnet50_pretrained_state_dict(pretrained)
        tv.load_state_dict({k: v for k, v in sd.items()}, strict=False)
    trunk = nn.Sequential(*list(tv.children())[:-3])
    return trunk, 1024, 16


class _TinyCnn(nn.Sequential):
    """Ours (tests/demo, not the paper): 4 stride-2 conv+BN+ReLU blocks, stride 16 like ResNet layer3."""

    def __init__(self, width: int) -> None:
        layers: list[nn.Module] = []
        c_in = 3
        for c in (width // 4, width // 2, width, width):
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
            c_in = c
        super().__init__(*layers)


class _EfficientNetTrunk(nn.Module):
    """Ours (`small`, not the paper): packaged EfficientNet-Lite0, final 1280-channel map (stride 32)."""

    def __init__(self, pretrained: Any) -> None:
        super().__init__()
        from cxrvlp.core.encoders import create_image_encoder

        self.encoder = create_image_encoder("efficientnet-lite0", pretrained=bool(pretrained) or False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images).maps["final"].contiguous()


def build_backbone(cfg: MavlModelConfig) -> tuple[nn.Module, int, int]:
    """(trunk, channels, stride) for `cfg.backbone`."""
    if cfg.backbone == "resnet50":
        return _resnet50_trunk(cfg.image_pretrained)
    if cfg.backbone == "tiny-cnn":
        return _TinyCnn(cfg.tiny_channels), cfg.tiny_channels, 16
    if cfg.backbone == "efficientnet-lite0":
        return _EfficientNetTrunk(cfg.image_pretrained), 1280, 32
    raise ValueError(f"unknown MAVL backbone '{cfg.backbone}' (resnet50, tiny-cnn, efficientnet-lite0)")


class Mavl(nn.Module):
    """MAVL with the official module names; books are buffers (zeros until set or loaded)."""

    def __init__(self, config: MavlModelConfig | None = None, **overrides) -> None:
        super().__init__()
        cfg = config or MavlModelConfig()
        if overrides:
            cfg = MavlModelConfig(**{**cfg.to_dict(), **overrides})
        self.config = cfg
        d, a = cfg.d_model, cfg.n_aspects
        self.medklip = cfg.variant == "medklip"
        if cfg.variant not in ("mavl", "medklip"):
            raise ValueError(f"unknown MAVL variant '{cfg.variant}' (mavl, medklip)")
        if self.medklip and a != 1:
            raise ValueError(f"variant medklip has one query per entity: n_aspects must be 1, got {a}")
        trunk, c, stride = build_backbone(cfg)
        if self.medklip:
            self.res_features = trunk  # the official name in MedKLIP's state dict
        else:
            self.backbone = trunk
            self.pool = AttentionPool2d(cfg.image_size // stride, c, cfg.pool_heads, d)
        self.res_l1 = nn.Sequential(nn.Conv2d(c, c, kernel_size=1), nn.PReLU())
        self.res_l2 = nn.Conv2d(c, d, kernel_size=1)
        self.disease_embedding_layer = nn.Linear(cfg.text_dim, d)
        layer = DecoderLayer(
            d, cfg.nhead, cfg.dim_feedforward, cfg.decoder_dropout, "relu",
            normalize_before=True, self_attention=cfg.self_attention,
        )  # fmt: skip
        self.decoder = TransformerDecoder(layer, cfg.num_layers, nn.LayerNorm(d))
        if self.medklip:
            self.cl_fc = nn.Linear(d, cfg.text_dim)  # location embedding per query
        else:
            self.location_emb = nn.Conv1d(d, cfg.text_dim, kernel_size=a, stride=a)
        self.classifier = nn.Linear(d * a, cfg.attribute_set_size)
        if not self.medklip:
            self.temp = nn.Parameter(torch.full((a,), math.log(1 / cfg.temperature_init)))
        self.register_buffer("ana_book", torch.zeros(cfg.n_landmarks, cfg.text_dim))
        self.register_buffer("concept_book", torch.zeros(cfg.n_entities * a, cfg.text_dim))
        for name, module in self.named_children():
            if name not in ("backbone", "res_features"):
                module.apply(_init_weights)

    # ------------------------------------------------------------------------------------------------------
    @property
    def n_aspects(self) -> int:
        return self.config.n_aspects

    @property
    def trunk(self) -> nn.Module:
        """The image trunk (`backbone` in MAVL, `res_features` in MedKLIP)."""
        return self.res_features if self.medklip else self.backbone

    def set_books(
        self, ana_book: torch.Tensor | None = None, concept_book: torch.Tensor | None = None
    ) -> None:
        """Copy new books in ((L, T) and (E*A, T)); the entity count must match the config. MedKLIP (A = 1)
        also takes a MAVL book (E*9, T) and keeps its description rows (aspect 0 = MedKLIP's descriptions)."""
        with torch.no_grad():
            if ana_book is not None:
                self.ana_book.copy_(ana_book)
            if concept_book is not None:
                e, width = self.config.n_entities, concept_book.shape[-1]
                if self.n_aspects == 1 and concept_book.shape[0] == e * 9:
                    concept_book = concept_book.view(e, 9, width)[:, 0]
                self.concept_book.copy_(concept_book)

    def encode_image(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(B, 3, H, W) -> trunk map (B, C, h, w), x_global (B, D) (None: medklip), memory (B, D, h, w)."""
        f = self.trunk(images)  # (B, C, h, w)
        x_global = None if self.medklip else self.pool(f)  # (B, D)
        memory = self.res_l2(self.res_l1(f))  # (B, D, h, w)
        return f, x_global, memory

    def forward(
        self,
        images: torch.Tensor,
        concept_book: torch.Tensor | None = None,
        need_maps: bool = False,
    ) -> MavlOutput:
        """Images (B, 3, H, W) [and another (E'*A, T) concept book, e.g. zero-shot classes] -> MavlOutput."""
        _, x_global, memory = self.encode_image(images)
        return self.decode(x_global, memory, concept_book, need_maps)

    def decode(
        self,
        x_global: torch.Tensor,
        memory: torch.Tensor,
        concept_book: torch.Tensor | None = None,
        need_maps: bool = False,
    ) -> MavlOutput:
        book = self.concept_book if concept_book is None else concept_book
        a = self.n_aspects
        b = memory.shape[0]
        mem = memory.flatten(2).permute(2, 0, 1)  # (M, B, D), position p = w*row + col
        query_embed = self.disease_embedding_layer(book)  # (Q, D)
        q, d = query_embed.shape
        e = q // a
        tgt = query_embed.unsqueeze(1).expand(q, b, d)  # (Q, B, D)
        features, maps = self.decoder(tgt, mem, need_weights=need_maps)  # (Q, B, D), L x (B, Q, M)
        if self.medklip:  # per-query heads on (B, E, D) after plain Dropout
            out = F.dropout(features, self.config.feature_dropout, self.training).transpose(0, 1)
            return MavlOutput(
                x_global=None, query_embed=query_embed, features=features, cls_logits=self.classifier(out),
                l_emb=self.cl_fc(out), global_sim=None, aspect_features=out[:, :, None], attention_maps=maps,
            )  # fmt: skip
        # nn.Dropout2d on a 3-D tensor = Dropout1d over (Q, B, D): whole D-vectors per (query, image).
        out = F.dropout1d(features, self.config.feature_dropout, self.training)  # (Q, B, D)
        l_emb = self.location_emb(out.permute(1, 2, 0)).permute(
            0, 2, 1
        )  # (B, D, Q) -> (B, T, E) -> (B, E, T)
        aspect = out.permute(1, 0, 2).reshape(b, e, a, d)  # (B, E, A, D)
        cls_logits = self.classifier(aspect.reshape(b, e, a * d))  # (B, E, 2), aspect-major concatenation
        sim = F.normalize(x_global, dim=-1) @ F.normalize(query_embed, dim=-1).t()  # (B, Q)
        return MavlOutput(
            x_global=x_global,
            query_embed=query_embed,
            features=features,
            cls_logits=cls_logits,
            l_emb=l_emb,
            global_sim=sim.view(b, e, a),
            aspect_features=aspect,
            attention_maps=maps,
        )

    def location_logits(self, l_emb: torch.Tensor, location_index: torch.Tensor) -> torch.Tensor:
        """Raw dot products of l_emb (B, E, T) with the candidate anatomy embeddings -> (B, E, K)."""
        all_dots = l_emb @ self.ana_book.t().to(l_emb.dtype)  # (B, E, L)
        return all_dots.gather(-1, location_index)  # (B, E, K)


def _init_weights(module: nn.Module) -> None:
    """Official `_init_weights`: Linear and MHA projection weights N(0, 0.02); biases PyTorch's default."""
    if isinstance(module, nn.Linear):
        module.weight.data.normal_(mean=0.0, std=0.02)
    elif isinstance(module, nn.MultiheadAttention):
        module.in_proj_weight.data.normal_(mean=0.0, std=0.02)
        module.out_proj.weight.data.normal_(mean=0.0, std=0.02)


def build_model(config: MavlModelConfig) -> Mavl:
    return Mavl(config)


def heatmaps(
    attention_maps: list[torch.Tensor],
    n_aspects: int,
    aspects: tuple[int, ...] = (0, 6, 7, 8),
    mode: str = "avg",
) -> torch.Tensor:
    """Official grounding map: layer mean of (B, Q, M) maps -> (B, E, M) over `aspects` (avg|max|global)."""
    ws = torch.stack(attention_maps).mean(0)  # (B, Q, M)
    b, q, m = ws.shape
    ws = ws.view(b, q // n_aspects, n_aspects, m)[:, :, list(aspects)]  # (B, E, k, M)
    if mode == "avg":
        return ws.mean(2)
    if mode == "max":
        return ws.max(2).values
    if mode == "global":
        return ws[:, :, 0]
    raise ValueError(f"unknown heatmap mode '{mode}' (avg, max, global)")
