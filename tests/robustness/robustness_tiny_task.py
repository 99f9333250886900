"""A tiny CNN task on random tensors trained through the real loop (used in-process and as a subprocess).

As a script: `python robustness_tiny_task.py key=value ... [--kill-at-step N] [--kill-in-save K]`, where
`--kill-at-step N` SIGKILLs the process inside the training step that follows optimizer step N and
`--kill-in-save K` SIGKILLs it in the middle of writing its K-th checkpoint (after the files, before the
rename). It prints `FINAL <output_dir> rank=R step=N skipped=K checksum=X` on success.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
from cxrvlp.core.training import TrainConfig, load_config, run_training
from torch import nn
from torch.utils.data import Dataset


@dataclass
class TinyData:
    n: int = 24
    nan_ids: list[str] = field(default_factory=list)  # a batch holding one of these gives a NaN loss
    inf_ids: list[str] = field(default_factory=list)
    augment: bool = True  # random noise per draw: exercises per-sample seeding
    private_rng: bool = False  # noise from the transform's own numpy Generator (like core's Compose)


@dataclass
class TinyConfig(TrainConfig):
    data: TinyData = field(default_factory=TinyData)


class PrivateNoise:
    """A transform with its own random stream and a `reseed(seed)` method."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def reseed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.from_numpy(0.05 * self.rng.standard_normal(x.shape).astype(np.float32))


class TinyDataset(Dataset):
    def __init__(self, cfg: TinyData) -> None:
        g = torch.Generator().manual_seed(1234)
        self.x = torch.rand(cfg.n, 1, 8, 8, generator=g)
        self.y = torch.randint(0, 3, (cfg.n,), generator=g)
        self.augment = cfg.augment
        self.transform = PrivateNoise() if cfg.private_rng else None

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        x = self.x[i]
        if self.transform is not None:
            x = self.transform(x)  # private RNG: the loop must call transform.reseed per sample
        elif self.augment:
            x = x + 0.05 * torch.randn_like(x)  # global RNG: must be seeded per sample by the loop
        return {"image": x, "label": self.y[i], "sample_id": f"s{i:03d}"}


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.3)  # training RNG: must be restored on resume
        self.head = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x)))  # (B, 4, 8, 8)
        return self.head(self.drop(h.flatten(1)))  # (B, 3)


class TinyTask:
    model_name = "tiny-cnn"

    def __init__(self, cfg: TinyConfig, kill_at_step: int | None = None) -> None:
        self.cfg = cfg
        self.kill_at_step = kill_at_step
        self.epochs_started: list[int] = []
        self.eval_calls = 0

    def build_model(self) -> nn.Module:
        return TinyNet()

    def build_train_dataset(self) -> Dataset:
        return TinyDataset(self.cfg.data)

    def collate(self, samples):
        return {
            "image": torch.stack([s["image"] for s in samples]),
            "label": torch.stack([s["label"] for s in samples]),
            "sample_ids": [s["sample_id"] for s in samples],
        }

    def training_step(self, model, batch, state):
        if self.kill_at_step is not None and state.global_step >= self.kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)
        logits = model(batch["image"])
        loss = nn.functional.cross_entropy(logits, batch["label"])
        ids = set(batch["sample_ids"])
        if ids & set(self.cfg.data.nan_ids):
            loss = loss * float("nan")
        if ids & set(self.cfg.data.inf_ids):
            loss = loss + float("inf")
        return loss, {"acc": (logits.argmax(-1) == batch["label"]).float().mean()}

    def on_epoch_start(self, model, epoch):
        self.epochs_started.append(epoch)

    def evaluate(self, model, accelerator):
        self.eval_calls += 1
        ds = TinyDataset(self.cfg.data)
        x = ds.x.to(accelerator.device)
        logits = accelerator.unwrap_model(model)(x)
        loss = nn.functional.cross_entropy(logits, ds.y.to(accelerator.device))
        return {"val_loss": float(loss)}


def main(argv: list[str]) -> None:
    kill_at = kill_in_save = None
    rest = []
    i = 0
    while i < len(argv):
        if argv[i] == "--kill-at-step":
            kill_at = int(argv[i + 1])
            i += 2
        elif argv[i] == "--kill-in-save":
            kill_in_save = int(argv[i + 1])
            i += 2
        else:
            rest.append(argv[i])
            i += 1
    if kill_in_save is not None:
        from cxrvlp.core.training import loop

        calls = {"n": 0}
        real = loop.fsync_tree

        def dying_fsync(folder):
            # fsync_tree runs on the temp folder right before its rename: die there on the K-th save.
            if ".tmp-" in str(folder):
                calls["n"] += 1
                if calls["n"] == kill_in_save:
                    os.kill(os.getpid(), signal.SIGKILL)
            return real(folder)

        loop.fsync_tree = dying_fsync
    cfg = load_config(TinyConfig, None, rest)
    result = run_training(TinyTask(cfg, kill_at_step=kill_at), cfg)
    rank = int(os.environ.get("RANK", "0"))
    checksum = sum(float(p.detach().double().sum()) for p in result.model.parameters())
    # one write of the whole line: two ranks share torchrun's stdout, and print() writes the text and the
    # newline separately when unbuffered, so the ranks' lines could interleave into one (a flaky parse)
    line = f"FINAL {result.output_dir} rank={rank} step={result.global_step} skipped={result.skipped_steps} "
    sys.stdout.write(f"\n{line}checksum={checksum!r}\n")
    sys.stdout.flush()


if __name__ == "__main__":
    # One intra-op thread in the subprocess: the model is tiny; OpenMP spinning on 2 cores costs more.
    torch.set_num_threads(1)
    main(sys.argv[1:])
