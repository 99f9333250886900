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
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from cxrvlp.core.data.pretraining import resolve_mimic_root
from cxrvlp.core.errors import ConfigError
from cxrvlp.core.text.tokenize import check_same_vocab
from cxrvlp.core.training import (
    TaskModule,
    TrainState,
    exported_model,
    load_config,
    run_training,
    scalar_logs,
    sum_losses,
)
from cxrvlp.core.training.loop import process_state
from cxrvlp.mgca.config import MGCATrainConfig
from cxrvlp.mgca.data import MGCAPretrainDataset, MGCATokenizer, mgca_collate, report_caption
from cxrvlp.mgca.loss import MGCALoss, topk_accuracy
from cxrvlp.mgca.model import MGCA, MGCAOutput
from torch import nn

CONFIG_DIR = Path(__file__).parent / "configs"
TOKENIZER_DIR = "tokenizer"


def resolve_config_path(config: str | os.PathLike) -> Path:
    """A YAML path, or the name of a packaged config (`tiny`, `small`, `mgca_vit_b16`, `mgca_r50`)."""
    p = Path(config)
    if p.is_file():
        return p
    packaged = CONFIG_DIR / f"{Path(str(config)).stem}.yaml"
    if packaged.is_file():
        return packaged
    known = sorted(q.stem for q in CONFIG_DIR.glob("*.yaml"))
    raise ConfigError(f"config '{config}' is neither a file nor a packaged config {known}")


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


class MGCATask:
    """`TrainingTask` of MGCA: model, MIMIC-CXR captions, the three losses, prototype freezing."""

    def __init__(self, cfg: MGCATrainConfig) -> None:
        from cxrvlp.core.data.transforms import build_transform

        self.cfg = cfg
        self.model_name = cfg.model_name
        d = cfg.data
        state = process_state(cfg)
        with state.main_process_first():
            self.data_root = resolve_mimic_root(d, "mgca")
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
        from cxrvlp.core.data import MimicCxrDataset

        d = self.cfg.data
        return MimicCxrDataset(
            self.data_root,
            split=split,
            views=("PA", "AP"),
            label_source=None,
            reports_root=d.reports_root,
            sectioned_csv=d.sectioned_csv,
            cache_dir=d.image_cache_dir,
            on_error=d.on_error,
        )

    @staticmethod
    def _caption(base: Any, rec: Any) -> str | None:
        _, secs = base.report_for(rec.patient_id, rec.study_id)
        return report_caption(secs.get("impression"), secs.get("findings"))

    def _tokenizer(self, state: Any) -> MGCATokenizer:
        d, m = self.cfg.data, self.cfg.model
        self._tokenizer_to_save = False
        if d.tokenizer != "build":
            return MGCATokenizer.from_pretrained(d.tokenizer or m.tokenizer, m.max_words)
        # A resumed run reuses the vocabulary saved in its run folder: a rebuilt one could renumber the
        # tokens its checkpoint was trained with (the captions or the WordPiece trainer may have changed).
        saved = Path(self.cfg.output_dir) / TOKENIZER_DIR
        if self.cfg.resume and saved.is_dir():
            tok = MGCATokenizer.from_pretrained(saved, m.max_words)
        else:
            # Built before run_training checks the run folder, so into a temp folder; `build_model`
            # (called after that check) saves it there. Rank 0 builds, every other rank gets its files.
            from cxrvlp.core.text.tokenize import build_tokenizer_on_main

            texts = lambda: [c for c in self.captions if c]  # noqa: E731
            tmp = build_tokenizer_on_main(texts, state, d.build_vocab_size, prefix="mgca-tokenizer-")
            tok = MGCATokenizer.from_pretrained(tmp, m.max_words)
            self._tokenizer_to_save = True
        check_same_vocab(tok.tokenizer, state)
        return tok

    def _save_run_tokenizer(self) -> None:
        """Write a freshly built tokenizer to `<output_dir>/tokenizer` (main process; atomic replace)."""
        if not self._tokenizer_to_save or not process_state(self.cfg).is_main_process:
            return
        out = Path(self.cfg.output_dir) / TOKENIZER_DIR
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tokenizer-", dir=out.parent))
        self.tokenizer.save(tmp)
        if out.is_dir():  # overwrite=true of an older run: its vocabulary is not this run's
            import shutil

            shutil.rmtree(out)
        os.replace(tmp, out)
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
        from cxrvlp.core.data.transforms import build_transform

        d = self.cfg.data
        if d.val_split is None:
            return None
        base = self._images(d.val_split)
        if not base.records:
            return None
        tf = build_transform(
            "mgca", train=False, image_size=d.image_size, normalisation=self.cfg.model.normalisation
        )
        return MGCAPretrainDataset(base, self.tokenizer, tf, on_error=d.on_error)

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

    def save_resources(self, folder: Path) -> None:
        """The tokenizer next to the weights (final/, best/): the adapter tokenises prompts with it."""
        self.tokenizer.save(Path(folder) / TOKENIZER_DIR)


def train(config: str | os.PathLike | MGCATrainConfig, overrides: tuple[str, ...] | list[str] = ()) -> Path:
    """Run one MGCA pretraining; returns the run folder (its `final/` is a `from_pretrained` folder)."""
    if isinstance(config, MGCATrainConfig):
        cfg = config
        if overrides:
            raise ConfigError("overrides apply to a YAML config; edit the MGCATrainConfig instead")
    else:
        cfg = load_config(MGCATrainConfig, resolve_config_path(config), list(overrides))
    result = run_training(MGCATask(cfg), cfg)
    return Path(result.output_dir)


def main(argv: list[str] | None = None) -> None:
    """CLI: CONFIG [key=value ...]."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    out = train(argv[0], argv[1:])
    print(f"run folder: {out}")


if __name__ == "__main__":
    main()
