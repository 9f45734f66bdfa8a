"""Exposure metrics (non-compartmental analysis) on simulated or observed profiles.

Every function takes ``times`` and ``conc`` with time on the last axis: ``conc`` is
``[..., time]`` and ``times`` is ``[time]`` (shared grid) or ``[..., time]`` (one grid per
profile). Leading axes (subjects, draws, ...) are batch axes, so the functions work on a
whole cohort at once and also under ``jax.jit`` and ``jax.vmap``.

Areas use the *linear-up/log-down* trapezoid rule (the default of PKNCA and Phoenix
WinNonlin, "lin up/log down"): a segment is integrated linearly when the concentration
rises or stays level, and log-linearly (as an exponential) when it falls and both ends are
positive. The log-down rule is exact for a mono-exponential decline. Values between
samples are interpolated by the same rule, so partial areas over ``[t1, t2]`` add up:
``AUC(a, b) + AUC(b, c) == AUC(a, c)``.

Two conventions matter at dose times:

- A value *at* a sample time is the sample; between samples it is the left limit of the
  interpolant. With the engine's default ``at_dose="pre"`` a sample at a dose time is the
  pre-dose value, so :func:`trough` at a dose time is the trough.
- Repeated sample times (pre- and post-dose value at the same time) are allowed: the
  zero-width segment between them adds no area, and a value at that time is the first
  (pre-dose) one.

Failed subjects carry NaN concentrations; their AUC, Cmax, ... are NaN as well (the
solver status says why). The terminal half-life is never NaN: when it cannot be
estimated, it is reported as 0 with ``estimable=False``.
"""

from __future__ import annotations

import functools
import math
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float

__all__ = [
    "AUC_METHODS",
    "ExposureMetrics",
    "HalfLife",
    "MetricsError",
    "auc",
    "auc_interval",
    "auc_tau",
    "cmax",
    "cmin",
    "exposure_metrics",
    "half_life",
    "tmax",
    "trough",
]

AUC_METHODS = ("linear-up/log-down", "linear")
AUCMethod = Literal["linear-up/log-down", "linear"]


class MetricsError(ValueError):
    """An exposure metric was requested with inconsistent inputs (shapes, times, windows)."""


class HalfLife(NamedTuple):
    """Terminal elimination estimate from a log-linear regression.

    Attributes
    ----------
    half_life
        ``ln 2 / lambda_z`` in h; 0 where not estimable.
    lambda_z
        Terminal elimination rate constant, 1/h; 0 where not estimable.
    r_squared
        Coefficient of determination of the regression of ``ln C`` on ``t``; 0 where not
        estimable.
    estimable
        ``False`` where the last points are not all positive and finite, their times do not
        differ, or they do not decline.
    """

    half_life: Float[Array, "..."]
    lambda_z: Float[Array, "..."]
    r_squared: Float[Array, "..."]
    estimable: Bool[Array, "..."]


class ExposureMetrics(NamedTuple):
    """All exposure metrics of :func:`exposure_metrics` (a pytree: it passes through ``jit``).

    Attributes
    ----------
    auc_last
        Area from the first to the last sample, concentration·h.
    auc_inf
        ``auc_last + C_last / lambda_z`` (observed last value); 0 where the half-life is
        not estimable (see ``half_life_estimable``).
    cmax, tmax, cmin
        Largest value and the (first) time it is reached, and smallest value, over all samples.
    half_life, lambda_z, r_squared, half_life_estimable
        As in :class:`HalfLife`.
    auc_tau
        Area over the dosing interval ``[start, start + tau]``; ``None`` without ``tau``.
    trough
        Value just before ``trough_at`` (pre-dose); ``None`` when not requested.
    """

    auc_last: Float[Array, "..."]
    auc_inf: Float[Array, "..."]
    cmax: Float[Array, "..."]
    tmax: Float[Array, "..."]
    cmin: Float[Array, "..."]
    half_life: Float[Array, "..."]
    lambda_z: Float[Array, "..."]
    r_squared: Float[Array, "..."]
    half_life_estimable: Bool[Array, "..."]
    auc_tau: Float[Array, "..."] | None = None
    trough: Float[Array, "..."] | None = None


# --------------------------------------------------------------------------- validation


def _host(x: Array) -> np.ndarray | None:
    """``x`` as a numpy array when it is concrete, ``None`` under tracing (jit, vmap, grad)."""
    if isinstance(x, jax.core.Tracer):
        return None
    return np.asarray(x)


def _prepare(times: ArrayLike, conc: ArrayLike, *, min_samples: int = 1) -> tuple[Array, Array]:
    """Broadcast ``times`` against ``conc`` (time last) after checking shapes and order."""
    conc = jnp.asarray(conc, dtype=float)
    times = jnp.asarray(times, dtype=conc.dtype)
    if conc.ndim == 0 or times.ndim == 0:
        raise MetricsError(
            f"`conc` and `times` need a time axis (last axis); got shapes {tuple(conc.shape)} and "
            f"{tuple(times.shape)}; pass arrays shaped [..., time]"
        )
    if times.shape[-1] != conc.shape[-1]:
        raise MetricsError(
            f"`times` has {times.shape[-1]} samples but `conc` has {conc.shape[-1]} along its last "
            "(time) axis; give one time per concentration"
        )
    if conc.shape[-1] < min_samples:
        raise MetricsError(
            f"`conc` has {conc.shape[-1]} samples along its time axis; this metric needs at least "
            f"{min_samples}"
        )
    try:
        shape = jnp.broadcast_shapes(times.shape, conc.shape)
    except ValueError:
        raise MetricsError(
            f"`times` of shape {tuple(times.shape)} does not broadcast against `conc` of shape "
            f"{tuple(conc.shape)}; give times as [time] or with the same leading axes as conc"
        ) from None
    host = _host(times)
    if host is not None:
        if not np.all(np.isfinite(host)):
            raise MetricsError("`times` must be finite (h); got NaN or infinite values")
        steps = np.diff(host, axis=-1)
        if np.any(steps < 0):
            where = np.argwhere(steps < 0)[0]
            raise MetricsError(
                f"`times` must be sorted in increasing order along the time axis; at index "
                f"{tuple(int(i) for i in where)} the next time {float(host[(*where[:-1], where[-1] + 1)])} h "
                f"is before {float(host[tuple(where)])} h; sort the samples by time"
            )
    return jnp.broadcast_to(times, shape), jnp.broadcast_to(conc, shape)


def _log_down(method: str) -> bool:
    if method not in AUC_METHODS:
        raise MetricsError(f"`method` must be one of {list(AUC_METHODS)}, got {method!r}")
    return method == "linear-up/log-down"


def _at(value: ArrayLike | None, batch_shape: tuple[int, ...], dtype, field: str) -> Array | None:
    if value is None:
        return None
    value = jnp.asarray(value, dtype=dtype)
    try:
        return jnp.broadcast_to(value, batch_shape)
    except ValueError:
        raise MetricsError(
            f"`{field}` of shape {tuple(value.shape)} does not broadcast to the batch shape "
            f"{batch_shape} of `conc` (its shape without the time axis)"
        ) from None


def _check_within(times: Array, value: Array | None, field: str) -> None:
    """Raise when concrete ``value`` lies outside the sampled time range."""
    if value is None:
        return
    host_t, host_v = _host(times), _host(value)
    if host_t is None or host_v is None:
        return  # traced: out-of-range values give NaN instead
    first, last = host_t[..., 0], host_t[..., -1]
    slack = _slack(np.abs(first), np.abs(last))
    bad = ~np.isfinite(host_v) | (host_v < first - slack) | (host_v > last + slack)
    if np.any(bad):
        i = tuple(int(k) for k in np.argwhere(np.atleast_1d(bad))[0])[: host_v.ndim]
        raise MetricsError(
            f"`{field}` = {float(host_v[i])} h lies outside the sampled times "
            f"[{float(first[i])}, {float(last[i])}] h; sample the profile over the whole window"
        )


def _slack(first, last, xp=np):
    """Rounding allowance at the ends of the sampled range (``start + tau`` may overshoot)."""
    return 64 * np.finfo(np.float64).eps * xp.maximum(xp.maximum(first, last), 1.0)


# --------------------------------------------------------------------------- segment rules


def _is_log_segment(c0: Array, c1: Array, log_down: bool) -> Array:
    """Whether a segment is integrated log-linearly: falling and both ends positive."""
    if not log_down:
        return jnp.zeros(jnp.broadcast_shapes(c0.shape, c1.shape), dtype=bool)
    return (c1 < c0) & (c1 > 0)


def _segment_area(dt: Array, c0: Array, c1: Array, use_log: Array) -> Array:
    """Area of one segment of width ``dt``; ``use_log`` chooses the exponential interpolant."""
    linear = 0.5 * dt * (c0 + c1)
    # Mean of the exponential c1 (1+x)^(1-s), s in [0, 1], is c1 x / log1p(x) with
    # x = (c0 - c1) / c1: the log1p form keeps full precision when c0 is close to c1.
    # Safe operands in the unused branch keep values and gradients finite (double where).
    safe_c1 = jnp.where(use_log, c1, 1.0)
    x = jnp.where(use_log, (c0 - c1) / safe_c1, 1.0)
    x_pos = x > 0
    safe_x = jnp.where(x_pos, x, 1.0)
    mean = jnp.where(x_pos, safe_c1 * safe_x / jnp.log1p(safe_x), safe_c1)
    return jnp.where(use_log, dt * mean, linear)


def _interpolate(c0: Array, c1: Array, frac: Array, use_log: Array) -> Array:
    """Value at fraction ``frac`` of a segment, by the segment's own rule."""
    linear = c0 + frac * (c1 - c0)
    safe_c0 = jnp.where(use_log, c0, 1.0)
    safe_ratio = jnp.where(use_log, c1 / safe_c0, 1.0)
    exponential = safe_c0 * jnp.exp(frac * jnp.log(safe_ratio))
    value = jnp.where(use_log, exponential, linear)
    return jnp.where(frac >= 1.0, c1, value)


def _take(a: Array, index: Array) -> Array:
    return jnp.take_along_axis(a, index[..., None], axis=-1)[..., 0]


def _cumulative_at(times: Array, conc: Array, at: Array, log_down: bool) -> tuple[Array, Array]:
    """Area from the first sample to ``at`` and the value at ``at`` (left limit).

    NaN where ``at`` lies outside the sampled range.
    """
    n = times.shape[-1]
    first, last = times[..., 0], times[..., -1]
    slack = _slack(jnp.abs(first), jnp.abs(last), jnp)
    inside = (at >= first - slack) & (at <= last + slack)
    at = jnp.clip(at, first, last)
    t0, t1 = times[..., :-1], times[..., 1:]
    c0, c1 = conc[..., :-1], conc[..., 1:]
    use_log = _is_log_segment(c0, c1, log_down)
    areas = _segment_area(t1 - t0, c0, c1, use_log)
    cumulative = jnp.concatenate(
        [jnp.zeros_like(areas[..., :1]), jnp.cumsum(areas, axis=-1)], axis=-1
    )
    # segment [t_i, t_i+1] with t_i < at <= t_i+1: the left limit at `at`
    first_not_before = jnp.sum(times < at[..., None], axis=-1)
    i = jnp.clip(first_not_before - 1, 0, n - 2)
    seg_t0, seg_t1 = _take(t0, i), _take(t1, i)
    seg_c0, seg_c1 = _take(c0, i), _take(c1, i)
    seg_log = _take(use_log, i)
    width = seg_t1 - seg_t0
    positive = width > 0
    frac = jnp.where(positive, (at - seg_t0) / jnp.where(positive, width, 1.0), 0.0)
    frac = jnp.clip(frac, 0.0, 1.0)
    value = _interpolate(seg_c0, seg_c1, frac, seg_log)
    area = _take(cumulative, i) + _segment_area(at - seg_t0, seg_c0, value, seg_log)
    return jnp.where(inside, area, jnp.nan), jnp.where(inside, value, jnp.nan)


# --------------------------------------------------------------------------- public metrics


def auc(
    times: ArrayLike, conc: ArrayLike, *, method: AUCMethod = "linear-up/log-down"
) -> Float[Array, "..."]:
    """Area under the curve from the first to the last sample (AUC\\ :sub:`last`).

    Parameters
    ----------
    times
        Sample times in h, ``[time]`` or ``[..., time]``, sorted.
    conc
        Concentrations ``[..., time]``.
    method
        ``"linear-up/log-down"`` (default) or ``"linear"`` (plain trapezoid).

    Returns
    -------
    Array
        AUC per profile, shape ``conc.shape[:-1]``, in concentration·h (mg·h/L for mg/L).

    Raises
    ------
    MetricsError
        For mismatched shapes, fewer than 2 samples, unsorted times or an unknown method.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> t = jnp.array([0.0, 1.0, 2.0])
    >>> round(float(auc(t, 8.0 * jnp.exp(-jnp.log(2.0) * t))), 6)  # exact: 6 / ln 2
    8.65617
    >>> float(auc(t, jnp.array([0.0, 2.0, 2.0])))
    3.0
    """
    log_down = _log_down(method)
    t, c = _prepare(times, conc, min_samples=2)
    use_log = _is_log_segment(c[..., :-1], c[..., 1:], log_down)
    return jnp.sum(_segment_area(jnp.diff(t, axis=-1), c[..., :-1], c[..., 1:], use_log), axis=-1)


def auc_interval(
    times: ArrayLike,
    conc: ArrayLike,
    start: ArrayLike,
    end: ArrayLike,
    *,
    method: AUCMethod = "linear-up/log-down",
) -> Float[Array, "..."]:
    """Area under the curve over ``[start, end]``, interpolating at the ends by the same rule.

    Parameters
    ----------
    times, conc
        As in :func:`auc`.
    start, end
        Interval limits in h, scalars or broadcastable to ``conc.shape[:-1]``; inside the
        sampled range. They need not be sample times.
    method
        ``"linear-up/log-down"`` (default) or ``"linear"``.

    Returns
    -------
    Array
        AUC over the interval per profile; NaN where (under ``jit``) a limit lies outside
        the sampled range.

    Raises
    ------
    MetricsError
        Besides the checks of :func:`auc`: ``end < start``, or (for concrete inputs) a limit
        outside the sampled times.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> t = jnp.array([0.0, 2.0, 4.0])
    >>> c = 8.0 * jnp.exp(-0.5 * t)
    >>> round(float(auc_interval(t, c, 1.0, 3.0)), 6)  # exact: 16 (e^-0.5 - e^-1.5)
    6.134408
    """
    log_down = _log_down(method)
    t, c = _prepare(times, conc, min_samples=2)
    start = _at(start, c.shape[:-1], c.dtype, "start")
    end = _at(end, c.shape[:-1], c.dtype, "end")
    _check_within(t, start, "start")
    _check_within(t, end, "end")
    host_s, host_e = _host(start), _host(end)
    if host_s is not None and host_e is not None and np.any(host_e < host_s):
        raise MetricsError(
            f"`end` must be ≥ `start`; got start {float(np.max(host_s))} h and end "
            f"{float(np.min(host_e))} h; swap them"
        )
    return _auc_interval_core(t, c, start, end, log_down=log_down)


@functools.partial(jax.jit, static_argnames="log_down")
def _auc_interval_core(t, c, start, end, *, log_down: bool):
    # one program per shape (op by op, each new shape compiled ~40 small programs)
    area_end, _ = _cumulative_at(t, c, end, log_down)
    area_start, _ = _cumulative_at(t, c, start, log_down)
    return area_end - area_start


def auc_tau(
    times: ArrayLike,
    conc: ArrayLike,
    start: ArrayLike,
    tau: ArrayLike,
    *,
    method: AUCMethod = "linear-up/log-down",
) -> Float[Array, "..."]:
    """Area under the curve over one dosing interval ``[start, start + tau]``.

    At steady state this is ``F·dose / CL`` for a linear model.

    Parameters
    ----------
    times, conc, method
        As in :func:`auc`.
    start
        Start of the dosing interval (a dose time), h.
    tau
        Dosing interval, h, > 0.

    Returns
    -------
    Array
        AUC over the interval per profile.

    Raises
    ------
    MetricsError
        For ``tau ≤ 0`` or an interval outside the sampled times, and as :func:`auc_interval`.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> t = jnp.linspace(0.0, 24.0, 25)
    >>> float(auc_tau(t, jnp.full(25, 2.0), 12.0, 12.0))
    24.0
    """
    tau_host = _host(jnp.asarray(tau))
    if tau_host is not None and np.any(~(tau_host > 0)):
        raise MetricsError(
            f"`tau` (dosing interval) must be > 0 h, got {np.unique(tau_host).tolist()}"
        )
    start = jnp.asarray(start, dtype=float)
    return auc_interval(
        times, conc, start, start + jnp.asarray(tau, dtype=start.dtype), method=method
    )


def _window(times: Array, start: Array | None, end: Array | None) -> Array:
    mask = jnp.ones(times.shape, dtype=bool)
    if start is not None:
        mask &= times >= start[..., None]
    if end is not None:
        mask &= times <= end[..., None]
    return mask


def _extreme(times, conc, start, end, *, largest: bool) -> tuple[Array, Array]:
    t, c = _prepare(times, conc)
    start = _at(start, c.shape[:-1], c.dtype, "start")
    end = _at(end, c.shape[:-1], c.dtype, "end")
    mask = _window(t, start, end)
    host = _host(mask)
    if host is not None and not np.all(np.any(host, axis=-1)):
        raise MetricsError(
            "the window [`start`, `end`] contains no sample for some profile; widen the window "
            "or sample inside it"
        )
    fill = -jnp.inf if largest else jnp.inf
    masked = jnp.where(mask, c, fill)
    index = jnp.argmax(masked, axis=-1) if largest else jnp.argmin(masked, axis=-1)
    value = _take(masked, index)
    # NaN propagates (argmax finds it); an empty traced window gives NaN, not ±inf
    value = jnp.where(jnp.any(mask, axis=-1), value, jnp.nan)
    when = jnp.where(jnp.isnan(value), jnp.nan, _take(t, index))
    return value, when


def cmax(
    times: ArrayLike,
    conc: ArrayLike,
    *,
    start: ArrayLike | None = None,
    end: ArrayLike | None = None,
) -> Float[Array, "..."]:
    """Largest sampled value, optionally within ``[start, end]`` (e.g. Cmax,ss in one interval).

    Parameters
    ----------
    times, conc
        As in :func:`auc`.
    start, end
        Optional window in h, both ends included: with pre- and post-dose samples at the
        same time, both count (end the window before a dose to leave its post-dose value out).

    Returns
    -------
    Array
        Cmax per profile; NaN for a failed (NaN) profile.

    Raises
    ------
    MetricsError
        For mismatched shapes, unsorted times, or a window without samples.

    Examples
    --------
    >>> float(cmax([0.0, 1.0, 2.0], [0.0, 3.0, 1.0]))
    3.0
    """
    return _extreme(times, conc, start, end, largest=True)[0]


def tmax(
    times: ArrayLike,
    conc: ArrayLike,
    *,
    start: ArrayLike | None = None,
    end: ArrayLike | None = None,
) -> Float[Array, "..."]:
    """Time of the largest sampled value (the first one on ties), h.

    Parameters and errors as :func:`cmax`.

    Examples
    --------
    >>> float(tmax([0.0, 1.0, 2.0], [0.0, 3.0, 1.0]))
    1.0
    """
    return _extreme(times, conc, start, end, largest=True)[1]


def cmin(
    times: ArrayLike,
    conc: ArrayLike,
    *,
    start: ArrayLike | None = None,
    end: ArrayLike | None = None,
) -> Float[Array, "..."]:
    """Smallest sampled value, optionally within ``[start, end]``.

    Parameters and errors as :func:`cmax`.

    Examples
    --------
    >>> float(cmin([0.0, 1.0, 2.0], [0.5, 3.0, 1.0], start=1.0))
    1.0
    """
    return _extreme(times, conc, start, end, largest=False)[0]


def trough(
    times: ArrayLike, conc: ArrayLike, at: ArrayLike, *, method: AUCMethod = "linear-up/log-down"
) -> Float[Array, "..."]:
    """Value just before time ``at`` (pre-dose): the trough when ``at`` is a dose time.

    A sample at ``at`` is returned as is (the first one if the time repeats; the engine's
    default ``at_dose="pre"`` makes it the pre-dose value). Between samples the value is
    interpolated from the left by the AUC rule (linear rising, exponential falling).

    Parameters
    ----------
    times, conc, method
        As in :func:`auc`.
    at
        Time in h, scalar or one per profile, inside the sampled range.

    Returns
    -------
    Array
        Value per profile.

    Raises
    ------
    MetricsError
        For mismatched shapes, unsorted times, or (for concrete inputs) ``at`` outside the
        sampled range.

    Examples
    --------
    >>> float(trough([0.0, 12.0, 12.0, 24.0], [0.0, 1.5, 9.5, 2.0], 12.0))  # pre- and post-dose at 12 h
    1.5
    """
    log_down = _log_down(method)
    t, c = _prepare(times, conc, min_samples=2)
    at = _at(at, c.shape[:-1], c.dtype, "at")
    _check_within(t, at, "at")
    return _trough_core(t, c, at, log_down=log_down)


@functools.partial(jax.jit, static_argnames="log_down")
def _trough_core(t, c, at, *, log_down: bool):
    return _cumulative_at(t, c, at, log_down)[1]


def _check_points(n_points: int, n_samples: int) -> int:
    if isinstance(n_points, bool) or int(n_points) != n_points or n_points < 2:
        raise MetricsError(
            f"`n_points` (terminal points for the half-life regression) must be a whole number "
            f"≥ 2, got {n_points!r}"
        )
    if n_points > n_samples:
        raise MetricsError(
            f"`n_points` = {n_points} exceeds the {n_samples} samples of the profile; use at most "
            f"{n_samples}"
        )
    return int(n_points)


def _half_life(t: Array, c: Array, n_points: int) -> HalfLife:
    tail_t, tail_c = t[..., -n_points:], c[..., -n_points:]
    usable = jnp.all(jnp.isfinite(tail_c) & (tail_c > 0), axis=-1)
    log_c = jnp.log(jnp.where(usable[..., None], tail_c, 1.0))
    dt = tail_t - jnp.mean(tail_t, axis=-1, keepdims=True)
    dy = log_c - jnp.mean(log_c, axis=-1, keepdims=True)
    sxx = jnp.sum(dt * dt, axis=-1)
    sxy = jnp.sum(dt * dy, axis=-1)
    syy = jnp.sum(dy * dy, axis=-1)
    spread = sxx > 0
    lambda_z = -sxy / jnp.where(spread, sxx, 1.0)
    ok = usable & spread & (lambda_z > 0)
    safe_lambda = jnp.where(ok, lambda_z, 1.0)
    r_squared = sxy * sxy / jnp.where(ok & (syy > 0), sxx * syy, 1.0)
    return HalfLife(
        half_life=jnp.where(ok, math.log(2.0) / safe_lambda, 0.0),
        lambda_z=jnp.where(ok, lambda_z, 0.0),
        r_squared=jnp.where(ok, r_squared, 0.0),
        estimable=ok,
    )


def half_life(times: ArrayLike, conc: ArrayLike, *, n_points: int = 3) -> HalfLife:
    """Terminal half-life by log-linear least squares on the last ``n_points`` samples.

    Never NaN: a profile whose last points are not all positive and finite, do not span
    distinct times or do not decline gets ``half_life = lambda_z = r_squared = 0`` and
    ``estimable = False``; filter on ``estimable``.

    Parameters
    ----------
    times, conc
        As in :func:`auc`. The last samples should lie in the terminal (log-linear) phase.
    n_points
        Number of terminal samples in the regression, ≥ 2 (default 3).

    Returns
    -------
    HalfLife
        ``(half_life [h], lambda_z [1/h], r_squared, estimable)``, each ``conc.shape[:-1]``.

    Raises
    ------
    MetricsError
        For mismatched shapes, unsorted times, or ``n_points`` < 2 or beyond the samples.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> t = jnp.array([0.0, 4.0, 8.0, 12.0])
    >>> hl = half_life(t, 10.0 * jnp.exp(-jnp.log(2.0) / 4.0 * t))
    >>> round(float(hl.half_life), 6), bool(hl.estimable)
    (4.0, True)
    >>> bool(half_life(t, jnp.array([0.0, 1.0, 2.0, 3.0])).estimable)  # still rising
    False
    """
    t, c = _prepare(times, conc)
    return _half_life(t, c, _check_points(n_points, c.shape[-1]))


def exposure_metrics(
    times: ArrayLike,
    conc: ArrayLike,
    *,
    tau: ArrayLike | None = None,
    start: ArrayLike | None = None,
    trough_at: ArrayLike | None = None,
    n_points: int = 3,
    method: AUCMethod = "linear-up/log-down",
) -> ExposureMetrics:
    """All exposure metrics of each profile at once.

    Parameters
    ----------
    times, conc, method
        As in :func:`auc`.
    tau
        Dosing interval, h. When given, ``auc_tau`` is the area over ``[start, start + tau]``
        and ``trough`` defaults to the value just before ``start + tau``.
    start
        Start of the dosing interval, h; default: ``tau`` before the last sample (the last
        interval of the profile). Needs ``tau``.
    trough_at
        Time of the trough (pre-dose value), h; default ``start + tau`` when ``tau`` is given.
    n_points
        Terminal samples for the half-life regression (default 3).

    Returns
    -------
    ExposureMetrics
        One array per metric, shape ``conc.shape[:-1]``; ``auc_tau`` and ``trough`` are
        ``None`` when not requested.

    Raises
    ------
    MetricsError
        As the individual metrics; also ``start`` without ``tau``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> t = jnp.linspace(0.0, 24.0, 97)
    >>> m = exposure_metrics(t, 10.0 * jnp.exp(-0.25 * t), tau=12.0, start=0.0)
    >>> round(float(m.auc_inf), 6), round(float(m.half_life), 6), round(float(m.trough), 6)
    (40.0, 2.772589, 0.497871)
    """
    log_down = _log_down(method)
    t, c = _prepare(times, conc, min_samples=2)
    n_points = _check_points(n_points, c.shape[-1])
    batch = c.shape[:-1]
    end = None
    if start is not None and tau is None:
        raise MetricsError(
            "`start` (of the dosing interval) needs `tau`; give the dosing interval or drop `start`"
        )
    if tau is not None:
        tau = _at(tau, batch, c.dtype, "tau")
        tau_host = _host(tau)
        if tau_host is not None and np.any(~(tau_host > 0)):
            raise MetricsError(
                f"`tau` (dosing interval) must be > 0 h, got {np.unique(tau_host).tolist()}"
            )
        if start is None:
            end = t[..., -1]  # exactly the last sample, not (last - tau) + tau
            start = end - tau
        else:
            start = _at(start, batch, c.dtype, "start")
            end = start + tau
        _check_within(t, start, "start")
        _check_within(t, end, "start + tau")
        if trough_at is None:
            trough_at = end
    if trough_at is not None:
        trough_at = _at(trough_at, batch, c.dtype, "trough_at")
        _check_within(t, trough_at, "trough_at")
    return _exposure_core(t, c, start, end, trough_at, n_points=n_points, log_down=log_down)


@functools.partial(jax.jit, static_argnames=("n_points", "log_down"))
def _exposure_core(
    t, c, start, end, trough_at, *, n_points: int, log_down: bool
) -> ExposureMetrics:
    use_log = _is_log_segment(c[..., :-1], c[..., 1:], log_down)
    auc_last = jnp.sum(
        _segment_area(jnp.diff(t, axis=-1), c[..., :-1], c[..., 1:], use_log), axis=-1
    )
    terminal = _half_life(t, c, n_points)
    safe_lambda = jnp.where(terminal.estimable, terminal.lambda_z, 1.0)
    auc_inf = jnp.where(terminal.estimable, auc_last + c[..., -1] / safe_lambda, 0.0)
    index_max = jnp.argmax(c, axis=-1)
    peak = _take(c, index_max)
    auc_over_tau = trough_value = None
    if end is not None:
        auc_over_tau = (
            _cumulative_at(t, c, end, log_down)[0] - _cumulative_at(t, c, start, log_down)[0]
        )
    if trough_at is not None:
        trough_value = _cumulative_at(t, c, trough_at, log_down)[1]
    return ExposureMetrics(
        auc_last=auc_last,
        auc_inf=auc_inf,
        cmax=peak,
        tmax=jnp.where(jnp.isnan(peak), jnp.nan, _take(t, index_max)),
        cmin=jnp.min(c, axis=-1),
        half_life=terminal.half_life,
        lambda_z=terminal.lambda_z,
        r_squared=terminal.r_squared,
        half_life_estimable=terminal.estimable,
        auc_tau=auc_over_tau,
        trough=trough_value,
    )
