"""Train CXR-CLIP: `accelerate launch -m cxrvlp.cxrclip.train CONFIG.yaml [key=value ...]` (or `python -m`).

Packaged configs (`cxrvlp/cxrclip/configs/`): `cxrclip_r50.yaml`, `cxrclip_swint.yaml` (the paper's recipe:
AdamW lr 5e-5 wd 1e-4, global batch 128, warm-up 1 epoch + cosine to 0 at 15 epochs, fp16 AMP) and
`tiny.yaml` (CPU demo on the synthetic MIMIC mirror). A config name without a path is looked up there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from cxrvlp.core.method import recipe_trainer, training_main
from cxrvlp.core.training import TaskModule
from cxrvlp.core.training.loop import process_state
from cxrvlp.core.training.task import MethodTask, batch_bookkeeping
from cxrvlp.cxrclip.config import CxrClipTrainConfig
from cxrvlp.cxrclip.data import build_train_dataset
from cxrvlp.cxrclip.loss import CxrClipLoss
from cxrvlp.cxrclip.model import build_model, trim_padding


class CxrClipTrainModule(TaskModule):
    """CXR-CLIP + its loss as one module (what DDP wraps). Terms are weighted so they sum to the total."""

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """`i2t_loss + t2i_loss + i2i_loss + t2t_loss` = loss_ratio x the official contrastive loss."""
        out = self.model(batch["images"], batch["image_views"], batch["text_tokens"], batch["text_tokens2"])
        t = self.loss(
            out["image_embeddings"],
            out["image_view_embeddings"],
            out["text_embeddings"],
            out["text_embeddings2"],
            out["logit_scale"],
            is_train=self.training,
        )
        r, lo = self.loss.loss_ratio, self.loss
        return {
            "i2t_loss": r * 0.5 * t["loss_i2t"],
            "t2i_loss": r * 0.5 * t["loss_t2i"],
            "i2i_loss": r * lo.i2i_weight * t["loss_i2i"],
            "t2t_loss": r * lo.t2t_weight * t["loss_t2t"],
            "loss_contrastive": t["loss_contrastive"],
            "logit_scale": out["logit_scale"],
        }


class CxrClipTask(MethodTask):
    """`cxrvlp.core.training.TrainingTask` for CXR-CLIP."""

    in_batch_negatives = "gathered"  # keys all-gathered over the processes (loss.py)

    method = "cxrclip"

    def make_train_dataset(self):
        return build_train_dataset(self.cfg.data, train=True, root=self.data_root)

    def _build_tokenizer(self):
        from cxrvlp.core.text.run_tokenizer import build_run_tokenizer, save_run_tokenizer
        from cxrvlp.core.text.tokenize import load_tokenizer

        mcfg = self.cfg.model
        if mcfg.tokenizer is not None:
            return load_tokenizer(mcfg.tokenizer)
        state = process_state(self.cfg)

        def texts() -> list[str]:
            ds = self.build_train_dataset()
            return ds.texts() if hasattr(ds, "texts") else [t for d in ds.datasets for t in d.texts()]

        # core's run-tokenizer rule (reused on resume, else built on rank 0 and broadcast); build_model runs
        # after the run folder's checks, so it is saved there at once (resume reads it back)
        tok, fresh = build_run_tokenizer(
            texts, self.cfg.output_dir, self.cfg.tokenizer_vocab_size, bool(self.cfg.resume), state
        )
        if fresh and state.is_main_process:
            save_run_tokenizer(tok, self.cfg.output_dir)
        mcfg.tokenizer = str(Path(self.cfg.output_dir) / "tokenizer")
        mcfg.text_config = {**mcfg.text_config, "vocab_size": len(tok)}
        return tok

    def build_model(self) -> CxrClipTrainModule:
        self.tokenizer = self._build_tokenizer()
        mcfg = self.cfg.model
        on_cpu = not torch.cuda.is_available()
        if on_cpu and not self.cfg.sync_batchnorm_on_cpu and mcfg.image_encoder_kwargs.get("sync_batchnorm"):
            from cxrvlp.core.losses.infonce import world_info

            if world_info()[1] > 1:  # SyncBatchNorm raises on CPU tensors with a process group
                mcfg.image_encoder_kwargs = {**mcfg.image_encoder_kwargs, "sync_batchnorm": False}
        model = build_model(mcfg)
        # The BERT pooler is unused (P11): the official DDP needs find_unused_parameters=True. It never gets a
        # gradient, so AdamW never touches it either: freezing it is EXACT and lets plain DDP run.
        for name, p in model.named_parameters():
            if ".pooler." in name:
                p.requires_grad_(False)
        return CxrClipTrainModule(model, CxrClipLoss(**vars(self.cfg.loss)))

    def build_val_dataset(self):
        """The official validation data (MIMIC `validate` (+ CheXpert valid)), eval transform, same loss."""
        if self.cfg.data.val_split is None:
            return None
        return build_train_dataset(
            self.cfg.data, train=False, split=self.cfg.data.val_split, root=self.data_root
        )

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        from cxrvlp.core.text.tokenize import tokenize

        max_len = self.cfg.model.text_max_length
        t1 = tokenize(self.tokenizer, [s["text"] for s in samples], max_len, padding="max_length")
        t2 = tokenize(self.tokenizer, [s["text2"] for s in samples], max_len, padding="max_length")
        if self.cfg.pad_to_longest:
            t1, t2 = trim_padding(t1), trim_padding(t2)
        return {
            "images": torch.stack([s["image"] for s in samples]),
            "image_views": torch.stack([s["image_view"] for s in samples]),
            "text_tokens": t1,
            "text_tokens2": t2,
            **batch_bookkeeping(samples),
        }


train = recipe_trainer("cxrclip", CxrClipTrainConfig, CxrClipTask)


if __name__ == "__main__":
    training_main(train, __doc__)
