"""MGCA pretraining on MIMIC-CXR with core's Accelerate loop.

    accelerate launch -m cxrvlp.mgca.train CONFIG.yaml [key=value ...]     (or: python -m cxrvlp.mgca.train)

CONFIG is a path or the name of a packaged config (`mgca_vit_b16`, `mgca_r50`, `tiny`, `small`). The paper
recipes need `data.root` (MIMIC-CXR-JPG); `data.synthetic=true` (set in tiny/small) trains on a generated
mirror instead, with a banner in the log. The run folder's `final/` (and `best/`, the epoch with the lowest
validation loss, as the official ModelCheckpoint) holds `model.safetensors` + `config.json` + `tokenizer/`.

Distributed semantics = the official DDP run: every loss uses the local batch only; DDP averages gradients.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from cxrvlp.core.data.pretraining import mimic_images
from cxrvlp.core.method import recipe_trainer, training_main
from cxrvlp.core.text.run_tokenizer import build_run_tokenizer, save_run_tokenizer
from cxrvlp.core.training import (
    TaskModule,
    TrainState,
    exported_model,
    scalar_logs,
    sum_losses,
)
from cxrvlp.core.training.loop import process_state
from cxrvlp.core.training.task import MethodTask
from cxrvlp.mgca.config import MGCATrainConfig
from cxrvlp.mgca.data import MGCAPretrainDataset, MGCATokenizer, mgca_collate, report_caption
from cxrvlp.mgca.loss import MGCALoss, topk_accuracy
from cxrvlp.mgca.model import MGCA, MGCAOutput
from torch import nn

TOKENIZER_DIR = "tokenizer"


class MGCATrainModule(TaskModule):
    """MGCA + `MGCALoss` as one module (what DDP wraps): the prototypes are used inside its forward."""

    def __init__(self, model: MGCA) -> None:
        super().__init__(model, MGCALoss(model.cfg))

    def run(self, batch: dict[str, Any]) -> MGCAOutput:
        """Both sides and the loss output with every intermediate (the parity harness reads them)."""
        out = self.model(batch)
        out.loss = self.loss(out.image, out.text, self.model.prototypes)
        return out

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """lambda-weighted `ita_loss`, `cta_loss`, `cpa_loss` (sum = the official total) + the ITA logits."""
        lo = self.run(batch).loss
        c = self.model.cfg
        return {
            "ita_loss": c.lambda_1 * lo.terms["loss_ita"],
            "cta_loss": c.lambda_2 * lo.terms["loss_cta"],
            "cpa_loss": c.lambda_3 * lo.terms["loss_cpa"],
            "ita_logits": lo.details["ita_logits"],
        }


class MGCATask(MethodTask):
    """`TrainingTask` of MGCA: model, MIMIC-CXR captions, the three losses, prototype freezing."""

    in_batch_negatives = "local"  # ITA on the local batch, nothing gathered (loss.py)

    method = "mgca"

    def __init__(self, cfg: MGCATrainConfig) -> None:
        from cxrvlp.core.data.transforms import build_transform

        super().__init__(cfg)
        d = cfg.data
        state = process_state(cfg)
        self.base = self._images(d.split)
        # one pass over the reports: the caption of every train record (None: dropped, official rule)
        self.captions = [self._caption(self.base, rec) for rec in self.base.records]
        self.tokenizer = self._tokenizer(state)
        # the model config follows the tokenizer actually used
        cfg.model = dataclasses.replace(
            cfg.model,
            sep_token_id=self.tokenizer.sep_token_id,
            max_words=self.tokenizer.max_words,
            image_size=d.image_size,  # recorded so that the zero-shot adapter preprocesses at the same size
            bert=dataclasses.replace(cfg.model.bert, vocab_size=self.tokenizer.vocab_size),
        )
        # the paper's mgca preset; its normalisation follows the model (the small config: ImageNet statistics)
        self.transform = build_transform(
            "mgca", train=True, image_size=d.image_size, seed=cfg.seed, normalisation=cfg.model.normalisation
        )

    def _images(self, split: str):
        return mimic_images(self.cfg.data, self.data_root, split)

    @staticmethod
    def _caption(base: Any, rec: Any) -> str | None:
        _, secs = base.report_for(rec.patient_id, rec.study_id)
        return report_caption(secs.get("impression"), secs.get("findings"))

    def _tokenizer(self, state: Any) -> MGCATokenizer:
        d, m = self.cfg.data, self.cfg.model
        self._tokenizer_to_save = False
        if d.tokenizer != "build":
            return MGCATokenizer.from_pretrained(d.tokenizer or m.tokenizer, m.max_words)
        # core's run-tokenizer rule: reused on resume, else built on rank 0 and broadcast
        tok, self._tokenizer_to_save = build_run_tokenizer(
            lambda: self.captions, self.cfg.output_dir, d.build_vocab_size, bool(self.cfg.resume), state
        )
        return MGCATokenizer(tok, m.max_words)

    def _save_run_tokenizer(self) -> None:
        """Write a freshly built tokenizer to `<output_dir>/tokenizer` (main process) for resume."""
        if self._tokenizer_to_save and process_state(self.cfg).is_main_process:
            save_run_tokenizer(self.tokenizer.tokenizer, self.cfg.output_dir)
        self._tokenizer_to_save = False

    # ---------------------------------------------------------------- TrainingTask
    def build_model(self) -> MGCATrainModule:
        """MGCA + its loss; dead parameters frozen (they never get a grad: AdamW never touched them)."""
        self._save_run_tokenizer()  # the run folder has passed run_training's checks by now
        model = MGCA(self.cfg.model)
        for p in model.dead_parameters():
            p.requires_grad_(False)
        return MGCATrainModule(model)

    def build_train_dataset(self) -> MGCAPretrainDataset:
        """Frontal train images with a usable caption."""
        d = self.cfg.data
        return MGCAPretrainDataset(
            self.base,
            self.tokenizer,
            self.transform,
            d.data_pct,
            42,
            captions=self.captions,
            on_error=d.on_error,
        )

    def build_val_dataset(self) -> MGCAPretrainDataset | None:
        """The official validation split (MIMIC `validate`), eval transform, same captions rule and losses."""
        val = self.val_images("mgca")
        if val is None:
            return None
        return MGCAPretrainDataset(val[0], self.tokenizer, val[1], on_error=self.cfg.data.on_error)

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """Stacked batch + sample_ids."""
        return mgca_collate(samples)

    def training_step(
        self, model: nn.Module, batch: dict[str, Any], state: TrainState
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """lambda-weighted ITA + CTA + CPA of the local batch (nothing gathered, as the official DDP run)."""
        terms = model(batch)
        logits = terms["ita_logits"]
        logs = {**scalar_logs(terms), "acc1": topk_accuracy(logits, 1)}
        if logits.shape[0] >= 5:
            logs["acc5"] = topk_accuracy(logits, 5)
        return sum_losses(terms), logs

    def on_after_backward(self, model: nn.Module, state: TrainState) -> None:
        """Prototypes get no update in the first `freeze_prototypes_epochs` epochs (grad dropped)."""
        if state.epoch < self.cfg.model.freeze_prototypes_epochs:
            inner = state.accelerator.unwrap_model(model) if state.accelerator is not None else model
            exported_model(inner).prototypes.weight.grad = None



train = recipe_trainer("mgca", MGCATrainConfig, MGCATask)


if __name__ == "__main__":
    training_main(train, __doc__)
