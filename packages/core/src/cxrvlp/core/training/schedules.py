"""Learning-rate schedules used by the five methods, as pure functions of the training position.

The loop sets each param group's LR to `schedule.lr(base_lr, pos)` right before every optimizer step, where
`pos.step` is the number of optimizer steps already taken (0 for the first), `pos.epoch` the epoch index and
`pos.step_in_epoch` the optimizer steps already taken in this epoch. A schedule is therefore exact after a
resume without replaying anything; only `plateau` has state (saved in the trainer state).

Schedules (base lr B, optimizer step k, warm-up W, horizon T, min_lr m):
- constant (CARZero, whose plateau never fires): B.
- warmup_cosine (CXR-CLIP's LambdaLR): factor k/W for k < W, then ½(1+cos(π(k−W)/(T−W))), 0 after T;
  lr = m + (B−m)·factor (m = 0 in CXR-CLIP). cosine: the same with W = 0.
- step (AFLoc's StepLR(1, 0.9) stepped per epoch): B·γ^⌊u/step_size⌋, u = epoch (interval=epoch) or k.
- exponential: B·γ^u.
- plateau: B·factor^reductions, reduced by `observe(metrics)` after evaluations (ReduceLROnPlateau).
- linear_warmup_cosine_restarts (MGCA, katsura-jp CosineAnnealingWarmupRestarts): with s = k within the
  cycle of length C and peak M = B·cycle_gamma^cycle: m + (M−m)·s/W for s < W, then
  m + (M−m)·½(1+cos(π(s−W)/(C−W))).
- timm_cosine (MAVL, timm CosineLRScheduler with warmup_prefix, one cycle, t in epochs):
  w0 + t·(B−w0)/warmup_t
  for t < warmup_t, then m + ½(B−m)(1+cos(π(t−warmup_t)/t_initial)), m after the cycle.

MAVL's t: in epoch 0 `scheduler.step(i // 100)` runs after the optimizer step of iteration i (i % 100 == 0,
i ≤ 100·warmup_t), so iteration i uses t = 0 for i ≤ 100 and min((i−1) // 100, warmup_t) after; epoch
e ≥ 1 runs at t = e + warmup_t (set with `iter_warmup_every=100`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from cxrvlp.core.errors import ConfigError
from cxrvlp.core.training.config import ScheduleConfig


@dataclass(frozen=True)
class SchedulePosition:
    """Where training is: optimizer steps taken (global and in this epoch) and the epoch index."""

    step: int
    epoch: int
    step_in_epoch: int
    steps_per_epoch: int


class LRSchedule:
    """Base class: `lr(base_lr, pos)`; stateful schedules also implement observe/state_dict."""

    name = "base"

    def lr(self, base_lr: float, pos: SchedulePosition) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def observe(self, metrics: dict[str, Any]) -> None:
        """Feed evaluation metrics (only `plateau` uses them)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def _cosine_factor(progress: float) -> float:
    progress = min(max(progress, 0.0), 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class Constant(LRSchedule):
    name = "constant"

    def lr(self, base_lr: float, pos: SchedulePosition) -> float:
        return base_lr


class WarmupCosine(LRSchedule):
    """Linear warm-up 0 -> 1 over W steps, then half-cosine to 0 at T steps (CXR-CLIP's LambdaLR)."""

    name = "warmup_cosine"

    def __init__(self, warmup_steps: int, total_steps: int, min_lr: float = 0.0) -> None:
        if total_steps <= 0:
            raise ConfigError(f"schedule: total steps must be > 0, got {total_steps}")
        self.warmup_steps, self.total_steps, self.min_lr = int(warmup_steps), int(total_steps), float(min_lr)

    def factor(self, k: int) -> float:
        w, t = self.warmup_steps, self.total_steps
        if k < w:
            return k / max(1, w)
        return max(0.0, _cosine_factor((k - w) / max(1, t - w)))

    def lr(self, base_lr: float, pos: SchedulePosition) -> float:
        return self.min_lr + (base_lr - self.min_lr) * self.factor(pos.step)


class StepDecay(LRSchedule):
    """base·gamma^(unit // step_size), unit = epoch or optimizer step (torch StepLR)."""

    name = "step"

    def __init__(self, step_size: int, gamma: float, interval: str) -> None:
        if step_size <= 0:
            raise ConfigError(f"schedule.step_size must be > 0, got {step_size}")
        self.step_size, self.gamma, self.interval = step_size, gamma, interval

    def lr(self, base_lr: float, pos: SchedulePosition) -> float:
        unit = pos.epoch if self.interval == "epoch" else pos.step
        return base_lr * self.gamma ** (unit // self.step_size)


class Exponential(LRSchedule):
    """base·gamma^unit (torch ExponentialLR)."""

    name = "exponential"

    def __init__(self, gamma: float, interval: str) -> None:
        self.gamma, self.interval = gamma, interval

    def lr(self, base_lr: float, pos: SchedulePosition) -> float:
        unit = pos.epoch if self.interval == "epoch" else pos.step
        return base_lr * self.gamma**unit


class Plateau(LRSchedule):
    """torch ReduceLROnPlateau (rel threshold) on `monitor`; multiplies every group's LR by `factor`."""

    name = "plateau"

    def __init__(
        self,
        monitor: str,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
    ) -> None:
        if not 0 < factor < 1:
            raise ConfigError(f"schedule.factor must be in (0, 1) for plateau, got {factor}")
        self.monitor, self.mode, self.factor = monitor, mode, factor
        self.patience, self.threshold, self.cooldown, self.min_lr = patience, threshold, cooldown, min_lr
        self.best: float | None = None
        self.bad_epochs = 0
        self.cooldown_left = 0
        self.scale = 1.0

    def _better(self, a: float, best: float) -> bool:
        if self.mode == "min":
            return a < best * (1.0 - self.threshold) if best >= 0 else a < best * (1.0 + self.threshold)
        return a > best * (1.0 + self.threshold) if best >= 0 else a > best * (1.0 - self.threshold)

    def observe(self, metrics: dict[str, Any]) -> None:
        if self.monitor not in metrics:
            return
        value = float(metrics[self.monitor])
        if self.best is None or self._better(value, self.best):
            self.best = value
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.bad_epochs = 0
        if self.bad_epochs > self.patience:
            self.scale *= self.factor
            self.cooldown_left = self.cooldown
            self.bad_epochs = 0

    def lr(self, base_lr: float, pos: SchedulePosition) -> float:
        return max(base_lr * self.scale, self.min_lr)

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "cooldown_left": self.cooldown_left,
            "scale": self.scale,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state.get("best")
        self.bad_epochs = int(state.get("bad_epochs", 0))
        self.cooldown_left = int(state.get("cooldown_left", 0))
        self.scale = float(state.get("scale", 1.0))


class WarmupCosineRestarts(LRSchedule):
    """katsura-jp CosineAnnealingWarmupRestarts as MGCA steps it (once per optimizer step).

    The first optimizer step runs at min_lr (the class's `init_lr` sets every group to min_lr and its first
    `step()` happens after the first optimizer step).
    """

    name = "linear_warmup_cosine_restarts"

    def __init__(
        self,
        cycle_steps: int,
        warmup_steps: int,
        min_lr: float,
        cycle_mult: float = 1.0,
        cycle_gamma: float = 1.0,
    ) -> None:
        if cycle_steps <= 0:
            raise ConfigError(f"schedule: cycle steps must be > 0, got {cycle_steps}")
        if warmup_steps >= cycle_steps:
            raise ConfigError(
                f"schedule: warm-up ({warmup_steps}) must be shorter than the cycle ({cycle_steps})"
            )
        self.cycle_steps, self.warmup_steps = int(cycle_steps), int(warmup_steps)
        self.min_lr, self.cycle_mult, self.cycle_gamma = float(min_lr), float(cycle_mult), float(cycle_gamma)

    def _locate(self, k: int) -> tuple[int, int, int]:
        """(cycle index, step in cycle, cycle length) of optimizer step k."""
        cycle, s, length = 0, k, self.cycle_steps
        while s >= length:
            s -= length
            cycle += 1
            length = int((length - self.warmup_steps) * self.cycle_mult) + self.warmup_steps
            if length <= 0:
                raise ConfigError("schedule: cycle length became 0 (cycle_mult too small)")
        return cycle, s, length

    def lr(self, base_lr: float, pos: SchedulePosition) -> float:
        cycle, s, length = self._locate(pos.step)
        peak = base_lr * self.cycle_gamma**cycle
        m, w = self.min_lr, self.warmup_steps
        if s < w:
            return m + (peak - m) * s / w
        return m + (peak - m) * _cosine_factor((s - w) / (length - w))


class TimmCosine(LRSchedule):
    """timm CosineLRScheduler (t in epochs, warmup_prefix, one cycle), with MAVL's in-epoch-0 warm-up."""

    name = "timm_cosine"

    def __init__(
        self,
        t_initial: float,
        warmup_t: int,
        warmup_lr_init: float,
        lr_min: float,
        iter_warmup_every: int | None = None,
    ) -> None:
        if t_initial <= 0:
            raise ConfigError(f"schedule: total epochs must be > 0 for timm_cosine, got {t_initial}")
        self.t_initial, self.warmup_t = float(t_initial), int(warmup_t)
        self.warmup_lr_init, self.lr_min = float(warmup_lr_init), float(lr_min)
        self.iter_warmup_every = iter_warmup_every

    def t_of(self, pos: SchedulePosition) -> int:
        if self.iter_warmup_every is None:
            return pos.epoch
        if pos.epoch == 0:
            i = pos.step_in_epoch
            return 0 if i == 0 else min((i - 1) // self.iter_warmup_every, self.warmup_t)
        return pos.epoch + self.warmup_t

    def lr_at_t(self, base_lr: float, t: float) -> float:
        if t < self.warmup_t:
            return self.warmup_lr_init + t * (base_lr - self.warmup_lr_init) / self.warmup_t
        tc = t - self.warmup_t
        if tc >= self.t_initial:
            return self.lr_min
        return self.lr_min + 0.5 * (base_lr - self.lr_min) * (1 + math.cos(math.pi * tc / self.t_initial))

    def lr(self, base_lr: float, pos: SchedulePosition) -> float:
        return self.lr_at_t(base_lr, self.t_of(pos))


def _warmup_steps(cfg: ScheduleConfig, steps_per_epoch: int, horizon: int) -> int:
    if cfg.warmup_steps is not None:
        return int(cfg.warmup_steps)
    if cfg.warmup_epochs is not None:
        return int(cfg.warmup_epochs * steps_per_epoch)
    if cfg.warmup_fraction is not None:
        return int(cfg.warmup_fraction * horizon)
    return 0


def build_schedule(
    cfg: ScheduleConfig, steps_per_epoch: int, epochs: int, max_steps: int | None = None
) -> LRSchedule:
    """Build the schedule of `cfg`; `steps_per_epoch` counts optimizer steps per epoch on one process."""
    spe = max(1, int(steps_per_epoch))
    if cfg.total_steps is not None:
        horizon = int(cfg.total_steps)
    elif cfg.total_epochs is not None:
        horizon = int(cfg.total_epochs * spe)
    else:
        horizon = spe * epochs
        if max_steps is not None:
            horizon = min(horizon, int(max_steps))
    name = cfg.name
    if name == "constant":
        return Constant()
    if name in ("warmup_cosine", "cosine"):
        w = _warmup_steps(cfg, spe, horizon) if name == "warmup_cosine" else 0
        return WarmupCosine(w, horizon, cfg.min_lr)
    if name == "step":
        return StepDecay(cfg.step_size, cfg.gamma, cfg.interval)
    if name == "exponential":
        return Exponential(cfg.gamma, cfg.interval)
    if name == "plateau":
        return Plateau(
            cfg.monitor, cfg.mode, cfg.factor, cfg.patience, cfg.threshold, cfg.cooldown, cfg.min_lr
        )
    if name == "linear_warmup_cosine_restarts":
        warm = _warmup_steps(cfg, spe, horizon)
        return WarmupCosineRestarts(horizon, warm, cfg.min_lr, cfg.cycle_mult, cfg.cycle_gamma)
    if name == "timm_cosine":
        t_initial = cfg.total_epochs if cfg.total_epochs is not None else epochs
        warmup_t = int(cfg.warmup_epochs or 0)
        w0 = cfg.warmup_start_lr if cfg.warmup_start_lr is not None else cfg.min_lr
        return TimmCosine(t_initial, warmup_t, w0, cfg.min_lr, cfg.iter_warmup_every)
    raise ConfigError(f"schedule.name: unknown schedule '{name}'")
