"""AFLoc zero-shot localisation (the method's purpose, official protocol) and zero-shot classification.

Localisation (official `inference.py` / `eval/common.py`, spec §6.1), per image and phrase:
  prompt -> `process_text` cleaning -> report embedding t_r;  map = V3 (19x19 deep-local patches) . t_r (plain
  dot product) -> Gaussian sigma 1.5 (scipy `gaussian_filter`: reflect, truncate 4) -> bilinear to S
  (align_corners=False) -> the 14-px border (BioViL's 448/512 crop at 224) set to NaN, excluded from every
  metric. IoU/Dice/CNR/pointing then follow core.metrics.grounding (min-max to [-1, 1], thresholds 0.1..0.5).

Classification, two protocols (the studied snapshot 940e3d7 has none, spec §6.2):
* "official" (default): the authors' later `classification/model_afloc.py` (commit b1f6b8dc, `--multi_class`
  as in their run.sh): class vectors = mean of the prompts' UNnormalised report embeddings t_r; logits = raw
  dot products v_g . t_pos, v_g . t_neg (no normalisation, no temperature); p_c = softmax([pos, neg])[0].
* "inferred": the spec's reading of the paper's figure: p_c = softmax([temp3 cos(v_g, t_pos), temp3 cos(v_g,
  t_neg)])[0]. Labelled 'inferred' wherever it is used.
Without negative prompts both return the positive logit (official: dot product; inferred: cosine).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from cxrvlp.afloc.data import AFLocTokenizer
from cxrvlp.afloc.model import AFLoc
from cxrvlp.core.metrics.maps import exclude_border, gaussian_blur, upsample_map
from cxrvlp.core.zeroshot import AdapterInfo, ClassPrompts

SIGMA = 1.5
# BioViL's set_margin defaults reused by AFLoc at 224: valid square int(448 * 224 / 512) = 196 -> 14 px
MARGIN_RESIZE, MARGIN_CROP = 512, 448

ZS_PROTOCOLS = {
    "official": (
        "official (authors' classification code, commit b1f6b8dc, multi_class): "
        "softmax([v_g . mean t_r(pos), "
        "v_g . mean t_r(neg)])[pos], raw dot products of the unnormalised global embeddings"
    ),
    "inferred": (
        "inferred (spec 6.2, not in the official code): softmax([10 cos(v_g, pos), 10 cos(v_g, neg)])[pos] "
        "on the global embeddings; prompts of one side averaged first"
    ),
}
GROUNDING = (
    "official: 19x19 deep-local patch embeddings . prompt report embedding, Gaussian sigma 1.5 (scipy "
    "reflect, truncate 4), bilinear upsampling, 14-px border (BioViL 448/512 margin) NaN = excluded"
)


def border_margin(size: int) -> int:
    """Official `set_margin` at a square input of `size`: floor of half the cut of the 448/512 crop."""
    return (size - int(MARGIN_CROP * size / MARGIN_RESIZE)) // 2


def similarity_maps(emb_l: torch.Tensor, report_emb: torch.Tensor) -> torch.Tensor:
    """(B, D, h, w) deep-local map, (P, D) prompt report embeddings -> (B, P, h, w) raw dot products."""
    return torch.einsum("bdhw,pd->bphw", emb_l, report_emb)


def grounding_heatmaps(
    sim: torch.Tensor, size: int, sigma: float = SIGMA, margin: int | None = None
) -> dict[str, torch.Tensor]:
    """(..., h, w) raw maps -> {"smoothed" (..., h, w), "upsampled" (..., S, S), "heatmap" (NaN border)}."""
    smoothed = gaussian_blur(sim, sigma)  # half precision upcast to float32, float64 kept
    up = upsample_map(smoothed, size)
    m = border_margin(size) if margin is None else margin
    return {"smoothed": smoothed, "upsampled": up, "heatmap": exclude_border(up, m, fill=float("nan"))}


def pos_neg_probability(cos_pos: torch.Tensor, cos_neg: torch.Tensor, temp: float = 10.0) -> torch.Tensor:
    """softmax over (temp pos, temp neg), probability of the positive (inferred: cosines, temp 10; official:
    raw dot products, temp 1)."""
    return torch.softmax(torch.stack([cos_pos, cos_neg], dim=-1) * temp, dim=-1)[..., 0]


@dataclass
class ImageEmbedding:
    """What `encode_images` returns."""

    global_emb: torch.Tensor  # (B, D) v_g (not normalised)
    local_emb: torch.Tensor  # (B, D, h, w) V3
    size: int


class AFLocZeroShotAdapter:
    """`cxrvlp.core.zeroshot.ZeroShotAdapter` over an AFLoc model (ours or the imported release)."""

    def __init__(
        self,
        model: AFLoc,
        tokenizer: AFLocTokenizer,
        model_name: str = "afloc",
        device: str | torch.device | None = None,
        checkpoint_sha256: str | None = None,
        batch_size: int = 64,
        exclude_border: bool = True,
        protocol: str = "official",
    ) -> None:
        from cxrvlp.core.data.transforms import build_transform

        self.device = torch.device(device or "cpu")
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.exclude_border = exclude_border
        if protocol not in ZS_PROTOCOLS:
            raise ValueError(f"protocol must be one of {sorted(ZS_PROTOCOLS)}, got '{protocol}'")
        self.protocol = protocol
        # frozen-encoder tasks: the ResNet-50 trunk (forward -> ImageEncoderOutput); the small config's
        # EfficientNet stages return a dict of maps, so that task is skipped for it
        trunk = self.model.img_encoder.model
        self.image_encoder = trunk if self.model.img_encoder.is_resnet else None
        size = int(model.cfg.image_size)
        norm = model.cfg.normalisation
        self._transform = build_transform("afloc", train=False, image_size=size, normalisation=norm)
        self._prompt_cache: dict[tuple[str, ...], torch.Tensor] = {}
        self.info = AdapterInfo(
            method="afloc",
            model_name=model_name,
            image_size=size,
            normalisation=norm,
            zero_shot_protocol=ZS_PROTOCOLS[protocol],
            grounding=GROUNDING
            if exclude_border
            else GROUNDING.replace("NaN = excluded", "NOT applied (ours)"),
            checkpoint_sha256=checkpoint_sha256,
            excluded_border_px=border_margin(size) if exclude_border else 0,
            extra={
                "image_encoder": model.cfg.image_encoder,
                "paper_backbones": model.cfg.image_encoder == "resnet50",
                "preprocessing": "long side -> S (INTER_AREA) + zero pad, CenterCrop S, mean 0.5 / std 0.5",
                "prompt_cleaning": "official process_text (sentences cleaned, joined with a space)",
                "border_margin_px": border_margin(size) if exclude_border else 0,
            },
        )

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """(H, W) float32 [0, 1] -> (3, S, S): the official eval transform."""
        return self._transform(image)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> ImageEmbedding:
        img = self.model.encode_image(images.to(self.device))
        return ImageEmbedding(img.emb_g, img.emb_l, int(images.shape[-1]))

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """P prompts -> (P, D) report embeddings t_r (official prompt cleaning)."""
        outs = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer.prompts(list(texts[i : i + self.batch_size]))
            enc = {k: v.to(self.device) for k, v in enc.items()}
            txt = self.model.encode_text(
                enc["input_ids"],
                enc["attention_mask"],
                enc["piece_mask"],
                enc["bracket_mask"],
                enc["token_type_ids"],
            )
            outs.append(txt.report_emb)
        return torch.cat(outs)

    def similarity(self, image_emb: ImageEmbedding, text_emb: torch.Tensor) -> torch.Tensor:
        """(B, P) cosine of the global embeddings (the official `_get_similarity_from_embeddings`)."""
        return F.normalize(image_emb.global_emb, dim=-1) @ F.normalize(text_emb, dim=-1).t()

    def _class_vector(self, prompts: Sequence[str]) -> torch.Tensor:
        key = tuple(prompts)
        if key not in self._prompt_cache:
            if len(self._prompt_cache) >= 256:
                self._prompt_cache.clear()
            self._prompt_cache[key] = self.encode_texts(list(key)).mean(dim=0)
        return self._prompt_cache[key]

    def classify(self, image_emb: ImageEmbedding, classes: Sequence[ClassPrompts]) -> torch.Tensor:
        """(B, C) probability of the positive prompt (module docstring: "official" or "inferred")."""
        official = self.protocol == "official"
        v = image_emb.global_emb if official else F.normalize(image_emb.global_emb, dim=-1)

        def vec(prompts: Sequence[str]) -> torch.Tensor:
            t = self._class_vector(prompts)
            return t if official else F.normalize(t, dim=-1)

        cols = []
        for c in classes:
            pos = v @ vec(c.positive)
            if c.negative:
                neg = v @ vec(c.negative)
                cols.append(pos_neg_probability(pos, neg, 1.0 if official else self.model.cfg.temp3))
            else:
                cols.append(pos)
        return torch.stack(cols, dim=1)

    @torch.no_grad()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C4) pooled layer4 features (before global_embedder), for linear probes."""
        return self.model.encode_image(images.to(self.device)).feat_global

    @torch.no_grad()
    def localize(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """(B, P, S, S) official heatmaps (higher = more likely); the 14-px border is NaN (not evaluated)."""
        img = self.encode_images(images)
        sim = similarity_maps(img.local_emb, self.encode_texts(texts))
        out = grounding_heatmaps(sim, img.size, margin=None if self.exclude_border else 0)
        return out["heatmap"].cpu()


def load_adapter(pretrained_dir, device: str | torch.device | None = None, **kw) -> AFLocZeroShotAdapter:
    """Zero-shot adapter of a model trained with this package (its tokenizer saved beside the weights)."""
    from cxrvlp.afloc.model import load_pretrained
    from cxrvlp.core.method import saved_or

    model, doc = load_pretrained(pretrained_dir)
    tok = AFLocTokenizer.from_pretrained(saved_or(pretrained_dir, "tokenizer", model.cfg.tokenizer),
                                         model.cfg.text_max_length)  # fmt: skip
    return AFLocZeroShotAdapter(
        model, tok, model_name=doc.get("model_name", "afloc"), device=device,
        checkpoint_sha256=doc.get("weights_sha256"), **kw,
    )  # fmt: skip


def load_official_adapter(
    source, name: str | None = None, device: str | torch.device | None = None, tokenizer=None, **kw
) -> AFLocZeroShotAdapter:
    """Zero-shot adapter of the released checkpoint (tokenizer: Bio_ClinicalBERT unless given)."""
    import dataclasses

    from cxrvlp.afloc.official import load_official_checkpoint
    from cxrvlp.core.method import file_sha256

    model = load_official_checkpoint(source, name=name or "afloc-r50")
    tok = AFLocTokenizer.from_pretrained(tokenizer or model.cfg.tokenizer, model.cfg.text_max_length)
    model.cfg = dataclasses.replace(model.cfg, cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id,
                                    period_token_id=tok.period_token_id)  # fmt: skip
    adapter = AFLocZeroShotAdapter(model, tok, model_name="afloc-r50 (official)", device=device,
                                   checkpoint_sha256=file_sha256(source), **kw)  # fmt: skip
    info = getattr(model, "import_info", {})
    adapter.info.extra["import"] = {k: v for k, v in info.items() if k != "missing"}
    return adapter
