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

from pathlib import Path

import torch
from cxrvlp.core.method import recipe_trainer, training_main
from cxrvlp.core.training import TaskModule
from cxrvlp.core.training.task import MethodTask
from cxrvlp.mavl.books import books_for
from cxrvlp.mavl.config import MavlTrainConfig
from cxrvlp.mavl.data import build_train_dataset, collate
from cxrvlp.mavl.loss import MavlLoss
from cxrvlp.mavl.model import Mavl


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


class MavlTask(MethodTask):
    """`cxrvlp.core.training.TrainingTask` for MAVL (the task module, `temp` included, is what DDP wraps)."""

    in_batch_negatives = "local"  # t2i softmax over the local images, nothing gathered (loss.py)

    method = "mavl"

    def __init__(self, cfg: MavlTrainConfig) -> None:
        if cfg.data.image_size is not None:
            cfg.model.image_size = cfg.data.image_size
        super().__init__(cfg)  # before any model or book is built: checks data.root

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



train = recipe_trainer("mavl", MavlTrainConfig, MavlTask)


if __name__ == "__main__":
    training_main(train, __doc__)
