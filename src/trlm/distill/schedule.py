"""TAID's adaptive interpolation schedule for t (Shing et al. 2025, ``TAID.update_t``; reference B.2).

Once per **optimizer** step, fed that step's TAID loss averaged over micro-batches and processes::

    first step:  prev_loss = J; no update
    δ  = (prev_loss − J) / (prev_loss + 1e-15)           relative decrease of the loss
    m  = β·m + (1 − β)·δ                                   momentum of δ
    Δt = α · sigmoid(m) · (1 − t)
    t_lin = t_start + (t_end − t_start) · step / total_steps
    t  = t_lin                              without the adaptive update
       = min(t_end, max(t_lin, t + Δt))     otherwise: monotone, never below the linear floor
    prev_loss = J

**α and run length.** With β = 0.99, m stays near 0 and Δt ≈ α/2·(1 − t): at the official α = 5e-4 the adaptive
step only outpaces the linear floor after ~4,000 steps, so any shorter run is the linear schedule in disguise. The
official runs were ~15,600 optimizer steps (UltraChat-200k, 5 epochs, batch 64); :func:`scaled_alpha` keeps the
official trajectory's shape on a run of any length by scaling α by 15,600 / total_steps (``--taid-alpha auto``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

OFFICIAL_ALPHA = 5e-4
OFFICIAL_STEPS = 15_600


def scaled_alpha(total_steps: int, alpha: float = OFFICIAL_ALPHA, reference_steps: int = OFFICIAL_STEPS) -> float:
    """α for a run of ``total_steps``: the official α at the official run length, scaled inversely with length."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    return alpha * reference_steps / total_steps


@dataclass
class TAIDSchedule:
    """The state (t, prev_loss, m) and its update; ``state_dict()`` goes into every checkpoint."""

    t_start: float = 0.4
    t_end: float = 1.0
    alpha: float = OFFICIAL_ALPHA
    beta: float = 0.99
    adaptive: bool = True

    def __post_init__(self):
        if not 0.0 <= self.t_start <= self.t_end <= 1.0:
            raise ValueError(f"TAID needs 0 <= t_start <= t_end <= 1, got t_start={self.t_start}, t_end={self.t_end}")
        if self.alpha < 0 or not 0.0 <= self.beta < 1.0:
            raise ValueError(f"TAID needs alpha >= 0 and beta in [0, 1), got alpha={self.alpha}, beta={self.beta}")
        self.t = self.t_start
        self.prev_loss = math.inf
        self.m = 0.0

    def step(self, loss: float, step: int, total_steps: int) -> float:
        """Update t after optimizer step ``step`` (1-based count of steps done) of ``total_steps``; return t."""
        if not math.isfinite(loss):
            raise ValueError(f"TAID schedule: the loss is {loss} at step {step}; lower --lr")
        if math.isinf(self.prev_loss):
            self.prev_loss = loss
            return self.t
        delta = (self.prev_loss - loss) / (self.prev_loss + 1e-15)
        self.m = self.beta * self.m + (1 - self.beta) * delta
        t_lin = self.t_start + (self.t_end - self.t_start) * min(1.0, step / total_steps)
        if self.adaptive:
            dt = self.alpha * _sigmoid(self.m) * (1 - self.t)
            self.t = min(self.t_end, max(t_lin, self.t + dt))
        else:
            self.t = t_lin
        self.prev_loss = loss
        return self.t

    def state_dict(self) -> dict:
        return {"t": self.t, "prev_loss": self.prev_loss, "m": self.m}

    def load_state_dict(self, state: dict) -> None:
        self.t, self.prev_loss, self.m = float(state["t"]), float(state["prev_loss"]), float(state["m"])


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
