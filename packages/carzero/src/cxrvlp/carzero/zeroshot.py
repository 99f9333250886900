"""CARZero zero-shot adapter (spec §6) and grounding maps.

Classification (official, `dqn_shot_classification`): each prompt is cleaned as the training text (lowercase,
`\\w+` tokens, one-token sentences dropped) and tokenised to 97;
score(i, c) = (i2t[i, c] + t2i[c, i]) / 2, the
raw logit, no sigmoid / softmax, no negative prompts. The official loop scores one image at a time and
re-projects the prompt memory per image; here all (image, prompt) pairs are scored in one batched call (the
same numbers up to float rounding, checked on the parity fixture). The official code allows exactly one prompt
per class; with several prompts this adapter averages their scores (ours).

Grounding (ours: the official evaluation was never released, issue #3; the map itself follows the released
`get_grounding_map`): the i2t cross-attention of the prompt query over the image memory, averaged over the 4
heads and the decoder layers, the global slot dropped, reshaped to the patch grid (14 x 14) and upsampled by
nearest repetition (x16) to the input size. The pointing game takes its argmax.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from cxrvlp.carzero.model import Carzero
from cxrvlp.core.zeroshot import AdapterInfo, ClassPrompts

PROTOCOL = (
    "official: one cleaned 'There is <class>' prompt per class, score = (i2t + t2i^T) / 2 raw logit "
    "(batched over images, official loops per image; several prompts per class are averaged: ours)"
)
GROUNDING = (
    "ours (official grounding evaluation unreleased, CARZero issue #3; map as the released "
    "get_grounding_map): "
    "i2t cross-attention averaged over heads and layers, global slot dropped, patch grid, nearest upsample"
)


def grounding_maps(
    maps: Sequence[torch.Tensor], grid: tuple[int, int], size: int, has_global: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-layer i2t maps [(B, P, S)] -> ((B, P, h, w) layer mean, (B, P, size, size) nearest upsample)."""
    m = torch.stack(list(maps)).mean(dim=0)  # (B, P, S)
    if has_global:
        m = m[..., 1:]
    h, w = grid
    m = m.reshape(*m.shape[:-1], h, w)
    rep_h, rep_w = size // h, size // w
    if rep_h * h == size and rep_w * w == size:
        up = m.repeat_interleave(rep_h, dim=-2).repeat_interleave(rep_w, dim=-1)
    else:
        from cxrvlp.core.metrics.maps import upsample_map

        up = upsample_map(m, size, mode="nearest")
    return m, up


class CarzeroAdapter:
    """`cxrvlp.core.zeroshot.ZeroShotAdapter` around a CARZero model (ours or the imported release)."""

    def __init__(
        self,
        model: Carzero,
        tokenizer=None,
        device=None,
        model_name: str = "carzero",
        source=None,
        checkpoint_sha256: str | None = None,
        pair_chunk: int = 65536,
    ) -> None:
        from cxrvlp.core.data.transforms import build_transform
        from cxrvlp.core.text.tokenize import load_tokenizer

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        tok = tokenizer if tokenizer is not None else model.config.tokenizer
        self.tokenizer = load_tokenizer(tok) if isinstance(tok, (str, Path)) else tok
        self.model.set_tokenizer(self.tokenizer)
        cfg = model.config
        self.image_size = cfg.image_size
        self._transform = build_transform("carzero", train=False, image_size=cfg.image_size,
                                          normalisation=cfg.normalisation)  # fmt: skip
        self.pair_chunk = pair_chunk
        self.image_encoder = model.img_encoder
        self.info = AdapterInfo(
            method="carzero",
            model_name=model_name,
            image_size=cfg.image_size,
            normalisation=cfg.normalisation,
            zero_shot_protocol=PROTOCOL,
            grounding=GROUNDING,
            checkpoint_sha256=checkpoint_sha256,
            extra={
                "source": str(source) if source is not None else None,
                "text_max_length": cfg.text_max_length,
                "fusion_head": cfg.fusion_head,
                "fusion_memory": cfg.fusion_memory,
                "text_padding_mask": cfg.text_padding_mask,
            },
        )

    @classmethod
    def from_pretrained(cls, pretrained_dir, device=None) -> CarzeroAdapter:
        """An adapter around a folder written by our training (`final/`) or `save_model`."""
        from cxrvlp.carzero.model import load_pretrained

        model, tok = load_pretrained(pretrained_dir)
        return cls(model, tokenizer=tok, device=device, model_name=model.config.image_encoder,
                   source=pretrained_dir)  # fmt: skip

    # ------------------------------------------------------------------ protocol
    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """(H, W) float32 grey in [0, 1] -> (3, S, S): long side -> 256, zero pad, centre crop, CXR-MAE."""
        return self._transform(image)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        g, loc = self.model.encode_image(images.to(self.device))
        return {"global": g, "local": loc}

    def _tokens(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        from cxrvlp.core.text.cleaning import clean_prompt
        from cxrvlp.core.text.tokenize import tokenize

        cleaned = [clean_prompt(t) for t in texts]
        tok = tokenize(
            self.tokenizer, cleaned, max_length=self.model.config.text_max_length, padding="longest"
        )
        return {k: v.to(self.device) for k, v in tok.items()}

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        # Padding to the longest prompt instead of 97 is EXACT: BERT masks pads and the words are zero-padded
        # back to text_max_length slots.
        g, w, out = self.model.encode_text(**self._tokens(texts), return_all=True)
        return {"global": g, "words": w, "word_mask": out["word_mask"]}

    @torch.no_grad()
    def similarity(self, image_emb, text_emb) -> torch.Tensor:
        """(B, P) = (i2t + t2i^T) / 2 for every image-text pair (chunked over images to bound memory)."""
        n_txt = text_emb["global"].shape[0]
        step = max(1, self.pair_chunk // max(1, n_txt))
        rows = []
        for s in range(0, image_emb["global"].shape[0], step):
            g, loc = image_emb["global"][s : s + step], image_emb["local"][s : s + step]
            i2t = self.model.score_i2t(g, loc, text_emb["global"]).logits  # (b, P)
            t2i = self.model.score_t2i(g, text_emb["global"], text_emb["words"], text_emb["word_mask"]).logits
            rows.append((i2t + t2i.t()) / 2)
        return torch.cat(rows).float().cpu()

    def classify(self, image_emb, classes: Sequence[ClassPrompts]) -> torch.Tensor:
        texts = [p for c in classes for p in c.positive]
        sims = self.similarity(image_emb, self.encode_texts(texts))
        sizes = [len(c.positive) for c in classes]
        return torch.stack([s.mean(-1) for s in sims.split(sizes, dim=-1)], dim=-1)

    @torch.no_grad()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode_images(images)["global"].float().cpu()

    @torch.no_grad()
    def localize(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        emb = self.encode_images(images)
        txt = self.encode_texts(texts)
        r = self.model.score_i2t(emb["global"], emb["local"], txt["global"], need_weights=True)
        grid = _grid(self.model, emb["local"].shape[1])
        has_global = self.model.config.fusion_memory != "local"
        return grounding_maps(r.maps, grid, images.shape[-1], has_global)[1].float().cpu()


def _grid(model: Carzero, n: int) -> tuple[int, int]:
    grid = getattr(model.img_encoder, "grid", None)
    if grid is not None and grid[0] * grid[1] == n:
        return tuple(grid)
    side = int(round(n**0.5))
    return side, n // side


def load_adapter(pretrained_dir, device=None) -> CarzeroAdapter:
    """Zero-shot adapter around a model saved by our training (`final/` folder or a save_model folder)."""
    return CarzeroAdapter.from_pretrained(pretrained_dir, device=device)


def load_official_adapter(source, name: str | None = None, device=None, tokenizer=None) -> CarzeroAdapter:
    """Zero-shot adapter of the released checkpoint (tokenizer: Laihaoran/BioClinicalMPBERT or a folder)."""
    from cxrvlp.carzero.official import load_official_checkpoint
    from cxrvlp.core.method import file_sha256

    model = load_official_checkpoint(source, name=name)
    return CarzeroAdapter(model, tokenizer=tokenizer, device=device, model_name=name or "carzero-vit-b16",
                          source=source, checkpoint_sha256=file_sha256(source))  # fmt: skip
