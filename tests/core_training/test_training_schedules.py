"""LR schedules against the specs' numbers and against torch's own schedulers stepped as the methods do."""

from __future__ import annotations

import math

import pytest
import torch
from cxrvlp.core.training import ScheduleConfig, SchedulePosition, build_schedule
from cxrvlp.core.training.schedules import Plateau


def pos(step: int, epoch: int = 0, step_in_epoch: int | None = None, spe: int = 1000) -> SchedulePosition:
    return SchedulePosition(step, epoch, step if step_in_epoch is None else step_in_epoch, spe)


def _opt(lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_cxrclip_warmup_cosine_check_14():
    # cxrclip.md §10 check 14: warm-up 10 / total 100 -> multipliers 0, 0.5, 1.0, 0.5, 0 at 0, 5, 10, 55, 100.
    s = build_schedule(ScheduleConfig(name="warmup_cosine", warmup_steps=10, total_steps=100), 10, 10)
    got = [s.lr(1.0, pos(k)) for k in (0, 5, 10, 55, 100)]
    assert got == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0], abs=1e-12)


def test_cxrclip_warmup_epochs_unit_is_one_epoch_of_steps():
    # warmup_epochs: 1 -> W = len(loader); 15 epochs -> T = 15·len(loader); matches LambdaLR stepped per step.
    spe = 7
    s = build_schedule(ScheduleConfig(name="warmup_cosine", warmup_epochs=1), spe, 15)
    w, t = spe, 15 * spe

    def lam(k):
        if k < w:
            return k / w
        return max(0.0, 0.5 * (1 + math.cos(math.pi * (k - w) / (t - w))))

    opt = _opt(5e-5)
    ref = torch.optim.lr_scheduler.LambdaLR(opt, lam)
    for k in range(t):
        want = opt.param_groups[0]["lr"]
        assert s.lr(5e-5, pos(k, k // spe, k % spe, spe)) == pytest.approx(want, abs=1e-15)
        opt.step()
        ref.step()


def test_afloc_step_per_epoch_matches_torch_steplr():
    s = build_schedule(ScheduleConfig(name="step", step_size=1, gamma=0.9, interval="epoch"), 5, 5)
    opt = _opt(2e-5)
    ref = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.9)
    for epoch in range(5):
        for i in range(5):
            assert s.lr(2e-5, pos(epoch * 5 + i, epoch, i, 5)) == pytest.approx(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    assert s.lr(2e-5, pos(20, 4, 0, 5)) == pytest.approx(2e-5 * 0.9**4)


def test_exponential_per_step_matches_torch():
    s = build_schedule(ScheduleConfig(name="exponential", gamma=0.97, interval="step"), 5, 5)
    opt = _opt(0.1)
    ref = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.97)
    for k in range(30):
        assert s.lr(0.1, pos(k)) == pytest.approx(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()


def test_plateau_matches_torch_reduce_on_plateau():
    metrics = [1.0, 0.9, 0.95, 0.96, 0.97, 0.99, 0.89, 0.9, 0.91, 0.92, 0.93, 0.5]
    s = Plateau("val_loss", factor=0.5, patience=2, threshold=1e-4, cooldown=1)
    opt = _opt(1.0)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2, threshold=1e-4, cooldown=1)
    for m in metrics:
        s.observe({"val_loss": m})
        ref.step(m)
        assert s.lr(1.0, pos(0)) == pytest.approx(opt.param_groups[0]["lr"])
    assert opt.param_groups[0]["lr"] < 1.0  # the sequence did trigger reductions
    s2 = Plateau("val_loss")
    s2.load_state_dict(s.state_dict())
    assert s2.lr(1.0, pos(0)) == s.lr(1.0, pos(0))


class _RestartsReference(torch.optim.lr_scheduler.LRScheduler):
    """Independent stateful model of the pip `cosine_annealing_warmup` class as MGCA uses it."""

    def __init__(self, opt, first_cycle_steps, cycle_mult, max_lr, min_lr, warmup_steps, gamma):
        self.first, self.mult, self.base_max, self.max_lr = first_cycle_steps, cycle_mult, max_lr, max_lr
        self.min_lr, self.warm, self.gamma = min_lr, warmup_steps, gamma
        self.cur, self.cycle, self.in_cycle = first_cycle_steps, 0, -1
        super().__init__(opt)
        for g in opt.param_groups:  # init_lr(): everything starts at min_lr
            g["lr"] = min_lr
        self.base_lrs = [min_lr for _ in opt.param_groups]

    def get_lr(self):
        if self.in_cycle == -1:
            return list(self.base_lrs)
        if self.in_cycle < self.warm:
            return [(self.max_lr - b) * self.in_cycle / self.warm + b for b in self.base_lrs]
        frac = (self.in_cycle - self.warm) / (self.cur - self.warm)
        return [b + (self.max_lr - b) * (1 + math.cos(math.pi * frac)) / 2 for b in self.base_lrs]

    def step(self, epoch=None):
        self.in_cycle += 1
        if self.in_cycle >= self.cur:
            self.cycle += 1
            self.in_cycle -= self.cur
            self.cur = int((self.cur - self.warm) * self.mult) + self.warm
        self.max_lr = self.base_max * self.gamma**self.cycle
        self.last_epoch = (self.last_epoch if self.last_epoch is not None else -1) + 1
        for g, lr in zip(self.optimizer.param_groups, self.get_lr()):
            g["lr"] = lr


@pytest.mark.parametrize("cycle_mult, gamma", [(1.0, 1.0), (1.5, 0.5)])
def test_mgca_restarts_matches_reference_stepped_per_optimizer_step(cycle_mult, gamma):
    spe, cycle_epochs = 5, 10
    cycle = spe * cycle_epochs
    warm = int(cycle * 0.4)
    cfg = ScheduleConfig(
        name="linear_warmup_cosine_restarts",
        warmup_fraction=0.4,
        total_epochs=cycle_epochs,
        min_lr=1e-8,
        cycle_mult=cycle_mult,
        cycle_gamma=gamma,
    )
    s = build_schedule(cfg, spe, 50)
    opt = _opt(2e-5)
    ref = _RestartsReference(opt, cycle, cycle_mult, 2e-5, 1e-8, warm, gamma)
    assert opt.param_groups[0]["lr"] == 1e-8  # the first optimizer step runs at min_lr
    for k in range(3 * cycle):
        want = opt.param_groups[0]["lr"]
        assert s.lr(2e-5, pos(k, k // spe, k % spe, spe)) == pytest.approx(want, rel=1e-9)
        opt.step()
        ref.step()
    assert s.lr(2e-5, pos(warm)) == pytest.approx(2e-5)  # peak at the end of the 40 % warm-up


MAVL = ScheduleConfig(
    name="timm_cosine",
    warmup_epochs=5,
    total_epochs=60,
    min_lr=1e-5,
    warmup_start_lr=1e-5,
    iter_warmup_every=100,
)


def test_mavl_epoch0_iteration_warmup_values():
    # mavl.md §10 check 9: t = 0: 1e-5; 1: 2.8e-5; 4: 8.2e-5; 5: 1e-4 (scheduler.step(i//100) after step i).
    s = build_schedule(MAVL, 2000, 60)
    lr = {i: s.lr(1e-4, pos(i, 0, i, 2000)) for i in (0, 100, 101, 200, 201, 401, 500, 501, 1999)}
    assert lr[0] == pytest.approx(1e-5) and lr[100] == pytest.approx(1e-5)
    assert lr[101] == pytest.approx(2.8e-5) and lr[200] == pytest.approx(2.8e-5)
    assert lr[401] == pytest.approx(8.2e-5) and lr[500] == pytest.approx(8.2e-5)
    assert lr[501] == pytest.approx(1e-4) and lr[1999] == pytest.approx(1e-4)


@pytest.mark.parametrize(
    "epoch, want", [(1, 9.9938e-5), (25, 6.6647e-5), (49, 1.7260e-5), (54, 1.2202e-5), (59, 1.0062e-5)]
)
def test_mavl_later_epochs_values(epoch, want):
    s = build_schedule(MAVL, 2000, 60)
    assert s.lr(1e-4, pos(epoch * 2000 + 17, epoch, 17, 2000)) == pytest.approx(want, rel=2e-4)


def test_constant_and_unknown_warmup_lengths():
    assert build_schedule(ScheduleConfig(name="constant"), 3, 2).lr(0.3, pos(5)) == 0.3
    s = build_schedule(ScheduleConfig(name="warmup_cosine", warmup_fraction=0.1), 10, 10)  # W = 10 of T = 100
    assert s.lr(1.0, pos(5)) == pytest.approx(0.5)
    assert s.lr(1.0, pos(10)) == pytest.approx(1.0)
