"""Train MAVL: `accelerate launch -m cxrvlp.mavl.train CONFIG.yaml [key=value ...]` (or `python -m`).

Packaged configs (`cxrvlp/mavl/configs/`): `mavl_r50.yaml` (the paper's recipe: AdamW lr 1e-4 wd 0.02 without
decay on 1-D parameters and `temp`, timm cosine with 5 warm-up epochs whose epoch 0 advances every 100
iterations, 60 epochs, batch 124 per GPU on 4 GPUs, fp32, no clipping), `tiny.yaml` (CPU demo on the
synthetic MIMIC mirror) and `small.yaml` (EfficientNet-Lite0 + MiniLM-L6 books; ours).

The frozen text books are computed once at model construction (rank 0; the others wait and read them) and
cached as `<output_dir>/books.safetensors`; they are buffers of the model, so `final/` carries them.
Distributed semantics: nothing is gathered (see loss.py); each process draws its own batch.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from cxrvlp.core.training import TrainConfig, load_config, run_training
from cxrvlp.core.training.task import TaskModule
from cxrvlp.mavl.books import books_for
from cxrvlp.mavl.data import MavlDataConfig, build_train_dataset, collate
from cxrvlp.mavl.loss import MavlLoss
from cxrvlp.mavl.model import Mavl, MavlModelConfig

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class MavlLossConfig:
    ce_weight: float = 1.0  # `ce`
    location_weight: float = 1.0
    cl_global: float = 0.1


@dataclass
class MavlTrainConfig(TrainConfig):
    model_name: str = "mavl-r50"
    model: MavlModelConfig = field(default_factory=MavlModelConfig)
    data: MavlDataConfig = field(default_factory=MavlDataConfig)
    loss: MavlLossConfig = field(default_factory=MavlLossConfig)
    num_threads: int | None = None


class MavlTaskModule(TaskModule):
    """model + loss as one module (what DDP wraps; `temp` lives in the model, as in the release)."""

    def forward(self, batch):
        out = self.model(batch["images"])
        loc = self.model.location_logits(out.l_emb, batch["location_index"])
        terms = self.loss(out.cls_logits, batch["labels"], loc, out.global_sim, self.model.temp)
        return {k: v for k, v in terms.items() if k != "loss"}


class MavlTask:
    """`cxrvlp.core.training.TrainingTask` for MAVL (the model, temp included, is what DDP wraps)."""

    def __init__(self, cfg: MavlTrainConfig) -> None:
        self.cfg = cfg
        self.model_name = cfg.model_name
        self.loss_fn = MavlLoss(**vars(cfg.loss))
        if cfg.data.image_size is not None:
            cfg.model.image_size = cfg.data.image_size
        if not cfg.data.root and not cfg.data.synthetic:  # fail before any model or book is built
            from cxrvlp.mavl.data import data_root

            data_root(cfg.data)

    def build_model(self) -> Mavl:
        from cxrvlp.core.losses.infonce import world_info

        model = Mavl(self.cfg.model)
        cache = Path(self.cfg.output_dir) / "books.safetensors"
        rank, world = world_info()
        if rank == 0:
            books = books_for(self.cfg.model, cache=cache)
        if world > 1:
            torch.distributed.barrier()
        if rank != 0:
            books = books_for(self.cfg.model, cache=cache)
        model.set_books(books["ana_book"], books["concept_book"])
        return model

    def param_groups(self, model):
        from cxrvlp.core.training.optim import split_decay_groups

        return split_decay_groups(model, self.cfg.optimizer.weight_decay, no_decay_names=("temp",))

    def build_train_dataset(self):
        return build_train_dataset(self.cfg.data, train=True)

    def collate(self, samples):
        return collate(samples)

    @torch.no_grad()
    def evaluate(self, model, accelerator) -> dict[str, float]:
        """Mean loss terms over `data.val_splits` in eval mode (official: the test split, each epoch)."""
        if not self.cfg.data.val_splits:
            return {}
        if getattr(self, "_val_loader", None) is None:
            ds = build_train_dataset(self.cfg.data, train=False, splits=self.cfg.data.val_splits)
            loader = torch.utils.data.DataLoader(ds, batch_size=self.cfg.batch_size, collate_fn=collate)
            self._val_loader = accelerator.prepare(loader)
        was_training = model.training
        model.eval()
        sums: dict[str, torch.Tensor] = {}
        for batch in self._val_loader:
            _, logs = self.training_step(model, batch, None)
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + accelerator.gather_for_metrics(v.reshape(1)).mean()
        model.train(was_training)
        n = max(len(self._val_loader), 1)
        out = {f"val_{k}": float(v) / n for k, v in sums.items()}
        if out:
            out["val_loss"] = sum(out.values())
        return out

    def training_step(self, model, batch, state):
        net = getattr(model, "module", model)
        out = model(batch["images"])
        loc = net.location_logits(out.l_emb, batch["location_index"])
        terms = self.loss_fn(out.cls_logits, batch["labels"], loc, out.global_sim, net.temp)
        logs = {k: terms[k].detach() for k in ("presence_loss", "location_loss", "global_loss")}
        return terms["loss"], logs


def resolve_config(path: str | Path | None) -> Path | None:
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
    """Run training; returns the run folder (its `final/` holds the model with its books and config)."""
    if config is None and overrides is None:
        argv = sys.argv[1:]
        if argv and argv[0] in ("-h", "--help"):
            print(__doc__)
            raise SystemExit(0)
        config = argv[0] if argv and "=" not in argv[0] else None
        overrides = [a for a in argv if "=" in a]
    cfg = load_config(MavlTrainConfig, resolve_config(config), list(overrides or []))
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    result = run_training(MavlTask(cfg), cfg)
    return result.output_dir


if __name__ == "__main__":
    main()
