"""Descriptive statistics of one column of numbers, computed in one place.

Means, medians, standard deviations and quantiles come from the standard library's `statistics`.
The 95% confidence interval needs Student's t distribution, which the standard library does not
have: it comes from scipy (the `stats` extra, `pip install 'nemo-gym[stats]'`, also in `dev`).
Without scipy the interval is left out rather than replaced by a normal approximation, which
would be far too narrow for the handful of repeats a run usually has.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

logger = logging.getLogger("nemo_gym.rewards")


@dataclass(frozen=True, slots=True)
class Summary:
    """One column's statistics. `std` is the sample standard deviation (0 for a single value);
    `minimum`, `maximum` and `median` keep the values' own type (an int column stays int)."""

    values: Sequence[float]
    n: int
    mean: float
    median: float
    std: float
    sem: float
    minimum: float
    maximum: float

    def percentile(self, p: int) -> float:
        return percentile(self.values, p)

    def confidence_interval(self, confidence: float = 0.95) -> tuple[float, float] | None:
        return confidence_interval(self.mean, self.sem, self.n, confidence)


def summarize(values: Sequence[float]) -> Summary:
    """The statistics of a non-empty column."""
    n = len(values)
    std = statistics.stdev(values) if n > 1 else 0.0
    return Summary(
        values=values,
        n=n,
        mean=statistics.fmean(values),
        median=statistics.median(values),
        std=std,
        sem=std / math.sqrt(n),
        minimum=min(values),
        maximum=max(values),
    )


def percentile(values: Sequence[float], p: int) -> float:
    """The p-th percentile (1 ≤ p ≤ 99), interpolated between the two nearest ranks (numpy's
    default method, `statistics`' "inclusive")."""
    if len(values) == 1:
        return float(values[0])
    return float(statistics.quantiles(values, n=100, method="inclusive")[p - 1])


@cache
def _t_quantile_function() -> Any | None:
    try:
        from scipy.stats import t
    except ImportError:
        logger.warning(
            "scipy is not installed: confidence intervals are left out (pip install 'nemo-gym[stats]')"
        )
        return None
    return t.ppf


def t_quantile(p: float, df: float) -> float | None:
    """Student's t quantile (scipy), or None when scipy is not installed."""
    ppf = _t_quantile_function()
    return None if ppf is None else float(ppf(p, df))


def confidence_interval(
    mean: float, sem: float, n: int, confidence: float = 0.95
) -> tuple[float, float] | None:
    """The t interval around `mean`; None for fewer than two values or without scipy."""
    if n <= 1:
        return None
    if sem == 0:
        return mean, mean
    t = t_quantile(0.5 + confidence / 2, n - 1)
    if t is None:
        return None
    return mean - t * sem, mean + t * sem
