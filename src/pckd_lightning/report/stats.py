"""How sure a Δ vs KD is: its 95 % confidence interval, and how many seeds would resolve it (SciPy).

* Paired (rows that share seeds with KD): the differences ``row(seed) − kd(seed)`` over the common seeds,
  Student's t interval ``mean ± t(0.975, n−1) · sd / √n``.
* Welch (rows that share fewer than two seeds with KD): ``mean(row) − mean(kd) ± t(0.975, ν) · √(s₁²/n₁ + s₂²/n₂)``
  with the Welch–Satterthwaite ν.
* Seeds for 80 % power: the smallest n at which a two-sided paired t-test at α = 0.05 detects the observed
  effect ``d = mean / sd`` of the differences with probability 0.8; the power at n is
  ``P(|T| > t(0.975, n−1))`` for ``T`` noncentral t with n−1 degrees of freedom and noncentrality ``d·√n``.

An interval that includes 0 does not tell the row from KD: it is never called better or worse.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
POWER = 0.8
#: the most seeds :func:`seeds_for_power` looks at; a Δ that needs more is shown as "> MAX_SEEDS"
MAX_SEEDS = 1000
#: the largest noncentrality :func:`paired_power` evaluates: the power is 1 to double precision beyond it
MAX_SHIFT = 1e6
PAIRED = "paired"
WELCH = "Welch"


@dataclass(frozen=True)
class Interval:
    """A difference of means (percentage points) with its 95 % confidence interval."""

    test: str  # PAIRED or WELCH
    delta: float
    low: float
    high: float
    df: float
    #: the seeds compared: (common seeds,) when paired, (row's, KD's) for Welch
    sizes: tuple[int, ...]
    #: paired: seeds for 80 % power at the observed effect (None: more than MAX_SEEDS); Welch: None
    seeds_needed: int | None = None

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    @property
    def verdict(self) -> str:
        """``better``/``worse`` only where the interval excludes 0; else ``not resolved``."""
        if self.low > 0:
            return "better"
        if self.high < 0:
            return "worse"
        return "not resolved"


def paired_interval(differences: Sequence[float]) -> Interval | None:
    """Student's t interval of the mean paired difference, and the seeds 80 % power needs; None for n < 2."""
    n = len(differences)
    if n < 2:
        return None
    mean, sd = statistics.fmean(differences), statistics.stdev(differences)
    half = float(stats.t.ppf(1 - ALPHA / 2, n - 1)) * sd / math.sqrt(n)
    effect = mean / sd if sd > 0 else math.copysign(math.inf, mean) if mean else 0.0
    return Interval(PAIRED, mean, mean - half, mean + half, n - 1, (n,), seeds_for_power(effect))


def welch_interval(own: Sequence[float], kd: Sequence[float]) -> Interval | None:
    """Welch's interval of ``mean(own) − mean(kd)`` for samples without common seeds; None if either n < 2."""
    n1, n2 = len(own), len(kd)
    if n1 < 2 or n2 < 2:
        return None
    v1, v2 = statistics.variance(own) / n1, statistics.variance(kd) / n2
    delta = statistics.fmean(own) - statistics.fmean(kd)
    if v1 + v2 == 0:
        return Interval(WELCH, delta, delta, delta, n1 + n2 - 2, (n1, n2))
    df = (v1 + v2) ** 2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1))
    half = float(stats.t.ppf(1 - ALPHA / 2, df)) * math.sqrt(v1 + v2)
    return Interval(WELCH, delta, delta - half, delta + half, df, (n1, n2))


def paired_power(effect: float, n: np.ndarray | int) -> np.ndarray:
    """Power of the two-sided paired t-test (α = 0.05) with ``n`` pairs at standardized effect ``effect``."""
    n = np.asarray(n, dtype=float)
    df, critical = n - 1, stats.t.ppf(1 - ALPHA / 2, n - 1)
    # P(T < -c) as P(-T > c): SciPy's nct.cdf gives NaN far in the tail (d = 7 at n = 4, say), its sf does not
    # up to noncentralities of about 1e9; beyond 1e6 the power is 1 to double precision
    shift = np.clip(effect * np.sqrt(n), -MAX_SHIFT, MAX_SHIFT)
    return stats.nct.sf(critical, df, shift) + stats.nct.sf(critical, df, -shift)


def seeds_for_power(effect: float, power: float = POWER) -> int | None:
    """The fewest seeds (n >= 2) at which the paired t-test reaches ``power`` for effect ``d = mean / sd``;
    None when even MAX_SEEDS do not (a Δ of 0 never does)."""
    if math.isinf(effect):
        return 2  # the differences do not vary: any two seeds tell it
    if effect == 0 or math.isnan(effect):
        return None
    n = np.arange(2, MAX_SEEDS + 1)
    reached = np.nonzero(paired_power(abs(effect), n) >= power)[0]
    return int(n[reached[0]]) if reached.size else None
