"""Quantiles of Monte-Carlo draws that make an interval cover as often as it claims.

A twin states a 90 % interval as the 5 % and 95 % quantiles of ``n`` posterior draws. The
truth it should cover is, if the posterior is right, one more draw from the same
distribution — and for ``n`` exchangeable draws and one more, ``P(new ≤ X₍ₖ₎) = k/(n+1)``
whatever the distribution. numpy's default quantile (Hyndman & Fan's type 7, position
``1 + p(n−1)``) puts the 5–95 % interval between order statistics ``≈ 5.95`` and
``95.05`` of 100 draws, which covers ``(95.05 − 5.95)/101 = 88.2 %``: 1.8 points short with
100 draws, 0.4 with 500. Type 6 (``method="weibull"``, position ``p(n+1)``; Hyndman & Fan,
Am Stat 1996;50:361) covers exactly ``p_high − p_low`` for any ``n``
(tests/twin/test_intervals.py checks both by simulation). The median is the same in both.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["QUANTILE_METHOD", "draw_quantiles"]

QUANTILE_METHOD = "weibull"


def draw_quantiles(draws, q: float | Sequence[float], axis: int | None = None) -> np.ndarray:
    """``np.quantile(draws, q, axis)`` at the Weibull positions ``q (n + 1)``: the bounds
    of an interval over Monte-Carlo draws that covers a new draw with probability equal to
    its nominal level (see the module doc)."""
    return np.quantile(draws, q, axis=axis, method=QUANTILE_METHOD)
