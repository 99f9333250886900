"""MAVL zero-shot scoring (spec §6.1) and grounding maps (§6.2)."""

from __future__ import annotations

import torch


def score_feature(cls_logits: torch.Tensor) -> torch.Tensor:
    """'feature' mode (seen classes): presence-head softmax, class 1. (B, E, 2) -> (B, E)."""
    return cls_logits.softmax(-1)[..., 1]


def score_text(global_sim: torch.Tensor, references: tuple[int, ...] = (0, 1)) -> torch.Tensor:
    """'text' mode (unseen classes): cosines (B, E, A) -> (B, E).

    Per aspect and reference entity r (normal = 0, clear = 1): softmax([s_r, s_d])[1] = sigmoid(s_d - s_r), no
    temperature (the official code discards `temp`); averaged over the references, then over the aspects.
    """
    ref = global_sim[:, list(references)]  # (B, R, A)
    p = torch.sigmoid(global_sim.unsqueeze(1) - ref.unsqueeze(2))  # (B, R, E, A)
    return p.mean(1).mean(-1)


# ----------------------------------------------------------------------------------------------------------
# The adapter
# ----------------------------------------------------------------------------------------------------------
from collections.abc import Mapping, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from cxrvlp.core.text.entities import ENTITIES  # noqa: E402
from cxrvlp.core.zeroshot import AdapterInfo, ClassPrompts  # noqa: E402

GROUNDING_ASPECTS = (0, 6, 7, 8)  # description, patterns, shape, texture (official grounding test.py)


def official_test_set_f1_acc(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The official protocol, for comparison only: max-F1 threshold chosen ON THE TEST SET itself (oracle),
    ACC at that threshold (pred > thr). Our benchmark chooses thresholds on validation data instead."""
    from sklearn.metrics import precision_recall_curve

    p, r, thr = precision_recall_curve(labels, scores)
    f1 = 2 * p * r / np.clip(p + r, 1e-12, None)
    i = int(np.nanargmax(f1[:-1])) if len(thr) else 0
    t = float(thr[i]) if len(thr) else 0.5
    return {"f1": float(f1[i]), "acc": float(((scores > t) == (labels == 1)).mean()), "threshold": t}


class MavlAdapter:
    """Zero-shot classification (official 'feature' / 'text' modes) and grounding for a MAVL model.

    Classes are entity names (prompt set `mavl-entities`). A class among the model's 75 training entities is
    scored in 'feature' mode (presence-head softmax; official for seen classes), any other class is appended
    as new queries (its description + aspects through the same text encoder) and scored in 'text' mode
    (aspect cosine against 'normal' and 'clear'; official for unseen classes). `mode` forces one of them.
    MedKLIP (`medklip-r50`) has no global head: every class, seen or new, is scored in 'feature' mode (new
    names are new description queries through the same presence head).
    """

    def __init__(
        self,
        model,
        device=None,
        model_name: str = "mavl",
        mode: str = "auto",
        text_max_length: int | None = None,
        checkpoint_sha256: str | None = None,
        source: Any = None,
        batch_size: int = 32,
        knowledge: str = "ours",
    ) -> None:
        self.device = torch.device(device or "cpu")
        self.model = model.to(self.device).eval()
        self.cfg = model.config
        self.medklip = getattr(model, "medklip", False)
        if self.medklip and mode == "text":
            raise ValueError("MedKLIP has no global head: zero-shot mode 'text' needs MAVL (use 'feature')")
        self.mode = "feature" if self.medklip else mode
        self.batch_size = batch_size
        self.size = self.cfg.image_size
        self.text_max_length = text_max_length or self.cfg.text_max_length
        self._books: dict[str, torch.Tensor] = {}
        self.info = AdapterInfo(
            method="mavl",
            model_name=model_name,
            image_size=self.size,
            normalisation=self.cfg.normalisation,
            zero_shot_protocol=(
                "official: seen entities -> softmax of the presence head (feature mode); unseen -> "
                "sigmoid(cos(x_global, aspect query) - cos to 'normal'/'clear'), averaged (text mode)"
                if self.mode == "auto" else f"official {self.mode} mode for every class"
            ),
            grounding="official: decoder cross-attention, mean over layers and aspects "
            + ("[description]" if self.medklip else "[description, patterns, shape, texture]")
            + ", bilinear upsampling (align_corners=True), not normalised",
            checkpoint_sha256=checkpoint_sha256,
            extra={
                "knowledge_texts": knowledge if knowledge != "ours" else
                "ours (not the paper's): descriptions and aspect sentences written by this project",
                "text_encoder": self.cfg.text_encoder or "ours: hashed text embeddings (no encoder)",
                "text_max_length": self.text_max_length,
                "source": str(source) if source is not None else None,
            },
        )  # fmt: skip

    @classmethod
    def from_pretrained(cls, pretrained_dir: str | Path, device=None, **kw) -> MavlAdapter:
        """Adapter around a folder written by our training (books inside model.safetensors)."""
        from cxrvlp.core.training.checkpoint import load_pretrained_weights, read_pretrained_config
        from cxrvlp.mavl.model import Mavl, MavlModelConfig

        doc = read_pretrained_config(pretrained_dir)
        cfg = doc["config"]
        mcfg = MavlModelConfig(**cfg["model"]) if "model" in cfg else MavlModelConfig(**cfg)
        model = Mavl(mcfg)
        load_pretrained_weights(model, pretrained_dir)
        return cls(model, device=device, model_name=doc.get("model_name", "mavl"), **kw)

    @classmethod
    def from_official(
        cls,
        source,
        name: str | None = None,
        device=None,
        books=None,
        text_max_length: int = 64,
        descriptions_json=None,
        aspects_json=None,
        **kw,
    ) -> MavlAdapter:
        """Adapter around a released checkpoint. Books: given, or computed with the config's text encoder at
        the official zero-shot length (64 tokens) from the official JSONs when given, else our texts."""
        from cxrvlp.core.training.checkpoint import sha256_file
        from cxrvlp.mavl.books import compute_books
        from cxrvlp.mavl.official import load_official_checkpoint

        model = load_official_checkpoint(source, name=name, books=books)
        if books is None:
            b = compute_books(model.config.text_encoder, text_max_length, model.config.text_dim,
                              descriptions_json=descriptions_json, aspects_json=aspects_json)  # fmt: skip
            model.set_books(b["ana_book"], b["concept_book"])
        model.config.extra = {**model.config.extra, "descriptions_json": descriptions_json,
                              "aspects_json": aspects_json}  # fmt: skip
        sha = sha256_file(source) if isinstance(source, (str, Path)) and Path(source).is_file() else None
        knowledge = "official JSON files" if descriptions_json else "ours"
        return cls(model, device=device, model_name=name or "mavl-r50", text_max_length=text_max_length,
                   checkpoint_sha256=sha, source=source, knowledge=knowledge, **kw)  # fmt: skip

    # --- images ------------------------------------------------------------------------------------------
    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """(H, W) float [0, 1] -> (3, S, S): official eval path, PIL RGB, Resize([S, S]) bilinear."""
        from cxrvlp.core.data.transforms import NORMALISATIONS
        from PIL import Image

        img = np.asarray(image, dtype=np.float32)
        pil = Image.fromarray(np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)).convert("RGB")
        pil = pil.resize((self.size, self.size), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0).permute(2, 0, 1)
        mean, std = NORMALISATIONS[self.cfg.normalisation]
        return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, S, S) -> {"x_global" (B, D), "memory" (B, D, h, w), "pooled" (B, C)}."""
        xs, mems, pooled = [], [], []
        for b in images.split(self.batch_size):
            f, x, m = self.model.encode_image(b.to(self.device))
            xs.append(x)
            mems.append(m)
            pooled.append(f.mean((2, 3)))
        x_global = None if xs[0] is None else torch.cat(xs)  # None: MedKLIP
        return {"x_global": x_global, "memory": torch.cat(mems), "pooled": torch.cat(pooled)}

    # --- texts (entities) --------------------------------------------------------------------------------
    def _entity_book(self, entities: Sequence[str]) -> torch.Tensor:
        """(len * 9, T) query rows: the model's own for training entities, computed ones for new names."""
        from cxrvlp.mavl.books import books_for

        a = self.model.n_aspects
        trained = self.model.concept_book.view(-1, a, self.model.concept_book.shape[-1])
        new = [e for e in entities if e not in ENTITIES and e not in self._books]
        if new:
            cfg = {**self.cfg.to_dict(), "text_max_length": self.text_max_length}
            book = books_for(cfg, entities=new)["concept_book"]
            b = book.view(len(new), -1, book.shape[-1])[:, :a]  # MedKLIP (a = 1): the descriptions
            self._books.update({e: b[i].to(self.device) for i, e in enumerate(new)})
        rows = [trained[ENTITIES.index(e)] if e in ENTITIES else self._books[e] for e in entities]
        return torch.stack(rows).reshape(-1, trained.shape[-1])

    def _query_set(self, names: Sequence[str]) -> list[str]:
        """Official book: the 75 training entities, then the unseen names appended (in first-seen order)."""
        extra = [n for n in dict.fromkeys(names) if n not in ENTITIES]
        return list(ENTITIES) + extra

    def encode_texts(self, texts: Sequence[str]) -> dict[str, Any]:
        entities = self._query_set(texts)
        return {"entities": entities, "book": self._entity_book(entities), "texts": list(texts)}

    @torch.no_grad()
    def _decode(self, image_emb, book: torch.Tensor, need_maps: bool = False):
        outs = []
        n = image_emb["memory"].shape[0]
        x_global = image_emb["x_global"]
        for i in range(0, n, self.batch_size):
            sl = slice(i, i + self.batch_size)
            x = None if x_global is None else x_global[sl]
            outs.append(self.model.decode(x, image_emb["memory"][sl], book, need_maps))
        return outs

    def similarity(self, image_emb, text_emb) -> torch.Tensor:
        """(B, P): ours (the paper has no retrieval): mean over aspects of cos(x_global, aspect query)."""
        outs = self._decode(image_emb, text_emb["book"])
        if self.medklip:  # no global head: the presence probability stands for the similarity (ours)
            sim = torch.cat([score_feature(o.cls_logits) for o in outs])[..., None]  # (B, E, 1)
        else:
            sim = torch.cat([o.global_sim for o in outs])  # (B, E, A)
        idx = [text_emb["entities"].index(t) for t in text_emb["texts"]]
        return sim[:, idx].mean(-1).float()

    def classify(self, image_emb, classes: Sequence[ClassPrompts]) -> torch.Tensor:
        """(B, C) scores: feature mode for seen entities, text mode for unseen ones (or `mode` for all)."""
        names = [c.positive[0] if c.positive else c.name for c in classes]
        entities = self._query_set(names)
        outs = self._decode(image_emb, self._entity_book(entities))
        feat = torch.cat([score_feature(o.cls_logits) for o in outs])  # (B, E)
        text = feat if self.medklip else torch.cat([score_text(o.global_sim) for o in outs])  # (B, E)
        cols = []
        for n in names:
            j = entities.index(n)
            use_text = self.mode == "text" or (self.mode == "auto" and n not in ENTITIES)
            cols.append(text[:, j] if use_text else feat[:, j])
        return torch.stack(cols, 1).float()

    @torch.no_grad()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C) mean-pooled trunk features (ResNet layer3 for the paper model) for linear probing."""
        return self.encode_images(images)["pooled"].float()

    @torch.no_grad()
    def localize(self, images: torch.Tensor, texts: Sequence[str], mode: str = "avg") -> torch.Tensor:
        """(B, 3, S, S), P entity names -> (B, P, S, S) official grounding maps (not normalised)."""
        from cxrvlp.mavl.model import heatmaps

        emb = self.encode_images(images)
        aspects = tuple(k for k in GROUNDING_ASPECTS if k < self.model.n_aspects)  # MedKLIP: (0,)
        entities = self._query_set(texts)
        outs = self._decode(emb, self._entity_book(entities), need_maps=True)
        heat = torch.cat([heatmaps(o.attention_maps, self.model.n_aspects, aspects, mode) for o in outs])
        side = int(round(heat.shape[-1] ** 0.5))
        idx = [entities.index(t) for t in texts]
        maps = heat[:, idx].reshape(heat.shape[0], len(idx), side, side)
        return F.interpolate(maps, size=tuple(images.shape[-2:]), mode="bilinear", align_corners=True).float()


def as_class_prompts(entities: Mapping[str, str] | Sequence[str]) -> list[ClassPrompts]:
    """ClassPrompts for entity names (what the `mavl-entities` prompt set produces)."""
    items = entities.items() if isinstance(entities, Mapping) else ((e, e) for e in entities)
    return [ClassPrompts(name, [entity]) for name, entity in items]


def load_adapter(pretrained_dir: str | Path, device=None) -> MavlAdapter:
    """Zero-shot adapter around a model saved by our training (its books travel with the weights)."""
    return MavlAdapter.from_pretrained(pretrained_dir, device=device)


def load_official_adapter(source, name: str | None = None, device=None, books=None, **kw: Any) -> MavlAdapter:
    """Zero-shot adapter around a released checkpoint; `books` = CLS books (file/dict) or None to compute
    them with the config's text encoder (Bio_ClinicalBERT: hub or local folder)."""
    return MavlAdapter.from_official(source, name=name, device=device, books=books, **kw)
