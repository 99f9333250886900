"""Train CARZero: `accelerate launch -m cxrvlp.carzero.train CONFIG.yaml [key=value ...]` (or `python -m`).

Packaged configs (`cxrvlp/carzero/configs/`): `carzero_vit_b16.yaml` (the released recipe: Adam lr 5e-5,
betas (0.5, 0.999), L2 weight decay 1e-6, constant LR, 15 epochs, fp16 AMP, clipping 0.25, batch curriculum
64 -> 128 -> 256, best val_loss kept), `tiny.yaml` (CPU demo on the synthetic mirror) and `small.yaml`
(EfficientNet-Lite0 + MiniLM-L6). A config name without a path is looked up there.

Distributed: nothing is gathered (see loss.py); each process scores its own B x B pairs. Gradient accumulation
sums the gradients of independent micro-batch B x B problems: it does NOT enlarge the set of in-batch
negatives (a 256-curriculum needs 256 samples per process, or the method changes).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from cxrvlp.carzero.config import CarzeroLossConfig, CarzeroModelConfig
from cxrvlp.carzero.data import CarzeroDataConfig, build_train_dataset
from cxrvlp.carzero.loss import CarzeroLoss
from cxrvlp.carzero.model import Carzero, build_model
from cxrvlp.carzero.official import UNUSED_PATTERNS
from cxrvlp.core.training import TrainConfig, load_config, run_training

CONFIG_DIR = Path(__file__).parent / "configs"
log = logging.getLogger("cxrvlp.carzero")
CORE_HAS_BATCH_SCHEDULE = "batch_size_schedule" in {f.name for f in dataclasses.fields(TrainConfig)}


@dataclass
class CarzeroTrainConfig(TrainConfig):
    """A CARZero run: the shared loop's settings plus model, data and loss sections."""

    model_name: str = "carzero-vit-b16"
    model: CarzeroModelConfig = field(default_factory=CarzeroModelConfig)
    data: CarzeroDataConfig = field(default_factory=CarzeroDataConfig)
    loss: CarzeroLossConfig = field(default_factory=CarzeroLossConfig)
    # [epoch, batch_size] pairs: from that epoch on, that per-process batch (core's TrainConfig key; declared
    # here too until core's loop has it, then the loop applies it)
    batch_size_schedule: list[list[int]] | None = None
    tokenizer_vocab_size: int = 2000  # only when model.tokenizer is null: WordPiece built from the sentences
    pad_to_longest: bool = True  # EXACT speed-up: BERT masks pads and words are re-padded to 97 slots
    eval_split: str | None = "validate"  # [paper] val_loss on the valid split after every epoch (None: off)
    eval_batch_size: int = 256  # [paper] validation always uses 256
    eval_max_batches: int | None = None
    num_threads: int | None = None  # torch CPU threads


def freeze_unused(model: Carzero) -> list[str]:
    """requires_grad=False on the parameters the forward never uses (EXACT: they never get a gradient, so the
    official Adam never moves them); lets plain DDP run without find_unused_parameters."""
    import re

    pats = [re.compile(p) for p in UNUSED_PATTERNS]
    frozen = []
    for name, p in model.named_parameters():
        if any(pt.search(name) for pt in pats):
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


class CarzeroTask:
    """`cxrvlp.core.training.TrainingTask` for CARZero."""

    def __init__(self, cfg: CarzeroTrainConfig) -> None:
        self.cfg = cfg
        self.model_name = cfg.model_name
        self.loss_fn = CarzeroLoss(cfg.loss.i2t_weight, cfg.loss.t2i_weight)
        self._dataset = None
        self.tokenizer = None
        self.best_val: float | None = None

    def dataset(self):
        if self._dataset is None:
            self._dataset = build_train_dataset(self.cfg.data, train=True)
        return self._dataset

    def _build_tokenizer(self):
        from cxrvlp.core.losses.infonce import world_info
        from cxrvlp.core.text.tokenize import build_tokenizer_from_texts, load_tokenizer

        mcfg = self.cfg.model
        if mcfg.tokenizer is not None:
            return load_tokenizer(mcfg.tokenizer)
        out = Path(self.cfg.output_dir) / "tokenizer"
        rank, world = world_info()
        # Built once into the run folder and reused on resume (a rebuilt vocabulary could renumber tokens).
        if rank == 0 and not (self.cfg.resume and out.is_dir()):
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tokenizer-", dir=out.parent))
            build_tokenizer_from_texts(self.dataset().texts(), tmp, vocab_size=self.cfg.tokenizer_vocab_size)
            if out.is_dir():
                shutil.rmtree(out)
            os.replace(tmp, out)
        if world > 1:
            torch.distributed.barrier()
        tok = load_tokenizer(out)
        mcfg.tokenizer = str(out)
        mcfg.text_config = {**mcfg.text_config, "vocab_size": len(tok)}
        return tok

    def build_model(self) -> Carzero:
        self.tokenizer = self._build_tokenizer()
        model = build_model(self.cfg.model)
        model.set_tokenizer(self.tokenizer)
        freeze_unused(model)
        return model

    def build_train_dataset(self):
        return self.dataset()

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        from cxrvlp.core.text.tokenize import tokenize

        tokens = tokenize(self.tokenizer, [s["text"] for s in samples], self.cfg.model.text_max_length,
                          padding="longest" if self.cfg.pad_to_longest else "max_length")  # fmt: skip
        return {
            "images": torch.stack([s["image"] for s in samples]),
            "tokens": tokens,
            "sample_ids": [s["sample_id"] for s in samples],
        }

    def training_step(self, model, batch, state):
        out = model(batch["images"], batch["tokens"])
        terms = self.loss_fn(out.i2t, out.t2i)
        return terms["loss"], {"i2t_loss": terms["i2t_loss"].detach(), "t2i_loss": terms["t2i_loss"].detach()}

    def evaluate(self, model, accelerator) -> dict[str, float]:
        """val_loss on `eval_split` (batches of eval_batch_size, drop_last as the official loader); the best
        model so far is written to `<output_dir>/best` (the official ModelCheckpoint keeps the best val_loss)."""
        if not self.cfg.eval_split:
            return {}
        from cxrvlp.core.training.checkpoint import save_pretrained

        ds = build_train_dataset(dataclasses.replace(self.cfg.data, split=self.cfg.eval_split), train=False)
        if len(ds) < 2:
            return {}
        bs = min(self.cfg.eval_batch_size, len(ds))
        sampler = torch.utils.data.distributed.DistributedSampler(
            ds, accelerator.num_processes, accelerator.process_index, shuffle=False, drop_last=True
        )
        loader = torch.utils.data.DataLoader(ds, batch_size=bs, sampler=sampler, collate_fn=self.collate,
                                             drop_last=len(ds) // accelerator.num_processes >= bs)  # fmt: skip
        total, count = torch.zeros((), device=accelerator.device), torch.zeros((), device=accelerator.device)
        gen_state = torch.get_rng_state()
        torch.manual_seed(0)  # the drawn sentence of each validation image is fixed
        import numpy as np

        np_state = np.random.get_state()
        np.random.seed(0)
        try:
            for i, batch in enumerate(loader):
                if self.cfg.eval_max_batches is not None and i >= self.cfg.eval_max_batches:
                    break
                if batch["images"].shape[0] < 2:
                    continue
                images = batch["images"].to(accelerator.device)
                tokens = {k: v.to(accelerator.device) for k, v in batch["tokens"].items()}
                with accelerator.autocast():
                    out = model(images, tokens)
                total += self.loss_fn(out.i2t, out.t2i)["loss"].float()
                count += 1
        finally:
            torch.set_rng_state(gen_state)
            np.random.set_state(np_state)
        total, count = accelerator.reduce(total, "sum"), accelerator.reduce(count, "sum")
        if count.item() == 0:
            return {}
        val = float(total / count)
        if self.best_val is None or val < self.best_val:
            self.best_val = val
            if accelerator.is_main_process:
                out_dir = Path(self.cfg.output_dir) / "best"
                save_pretrained(accelerator.unwrap_model(model), self.cfg, out_dir, model_name=self.model_name)
                if self.tokenizer is not None:
                    self.tokenizer.save_pretrained(str(out_dir / "tokenizer"))
        return {"val_loss": val}


def resolve_config(path: str | Path | None) -> Path | None:
    """A config path, or the name of a packaged config ('tiny', 'carzero_vit_b16.yaml')."""
    if path is None:
        return None
    p = Path(path)
    if p.exists():
        return p
    for cand in (CONFIG_DIR / p.name, CONFIG_DIR / f"{p.name}.yaml"):
        if cand.exists():
            return cand
    return p


def main(config: str | Path | None = None, overrides: list[str] | None = None) -> Path:
    """Run training; returns the run folder (its `final/` holds model, config and tokenizer)."""
    if config is None and overrides is None:
        argv = sys.argv[1:]
        if argv and argv[0] in ("-h", "--help"):
            print(__doc__)
            raise SystemExit(0)
        config = argv[0] if argv and "=" not in argv[0] else None
        overrides = [a for a in argv if "=" in a]
    cfg = load_config(CarzeroTrainConfig, resolve_config(config), list(overrides or []))
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    if cfg.batch_size_schedule and not CORE_HAS_BATCH_SCHEDULE:
        log.warning(
            "carzero: batch_size_schedule %s is not applied: core's training loop has no per-epoch batch-size "
            "schedule yet; the whole run uses batch_size=%d", cfg.batch_size_schedule, cfg.batch_size,
        )  # fmt: skip
    task = CarzeroTask(cfg)
    result = run_training(task, cfg)
    from cxrvlp.core.losses.infonce import world_info

    if world_info()[0] == 0 and task.tokenizer is not None:
        task.tokenizer.save_pretrained(str(result.final_dir / "tokenizer"))
    return result.output_dir


if __name__ == "__main__":
    main()
