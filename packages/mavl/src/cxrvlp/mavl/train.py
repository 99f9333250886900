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
from pathlib import Path

import torch
from cxrvlp.core.method import cli_arguments
from cxrvlp.core.training import TaskModule, load_config, run_training, scalar_logs, sum_losses
from cxrvlp.core.training.loop import process_state
from cxrvlp.mavl.books import books_for
from cxrvlp.mavl.config import MavlTrainConfig
from cxrvlp.mavl.data import build_train_dataset, collate
from cxrvlp.mavl.loss import MavlLoss
from cxrvlp.mavl.model import Mavl

CONFIG_DIR = Path(__file__).parent / "configs"


class MavlTaskModule(TaskModule):
    """model + loss as one module (what DDP wraps; `temp` lives in the model, as in the release).

    The `*_loss` terms are the weighted presence, location and global terms: they sum to the official loss.
    """

    def forward(self, batch):
        out = self.model(batch["images"])
        loc = self.model.location_logits(out.l_emb, batch["location_index"])
        temp = getattr(self.model, "temp", None)  # MedKLIP has none
        terms = self.loss(out.cls_logits, batch["labels"], loc, out.global_sim, temp)
        return {k: v for k, v in terms.items() if k != "loss"}


class MavlTask:
    """`cxrvlp.core.training.TrainingTask` for MAVL (the task module, `temp` included, is what DDP wraps)."""

    def __init__(self, cfg: MavlTrainConfig) -> None:
        from cxrvlp.core.data.pretraining import resolve_mimic_root

        self.cfg = cfg
        self.model_name = cfg.model_name
        if cfg.data.image_size is not None:
            cfg.model.image_size = cfg.data.image_size
        # before any model or book is built: a paper recipe without data.root stops here, naming the key
        with process_state(cfg).main_process_first():
            self.data_root = resolve_mimic_root(cfg.data, "mavl")

    def build_model(self) -> MavlTaskModule:
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
        # the books are buffers of the model: final/ and best/ carry them (no separate resource to save)
        model.set_books(books["ana_book"], books["concept_book"])
        return MavlTaskModule(model, MavlLoss(**vars(self.cfg.loss)))

    def param_groups(self, model):
        from cxrvlp.core.training.optim import split_decay_groups

        return split_decay_groups(model, self.cfg.optimizer.weight_decay, no_decay_names=("model.temp",))

    def build_train_dataset(self):
        return build_train_dataset(self.cfg.data, self.data_root, train=True)

    def build_val_dataset(self):
        """`data.val_split` (official: the test split, also trained on) with the eval transform, same loss."""
        if self.cfg.data.val_split is None:
            return None
        return build_train_dataset(self.cfg.data, self.data_root, train=False, split=self.cfg.data.val_split)

    def collate(self, samples):
        return collate(samples)

    def training_step(self, model, batch, state):
        terms = model(batch)
        return sum_losses(terms), scalar_logs(terms)


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
        config, overrides = cli_arguments(sys.argv[1:], __doc__)
    cfg = load_config(MavlTrainConfig, resolve_config(config), list(overrides or []))
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    result = run_training(MavlTask(cfg), cfg)
    return result.output_dir


if __name__ == "__main__":
    main()
