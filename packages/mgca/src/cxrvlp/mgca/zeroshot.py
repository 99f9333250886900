"""Zero-shot adapter for MGCA. The paper and code have NO zero-shot, retrieval or grounding protocol; the
scoring here is ours (not from the paper) and labelled so in `AdapterInfo`:

* classify: cosine between the projected, L2-normalised global image embedding v and the L2-normalised mean of
  each class's prompt embeddings t; with negative prompts, softmax over (pos, neg) cosines / tau_ita (0.07).
* localize: cosine between projected patch embeddings P and the prompt's word embeddings W (real words only,
  not [CLS]/[SEP]), averaged over words, on the patch grid, bilinearly upsampled to the input size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from cxrvlp.core.zeroshot import AdapterInfo, ClassPrompts
from cxrvlp.mgca.data import MGCATokenizer
from cxrvlp.mgca.model import MGCA
from torch import nn

ZS_PROTOCOL = (
    "ours (not from the paper): cosine of projected global embeddings, mean of the class's prompt "
    "embeddings; softmax(pos, neg) / 0.07 when negative prompts are given"
)
GROUNDING = "ours (not from the paper): mean over the prompt's words of patch-word cosine, upsampled"


@dataclass
class ImageEmbedding:
    """What `encode_images` returns."""

    global_emb: torch.Tensor  # (B, E) unit norm
    patch_emb: torch.Tensor  # (B, N, E) unit norm
    grid: tuple[int, int]
    size: tuple[int, int]


@dataclass
class TextEmbedding:
    """What `encode_texts` returns."""

    global_emb: torch.Tensor  # (P, E) unit norm
    word_emb: torch.Tensor  # (P, S, E) unit norm
    word_mask: torch.Tensor  # (P, S) True for real words (not [SEP], not padding)


class MGCAZeroShotAdapter:
    """`cxrvlp.core.zeroshot.ZeroShotAdapter` over an MGCA model (ours or an imported release)."""

    def __init__(
        self,
        model: MGCA,
        tokenizer: MGCATokenizer,
        model_name: str = "mgca",
        device: str | torch.device | None = None,
        checkpoint_sha256: str | None = None,
        batch_size: int = 64,
    ) -> None:
        from cxrvlp.core.data.transforms import build_transform

        self.device = torch.device(device or "cpu")
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        # frozen-encoder tasks (segmentation): the img_encoder_q backbone, forward(x) -> ImageEncoderOutput
        self.image_encoder = self.model.image_encoder
        # classify() is called once per image batch with the same prompts: class vectors are computed once.
        self._prompt_cache: dict[tuple[str, ...], torch.Tensor] = {}
        size = model.cfg.image_size or (int(model.cfg.vit.get("img_size", 224)) if model.cfg.is_vit else 224)
        norm = model.cfg.normalisation  # as training used it (config.json round-trips it)
        self._transform = build_transform("mgca", train=False, image_size=size, normalisation=norm)
        self.info = AdapterInfo(
            method="mgca",
            model_name=model_name,
            image_size=size,
            normalisation=norm,
            zero_shot_protocol=ZS_PROTOCOL,
            grounding=GROUNDING,
            checkpoint_sha256=checkpoint_sha256,
            extra={
                "image_encoder": model.cfg.image_encoder,
                "fix_position_ids": model.cfg.fix_position_ids,
                # False for the small config (EfficientNet-Lite0 + MiniLM-L6): not the paper's backbones
                "paper_backbones": model.cfg.image_encoder != "efficientnet-lite0",
                "preprocessing": "long side -> 256/224*S (INTER_AREA) + zero pad, CenterCrop S",
            },
        )

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """(H, W) float32 [0, 1] -> (3, S, S): official eval transform, normalised as in training."""
        return self._transform(image)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> ImageEmbedding:
        """(B, 3, S, S) -> unit global and patch embeddings."""
        img = self.model.encode_image(images.to(self.device), need_attention=False)
        return ImageEmbedding(img.img_emb, img.patch_emb, img.grid_size, tuple(images.shape[-2:]))

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> TextEmbedding:
        """P prompts -> unit global and word embeddings (cleaned exactly as the training captions)."""
        from cxrvlp.mgca.data import clean_text

        outs = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer([clean_text(t) for t in texts[i : i + self.batch_size]])
            enc = {k: v.to(self.device) for k, v in enc.items()}
            txt = self.model.encode_text(enc["input_ids"], enc["attention_mask"], enc["piece_mask"])
            sep = self._sep_slots(txt)
            outs.append((txt.report_emb, txt.word_emb, ~txt.word_pad_mask & ~sep))
        return TextEmbedding(*(torch.cat(x) for x in zip(*outs)))

    @staticmethod
    def _sep_slots(txt) -> torch.Tensor:
        # the last real word slot is [SEP] when the prompt was not truncated
        n_real = (~txt.word_pad_mask).sum(dim=1)  # (P,)
        slots = torch.arange(txt.word_pad_mask.shape[1], device=n_real.device)
        return slots[None, :] == (n_real - 1)[:, None]

    def similarity(self, image_emb: ImageEmbedding, text_emb: TextEmbedding) -> torch.Tensor:
        """(B, P) cosine of global embeddings."""
        return image_emb.global_emb @ text_emb.global_emb.t()

    PROMPT_CACHE_SIZE = 256  # prompt lists kept (a benchmark uses a few dozen)

    def _class_vectors(self, prompts: Sequence[str]) -> torch.Tensor:
        """(E,) unit mean of the prompts' global embeddings, memoised per tuple of prompts (exact)."""
        key = tuple(prompts)
        vec = self._prompt_cache.get(key)
        if vec is None:
            if len(self._prompt_cache) >= self.PROMPT_CACHE_SIZE:
                self._prompt_cache.clear()
            emb = self.encode_texts(list(key)).global_emb  # (P, E)
            vec = self._prompt_cache[key] = F.normalize(emb.mean(dim=0), dim=-1)
        return vec

    def clear_prompt_cache(self) -> None:
        """Forget the memoised class vectors (the cache assumes frozen weights, as in evaluation)."""
        self._prompt_cache.clear()

    def classify(self, image_emb: ImageEmbedding, classes: Sequence[ClassPrompts]) -> torch.Tensor:
        """(B, C) scores: cosine to the mean positive prompt, or softmax(pos, neg) with negatives."""
        v = image_emb.global_emb
        tau = self.model.cfg.softmax_temperature
        cols = []
        for c in classes:
            pos = v @ self._class_vectors(c.positive)  # (B,)
            if c.negative:
                neg = v @ self._class_vectors(c.negative)
                cols.append(torch.softmax(torch.stack([pos, neg], dim=1) / tau, dim=1)[:, 0])
            else:
                cols.append(pos)
        return torch.stack(cols, dim=1)

    @torch.no_grad()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, D) backbone features before projection (the official linear-probe input)."""
        return self.model.encode_image(images.to(self.device), need_attention=False).img_feat

    @torch.no_grad()
    def localize(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """(B, P, S, S) maps: mean over the prompt's words of the patch-word cosine (higher = likelier)."""
        img = self.encode_images(images)
        txt = self.encode_texts(texts)
        sim = torch.einsum("bne,pwe->bpnw", img.patch_emb, txt.word_emb)  # (B, P, N, S)
        m = txt.word_mask.to(sim.dtype)[None, :, None, :]  # (1, P, 1, S)
        maps = (sim * m).sum(-1) / m.sum(-1).clamp_min(1.0)  # (B, P, N)
        h, w = img.grid
        maps = maps.view(maps.shape[0], maps.shape[1], h, w)
        return F.interpolate(maps, size=img.size, mode="bilinear", align_corners=False)


def load_adapter(pretrained_dir, device: str | torch.device | None = None) -> MGCAZeroShotAdapter:
    """Zero-shot adapter of a model trained with this package (its tokenizer saved beside the weights)."""
    from cxrvlp.core.method import saved_or
    from cxrvlp.mgca.model import load_pretrained

    model, doc = load_pretrained(pretrained_dir)
    tok_source = saved_or(pretrained_dir, "tokenizer", model.cfg.tokenizer)
    tok = MGCATokenizer.from_pretrained(tok_source, model.cfg.max_words)
    return MGCAZeroShotAdapter(model, tok, model_name=doc.get("model_name", "mgca"), device=device,
                               checkpoint_sha256=doc.get("weights_sha256"))  # fmt: skip


def load_official_adapter(
    source, name: str | None = None, device: str | torch.device | None = None, tokenizer=None
) -> MGCAZeroShotAdapter:
    """Zero-shot adapter of a released checkpoint (tokenizer: Bio_ClinicalBERT unless given)."""
    import dataclasses

    from cxrvlp.core.method import file_sha256
    from cxrvlp.mgca.official import load_official_checkpoint

    model = load_official_checkpoint(source, name=name)
    tok = MGCATokenizer.from_pretrained(tokenizer or model.cfg.tokenizer, model.cfg.max_words)
    if tok.sep_token_id != model.cfg.sep_token_id:
        model.cfg = dataclasses.replace(model.cfg, sep_token_id=tok.sep_token_id)
    label = name or ("mgca-vit-b16" if model.cfg.is_vit else "mgca-r50")
    return MGCAZeroShotAdapter(model, tok, model_name=f"{label} (official)", device=device,
                               checkpoint_sha256=file_sha256(source))  # fmt: skip


# ----------------------------------------------------------------------------------------------------------
# MGCA transfer heads over a frozen pretrained image encoder (spec §6.2, §6.4).
#
# * `LinearProbe`: frozen backbone in eval mode at every step, features = img_feat before projection (ViT
# [CLS]
#   after the final norm / ResNet pooled layer4 with the 299 upsample), Flatten -> Dropout(0) -> Linear(D, C).
# * `UNetSegmenter` (ResNet-50): segmentation-models-pytorch `Unet("resnet50")` whose encoder takes the MGCA
#   trunk weights (torchvision names), frozen; decoder trained.
# * `SETRSegmenter` (ViT): the frozen MGCA ViT's patch tokens -> Linear(D, D) -> (B, D, h, w) -> 4 x [Conv3x3
# ->
#   BN -> ReLU -> bilinear x2] with [512, 256, 128, 64] channels -> Conv3x3 -> 1 channel.
# * `mixed_seg_loss`: 10 * focal(gamma 2, mean) - log(soft Dice over the whole batch), the official MixedLoss.
# ----------------------------------------------------------------------------------------------------------
class LinearProbe(nn.Module):
    """Frozen MGCA image encoder + one Linear layer (the official SSLEvaluator with dropout 0)."""

    def __init__(self, model: MGCA, num_classes: int) -> None:
        super().__init__()
        self.backbone = model.image_encoder
        self.is_vit = model.cfg.is_vit
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.0), nn.Linear(model.feature_dim, num_classes))

    def train(self, mode: bool = True) -> LinearProbe:
        super().train(mode)
        self.backbone.eval()  # official: frozen backbone put in eval mode at every train batch
        return self

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, 224, 224) -> (B, D) frozen features."""
        with torch.no_grad():
            return self.backbone(images).global_feat

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))  # (B, C) logits


class UNetSegmenter(nn.Module):
    """smp U-Net on the frozen MGCA ResNet-50 trunk (224 input, no 299 upsample, as the official)."""

    def __init__(self, model: MGCA, classes: int = 1) -> None:
        super().__init__()
        import segmentation_models_pytorch as smp

        if model.cfg.is_vit:
            raise ValueError("UNetSegmenter needs the ResNet-50 variant; use SETRSegmenter for ViT")
        self.net = smp.Unet("resnet50", encoder_weights=None, activation=None, classes=classes)
        trunk = {k: v for k, v in model.image_encoder.state_dict().items() if not k.startswith("fc.")}
        own = {k for k in self.net.encoder.state_dict() if not k.startswith("fc.")}
        if own != set(trunk):  # smp's ResNet encoder uses torchvision names: a mismatch is a bug, say which
            raise RuntimeError(f"U-Net encoder keys differ from the trunk: {sorted(own ^ set(trunk))[:10]}")
        self.net.encoder.load_state_dict(trunk, strict=False)
        for p in self.net.encoder.parameters():
            p.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)  # (B, classes, H, W) logits


class SETRSegmenter(nn.Module):
    """SETR-style decoder over the frozen MGCA ViT patch tokens."""

    def __init__(self, model: MGCA, classes: int = 1, channels: Sequence[int] = (512, 256, 128, 64)) -> None:
        super().__init__()
        if not model.cfg.is_vit:
            raise ValueError("SETRSegmenter needs the ViT variant; use UNetSegmenter for ResNet-50")
        self.backbone = model.image_encoder
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        d = self.backbone.out_dim
        self.proj = nn.Linear(d, d)
        blocks, c_in = [], d
        for c in channels:
            blocks += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                       nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)]  # fmt: skip
            c_in = c
        self.decoder = nn.Sequential(*blocks, nn.Conv2d(c_in, classes, 3, padding=1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.backbone(images)
        h, w = out.grid_size
        x = self.proj(out.local_feat)  # (B, N, D)
        x = x.transpose(1, 2).reshape(x.shape[0], -1, h, w)  # (B, D, h, w)
        return self.decoder(x)  # (B, classes, 16h, 16w)


def mixed_seg_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """10 * focal loss (mean) - log(soft Dice with +1 smoothing over the whole batch)."""
    target = target.float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    focal = (torch.exp(gamma * F.logsigmoid(-logits * (2 * target - 1))) * bce).mean()  # official weighting
    p = torch.sigmoid(logits)
    dice = (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    return 10 * focal - torch.log(dice)
