"""AFLoc pretraining on MIMIC-CXR with core's Accelerate loop.

    accelerate launch -m cxrvlp.afloc.train CONFIG.yaml [key=value ...]     (or: python -m cxrvlp.afloc.train)

CONFIG is a path or a packaged config name (`afloc_r50`, `tiny`, `small`). The paper recipe refuses to start
without `data.root`; the synthetic MIMIC-CXR mirror is used only with `data.synthetic=true` (demos).
The run folder's `final/` holds model.safetensors + config.json (+ tokenizer/), read by `load_adapter`.

Distributed semantics = the official run (Lightning DataParallel, 2 GPUs x 64): every loss uses the local
batch only, nothing is gathered; DDP averages the per-process gradients (= the gradient of the mean of the
per-GPU losses, as DP). DDP broadcasts BatchNorm buffers from rank 0 like DP keeps replica 0's.
`dp_replicas: k` emulates k DP replicas on one process (the batch is cut into k chunks, each a full forward
and loss; the losses are averaged).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from cxrvlp.afloc.config import AFLocTrainConfig
from cxrvlp.afloc.data import AFLocPretrainDataset, AFLocTokenizer, afloc_collate
from cxrvlp.afloc.loss import TERMS, AFLocLoss
from cxrvlp.afloc.model import AFLoc, ImageSide, TextSide
from cxrvlp.core.data.pretraining import mimic_images
from cxrvlp.core.method import recipe_trainer, training_main
from cxrvlp.core.text.tokenize import build_tokenizer_on_main, check_same_vocab
from cxrvlp.core.training import TaskModule, TrainState, scalar_logs, sum_losses
from cxrvlp.core.training.loop import process_state
from cxrvlp.core.training.task import MethodTask
from torch import nn

TOKENIZER_DIR = "tokenizer"


BATCH_KEYS = ("images", "input_ids", "attention_mask", "token_type_ids", "piece_mask", "bracket_mask")


class AFLocTrainModule(TaskModule):
    """AFLoc + `AFLocLoss` as one module (what DDP wraps); the loss has no parameters (fixed temperatures)."""

    def __init__(self, model: AFLoc) -> None:
        super().__init__(model, AFLocLoss(model.cfg))

    def run(self, batch: dict[str, Any]) -> tuple[ImageSide, TextSide, dict[str, torch.Tensor]]:
        """Both sides and the loss dict with every intermediate (directional terms, logits, attention)."""
        img, txt = self.model(batch)
        return img, txt, self.loss(img, txt)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Weighted `global_report_loss`, `local_sent_loss`, `local_word_loss` (sum = the official total)."""
        lo = self.run(batch)[2]
        return {name: lo[name] for name in TERMS}


class AFLocTask(MethodTask):
    """`TrainingTask` of AFLoc: model, MIMIC-CXR reports with per-draw sentence sampling, the three losses."""

    in_batch_negatives = "local"  # every loss on the local batch, nothing gathered (loss.py)

    method = "afloc"

    def __init__(self, cfg: AFLocTrainConfig) -> None:
        from cxrvlp.core.data.transforms import build_transform

        super().__init__(cfg)
        d = cfg.data
        state = process_state(cfg)
        self.base = self._images(d.split)
        self.transform = build_transform(
            "afloc", train=True, image_size=d.image_size, seed=cfg.seed, normalisation=cfg.model.normalisation
        )
        self.tokenizer = self._tokenizer(state)
        t = self.tokenizer
        cfg.model = dataclasses.replace(
            cfg.model,
            cls_token_id=t.cls_token_id,
            sep_token_id=t.sep_token_id,
            period_token_id=t.period_token_id,
            image_size=d.image_size,  # the adapter preprocesses at the trained size
            tokenizer=cfg.model.tokenizer if d.tokenizer != "build" else TOKENIZER_DIR,
            bert={**cfg.model.bert, "vocab_size": t.vocab_size}
            if not cfg.model.text_pretrained
            else cfg.model.bert,
        )
        self._dataset: AFLocPretrainDataset | None = None

    def _images(self, split: str):
        return mimic_images(self.cfg.data, self.data_root, split)

    def _tokenizer(self, state: Any) -> AFLocTokenizer:
        d, m = self.cfg.data, self.cfg.model
        self._tokenizer_to_save = False
        if d.tokenizer != "build" and m.tokenizer != "build":
            return AFLocTokenizer.from_pretrained(d.tokenizer or m.tokenizer, m.text_max_length)
        saved = Path(self.cfg.output_dir) / TOKENIZER_DIR
        if self.cfg.resume and saved.is_dir():  # a rebuilt vocab could renumber the checkpoint's tokens
            tok = AFLocTokenizer.from_pretrained(saved, m.text_max_length)
        else:
            # Built before run_training checks the run folder, so into a temp folder; `build_model` (called
            # after that check) saves it there. Rank 0 builds, every other rank gets its files.
            folder = build_tokenizer_on_main(
                lambda: self._dataset_view().texts(), state, d.build_vocab_size, prefix="afloc-tokenizer-"
            )
            tok = AFLocTokenizer.from_pretrained(folder, m.text_max_length)
            self._tokenizer_to_save = True
        check_same_vocab(tok.tokenizer, state)
        return tok

    def _dataset_view(self) -> AFLocPretrainDataset:
        if getattr(self, "_dataset", None) is None:
            self._dataset = AFLocPretrainDataset(
                self.base, None, self.transform, on_error=self.cfg.data.on_error
            )
        return self._dataset

    # ---------------------------------------------------------------- TrainingTask
    def build_model(self) -> AFLocTrainModule:
        """AFLoc + its loss; parameters no loss reaches are frozen (pooler, local_f_embedder: Adam never
        moves them, their grad stays None)."""
        if self._tokenizer_to_save:  # the run folder has passed run_training's checks by now
            if process_state(self.cfg).is_main_process:
                self.tokenizer.save(Path(self.cfg.output_dir) / TOKENIZER_DIR)
            self._tokenizer_to_save = False
        model = AFLoc(self.cfg.model)
        for p in model.unused_parameters():
            p.requires_grad_(False)
        return AFLocTrainModule(model)

    def build_train_dataset(self) -> AFLocPretrainDataset:
        ds = self._dataset_view()
        ds.tokenizer = self.tokenizer
        return ds

    def build_val_dataset(self) -> AFLocPretrainDataset | None:
        """The official validation split (`validate`) with the eval transform, the same per-draw sentence
        sampling and the same losses (`val_loss` = the official monitor). The loop fixes the draws (one
        seed per row, every epoch); the official draws change each epoch."""
        val = self.val_images("afloc")
        if val is None:
            return None
        return AFLocPretrainDataset(val[0], self.tokenizer, val[1], on_error=self.cfg.data.on_error)

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        return afloc_collate(samples, self.tokenizer)

    def training_step(
        self, model: nn.Module, batch: dict[str, Any], state: TrainState
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Sum of the three weighted losses of the local batch (mean over `dp_replicas` chunks, each chunk
        its own in-batch negatives: the official per-GPU DataParallel losses)."""
        k = max(1, int(self.cfg.dp_replicas))
        n = batch["images"].shape[0]
        terms: dict[str, torch.Tensor] = {}
        for c in range(k):
            sl = slice(c * n // k, (c + 1) * n // k)
            chunk = model({key: batch[key][sl] for key in BATCH_KEYS})
            for name, v in chunk.items():
                v = v / k if k > 1 else v
                terms[name] = terms[name] + v if name in terms else v
        return sum_losses(terms), scalar_logs(terms)



train = recipe_trainer("afloc", AFLocTrainConfig, AFLocTask)


if __name__ == "__main__":
    training_main(train, __doc__)
