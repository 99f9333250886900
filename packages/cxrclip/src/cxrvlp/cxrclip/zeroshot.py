"""CXR-CLIP zero-shot adapter with the official evaluator's protocols (`cxrclip/evaluator.py`, spec §6).

* Binary (VinDr, SIIM): prompts `"No " + c` and `c`; softmax over the two plain cosines (no temperature,
  P17); score = p(positive). RSNA uses the fixed BioViL prompts with the same rule.
* CheXpert 5x200: per class the mean cosine over its GLoRIA-style prompt ensemble (duplicates kept).
* Retrieval image->text: candidates = unique report strings; rank of the image's own text; R@1/5/10, MeanRank.
All scores are plain cosine similarities of L2-normalised projected embeddings (no logit scale).
Localisation (patch-text cosine maps) is ours, not from the paper: the official code has none.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from cxrvlp.core.data.transforms import build_transform
from cxrvlp.core.text.prompts import chexpert_5x200_prompts  # noqa: F401  (the official 5x200 protocol)
from cxrvlp.core.zeroshot import AdapterInfo, ClassPrompts
from cxrvlp.cxrclip.config import CxrClipModelConfig
from cxrvlp.cxrclip.model import CxrClip

BIOVIL_PNEUMONIA = ClassPrompts("Pneumonia", ["Findings suggesting pneumonia."], ["No evidence of pneumonia"])


def binary_prompts(class_name: str) -> ClassPrompts:
    """The official VinDr/SIIM prompts: positive = the class string, negative = 'No ' + class string."""
    return ClassPrompts(class_name, [class_name], ["No " + class_name])


def score_binary(adapter: CxrClipAdapter, image_emb: torch.Tensor, cp: ClassPrompts):
    """(B, D) -> cosines (B, 2) to [negative, positive] and their softmax (no temperature)."""
    neg = adapter.encode_prompts(cp.negative).mean(0)  # one prompt each officially
    pos = adapter.encode_prompts(cp.positive).mean(0)
    cos = image_emb @ torch.stack([neg, pos]).t()  # (B, 2)
    return cos, cos.softmax(dim=-1)


def score_prompt_ensemble(adapter: CxrClipAdapter, image_emb: torch.Tensor, classes: Sequence[ClassPrompts]):
    """(B, D) -> (B, C) mean cosine over each class's prompts (one text batch for all classes)."""
    texts = [p for c in classes for p in c.positive]
    sims = adapter.similarity(image_emb, adapter.encode_prompts(texts))  # (B, P)
    sizes = [len(c.positive) for c in classes]
    return torch.stack([s.mean(-1) for s in sims.split(sizes, dim=-1)], dim=-1)


def retrieval_image_text(image_emb: torch.Tensor, text_emb: torch.Tensor, texts: Sequence[str]) -> dict:
    """Official image->text retrieval: unique texts (first occurrence order), R@1/5/10 and MeanRank.

    `text_emb` holds one row per unique text in first-occurrence order (see `unique_texts`). The rank is
    1 + the number of candidates scored strictly higher than the true text (the official argsort gives the
    same unless similarities tie exactly).
    """
    uniq, target = unique_texts(texts)
    if text_emb.shape[0] != len(uniq):
        raise ValueError(f"text_emb has {text_emb.shape[0]} rows for {len(uniq)} unique texts")
    sims = image_emb @ text_emb.t()  # (N, U) cosine
    gt = sims.gather(1, target[:, None])  # (N, 1)
    rank = 1 + (sims > gt).sum(-1)  # (N,)
    out = {f"Recall@{k}": float((rank <= k).float().mean()) for k in (1, 5, 10)}
    out["MeanRank"] = float(rank.float().mean())
    return out


def unique_texts(texts: Sequence[str]) -> tuple[list[str], torch.Tensor]:
    """Unique strings in first-occurrence order and each input's index among them."""
    index: dict[str, int] = {}
    target = [index.setdefault(t, len(index)) for t in texts]
    return list(index), torch.tensor(target, dtype=torch.long)


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 -> float32; float32 and float64 (the parity twin) unchanged."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class CxrClipAdapter:
    """`cxrvlp.core.zeroshot.ZeroShotAdapter` for CXR-CLIP models (ours or imported official weights)."""

    def __init__(
        self,
        model: CxrClip,
        tokenizer=None,
        device: str | torch.device | None = None,
        model_name: str = "cxrclip",
        source: str | Path | None = None,
        batch_size: int = 128,
        checkpoint_sha256: str | None = None,
    ) -> None:
        cfg: CxrClipModelConfig = model.config
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        if tokenizer is None or isinstance(tokenizer, (str, Path)):
            from cxrvlp.core.text.tokenize import load_tokenizer

            tokenizer = load_tokenizer(tokenizer or cfg.tokenizer)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        # frozen-encoder tasks (segmentation): forward(images) -> ImageEncoderOutput
        self.image_encoder = self.model.image_encoder
        # classify() runs once per image batch with the same prompts: encode them once.
        self._prompt_cache: dict[tuple[str, ...], torch.Tensor] = {}
        self.size = cfg.image_size
        self._transform = build_transform(
            "cxrclip-r50", train=False, image_size=self.size, normalisation=cfg.normalisation
        )
        self.info = AdapterInfo(
            method="cxrclip",
            model_name=model_name,
            image_size=cfg.image_size,
            normalisation=cfg.normalisation,
            zero_shot_protocol="official: softmax(cos(c), cos('No ' + c)) without temperature; "
            "prompt ensemble mean cosine (CheXpert 5x200); retrieval over unique texts",
            grounding="ours (not from the paper): cosine of projected patch features "
            + ("(ResNet layer4)" if cfg.image_encoder == "resnet50" else "(encoder tokens)"),
            checkpoint_sha256=checkpoint_sha256,
            extra={"source": str(source) if source else None, "text_pooling": "eos ([SEP])"},
        )

    @classmethod
    def from_pretrained(cls, pretrained_dir: str | Path, device=None) -> CxrClipAdapter:
        """Adapter around a folder written by our training (`save_pretrained`; tokenizer/ inside it)."""
        from cxrvlp.cxrclip.model import load_pretrained

        model, tok_dir = load_pretrained(pretrained_dir)
        return cls(model, tokenizer=tok_dir, device=device, model_name=str(Path(pretrained_dir).name))

    # --- images ------------------------------------------------------------------------------------------
    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """(H, W) float [0, 1] -> (3, S, S): the official test path (core's cxrclip eval preset: PIL
        Resize(S) on the shorter side, CenterCrop S, the model's normalisation)."""
        return self._transform(np.asarray(image, dtype=np.float32))

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, D) unit-norm image embeddings (batched)."""
        parts = [self.model.encode_image(b.to(self.device)) for b in images.split(self.batch_size)]
        return _at_least_float32(torch.cat(parts))

    @torch.no_grad()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, 2048 | 768) frozen features before projection (linear probing, §6.5)."""
        return torch.cat(
            [self.model.image_features(b.to(self.device)) for b in images.split(self.batch_size)]
        )

    # --- texts -------------------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Evaluation tokenisation: padding to the longest, truncation at text_max_length."""
        from cxrvlp.core.text.tokenize import tokenize

        tok = tokenize(self.tokenizer, list(texts), self.model.config.text_max_length, padding="longest")
        return {k: v.to(self.device) for k, v in tok.items()}

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """P strings -> (P, D) unit-norm text embeddings (batched, each batch padded to its longest)."""
        texts = list(texts)
        parts = [
            self.model.encode_text(**self.tokenize(texts[i : i + self.batch_size]))
            for i in range(0, len(texts), self.batch_size)
        ]
        return _at_least_float32(torch.cat(parts))

    PROMPT_CACHE_SIZE = 256  # prompt lists kept (a benchmark uses a few dozen)

    def encode_prompts(self, texts: Sequence[str]) -> torch.Tensor:
        """`encode_texts`, memoised per tuple of texts (exact: the same batches are encoded the same way).

        The cache assumes frozen weights (evaluation): call `clear_prompt_cache()` after changing them."""
        key = tuple(texts)
        emb = self._prompt_cache.get(key)
        if emb is None:
            if len(self._prompt_cache) >= self.PROMPT_CACHE_SIZE:
                self._prompt_cache.clear()
            emb = self._prompt_cache[key] = self.encode_texts(key)
        return emb

    def clear_prompt_cache(self) -> None:
        """Forget the memoised prompt embeddings."""
        self._prompt_cache.clear()

    def similarity(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """Plain cosine (B, P) (embeddings are unit-norm; no logit scale at test time)."""
        return image_emb.to(text_emb.device) @ text_emb.t()

    def classify(self, image_emb: torch.Tensor, classes: Sequence[ClassPrompts]) -> torch.Tensor:
        """(B, C): p(positive) of the binary softmax where a class has negatives, else mean prompt cosine."""
        if all(len(c.negative) > 0 for c in classes):
            return torch.stack([score_binary(self, image_emb, c)[1][:, 1] for c in classes], dim=-1)
        if any(len(c.negative) > 0 for c in classes):
            raise ValueError("classify: either every class has negative prompts (binary) or none (ensemble)")
        return score_prompt_ensemble(self, image_emb, classes)

    # --- localisation (ours) -----------------------------------------------------------------------------
    @torch.no_grad()
    def localize(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor | None:
        """(B, 3, S, S), P prompts -> (B, P, S, S) cosine maps of projected patch features (ours)."""
        images = images.to(self.device)
        out = self.model.image_encoder(images)
        if "layer4" in out.maps:
            fmap = out.maps["layer4"]  # (B, C, h, w)
            h, w = fmap.shape[-2:]
            tokens = fmap.flatten(2).transpose(1, 2)  # (B, h*w, C)
        elif out.local_feat is not None and out.grid_size is not None:
            tokens, (h, w) = out.local_feat, out.grid_size
        else:
            return None
        patches = F.normalize(self.model.image_projection(tokens), dim=-1)  # (B, N, D)
        text_emb = self.encode_texts(texts)  # (P, D)
        sims = torch.einsum("bnd,pd->bpn", patches, text_emb).reshape(images.shape[0], -1, h, w)
        return F.interpolate(sims, size=images.shape[-2:], mode="bilinear", align_corners=False)


def load_adapter(pretrained_dir: str | Path, device=None) -> CxrClipAdapter:
    """Zero-shot adapter around a model saved by our training (`final/` folder or any save_pretrained dir)."""
    return CxrClipAdapter.from_pretrained(pretrained_dir, device=device)


def load_official_adapter(source, name: str | None = None, device=None, tokenizer=None) -> CxrClipAdapter:
    """Zero-shot adapter around a released checkpoint (Bio_ClinicalBERT tokenizer: hub or folder)."""
    from cxrvlp.core.method import file_sha256
    from cxrvlp.cxrclip.official import load_official_checkpoint

    model = load_official_checkpoint(source, name=name)
    return CxrClipAdapter(model, tokenizer=tokenizer, device=device, model_name=name or "official",
                          source=source, checkpoint_sha256=file_sha256(source))  # fmt: skip
