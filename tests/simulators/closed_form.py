"""Textbook closed-form solutions of linear mammillary PK models, in plain numpy.

This module is the independent reference for the engine tests: it does not import twinsim
and shares no code with it. Concentrations are built by superposition of single-dose
solutions, each a sum of exponentials, as in

- Gibaldi M, Perrier D. *Pharmacokinetics*, 2nd ed. Marcel Dekker; 1982: ch. 1-2
  (one-compartment bolus, infusion, first-order absorption), ch. 3 (multicompartment
  models, macro constants α, β and their coefficients), ch. 10 and appendix C (the
  n-compartment mammillary disposition function), ch. 3/10 (repeated dosing, the
  accumulation factor ``1 / (1 - e^{-λτ})`` per exponential).
- Rowland M, Tozer TN. *Clinical Pharmacokinetics and Pharmacodynamics*, 4th ed.
  Lippincott Williams & Wilkins; 2011: ch. 11 (constant-rate infusion), ch. 12 (multiple
  dosing and steady state).
- Beal SL, Sheiner LB, Boeckmann AJ, Bauer RJ. *NONMEM Users Guides*. Icon; 1989-2020:
  ADVAN1-4/11/12 (the same closed forms in micro-constant form, macro constants of the
  3-compartment model from the cubic by the trigonometric method, SS=1 as the sum of the
  infinite series of past doses, F scaling the amount, ALAG shifting the dose time, an
  infusion given by RATE keeping its rate and one given by duration keeping its duration).

Models: central compartment (volume ``v``, elimination clearance ``cl``), up to two
peripheral compartments (``q``/``v2``, ``q3``/``v3``) and, for oral doses, a depot
emptying into the central compartment with rate constant ``ka``; bioavailability ``f``
and lag time ``tlag`` apply to oral doses only. Units: h, mg, L, L/h, mg/L.

The unit impulse response of the central amount to a dose into the central compartment
is ``g(t) = Σᵢ cᵢ e^{-λᵢ t}`` with (Gibaldi & Perrier, appendix C)

    cᵢ = Πⱼ (kⱼ₁ - λᵢ) / Π_{m≠i} (λₘ - λᵢ),

``kⱼ₁`` the return rate constant of peripheral compartment j, and λᵢ the disposition
macro constants (the eigenvalues of minus the system matrix).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np

__all__ = [
    "Administration",
    "concentration",
    "disposition",
    "impulse_response",
    "macro_constants_three",
    "macro_constants_two",
]


class Administration(NamedTuple):
    """One dosing record (NONMEM meaning of every field), route by name.

    ``route`` is ``"iv"`` (into the central compartment) or ``"oral"`` (into the depot,
    subject to ``f`` and ``tlag``). At most one of ``rate`` (mg/h) and ``duration`` (h)
    is > 0 for a zero-order input; both 0 is a bolus.
    """

    time: float
    amount: float
    route: Literal["iv", "oral"] = "iv"
    rate: float = 0.0
    duration: float = 0.0
    steady_state: bool = False
    interval: float = 0.0
    additional: int = 0


# --------------------------------------------------------------------------- macro constants


def macro_constants_two(k10: float, k12: float, k21: float) -> tuple[float, float]:
    """α > β of the two-compartment model (Gibaldi & Perrier 1982, eq. 3.13-3.14).

    ``α, β = ½ [(k12 + k21 + k10) ± √((k12 + k21 + k10)² - 4 k21 k10)]``.
    """
    s = k12 + k21 + k10
    root = math.sqrt(s * s - 4.0 * k21 * k10)
    return 0.5 * (s + root), 0.5 * (s - root)


def macro_constants_three(
    k10: float, k12: float, k21: float, k13: float, k31: float
) -> tuple[float, float, float]:
    """α > β > γ of the three-compartment model: roots of the cubic, trigonometric method.

    The macro constants are the roots of ``λ³ - a₂λ² + a₁λ - a₀ = 0`` with
    ``a₂ = k10 + k12 + k13 + k21 + k31``,
    ``a₁ = k10 k21 + k10 k31 + k12 k31 + k13 k21 + k21 k31``, ``a₀ = k10 k21 k31``
    (Gibaldi & Perrier 1982, ch. 3; NONMEM ADVAN11). With ``λ = x + a₂/3`` the cubic is
    ``x³ + p x + q = 0``, whose three real roots are
    ``x_k = 2 √(-p/3) cos(⅓ arccos((3q / 2p) √(-3/p)) - 2πk/3)``, k = 0, 1, 2.
    """
    a2 = k10 + k12 + k13 + k21 + k31
    a1 = k10 * k21 + k10 * k31 + k12 * k31 + k13 * k21 + k21 * k31
    a0 = k10 * k21 * k31
    p = a1 - a2 * a2 / 3.0
    q = -2.0 * a2**3 / 27.0 + a1 * a2 / 3.0 - a0
    cos_arg = (3.0 * q / (2.0 * p)) * math.sqrt(-3.0 / p)
    phi = math.acos(min(1.0, max(-1.0, cos_arg))) / 3.0
    amplitude = 2.0 * math.sqrt(-p / 3.0)
    roots = sorted(
        (amplitude * math.cos(phi - 2.0 * math.pi * k / 3.0) + a2 / 3.0 for k in range(3)),
        reverse=True,
    )
    return roots[0], roots[1], roots[2]


def disposition(
    cl: float, v: float, peripherals: Sequence[tuple[float, float]] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients ``c`` and macro constants ``λ`` of the central unit impulse response.

    Parameters
    ----------
    cl, v
        Elimination clearance (L/h) and central volume (L).
    peripherals
        ``(Q, V)`` of each peripheral compartment (0, 1 or 2 of them).

    Returns
    -------
    c, lam
        The amount in the central compartment ``t`` h after a unit bolus into it is
        ``Σ c[i] exp(-lam[i] t)`` (Gibaldi & Perrier 1982, appendix C).
    """
    k10 = cl / v
    k1j = [qj / v for qj, _ in peripherals]
    kj1 = [qj / vj for qj, vj in peripherals]
    if len(peripherals) == 0:
        lam = [k10]
    elif len(peripherals) == 1:
        lam = list(macro_constants_two(k10, k1j[0], kj1[0]))
    elif len(peripherals) == 2:
        lam = list(macro_constants_three(k10, k1j[0], kj1[0], k1j[1], kj1[1]))
    else:
        raise ValueError(f"`peripherals` must have 0, 1 or 2 entries, got {len(peripherals)}")
    c = []
    for i, lam_i in enumerate(lam):
        numerator = math.prod(k - lam_i for k in kj1)
        denominator = math.prod(lam_m - lam_i for m, lam_m in enumerate(lam) if m != i)
        c.append(numerator / denominator)
    return np.array(c), np.array(lam)


def impulse_response(
    route: str, c: np.ndarray, lam: np.ndarray, ka: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """Central amount after a unit input by ``route`` as ``Σ b[j] exp(-mu[j] t)``.

    IV: the disposition function itself. Oral (first-order absorption from a depot), the
    convolution of ``ka e^{-ka t}`` with it (Gibaldi & Perrier 1982, eq. 1.81 and 3.63):
    ``Σᵢ cᵢ ka/(ka - λᵢ) (e^{-λᵢ t} - e^{-ka t})``.
    """
    if route == "iv":
        return c.copy(), lam.copy()
    if route == "oral":
        if ka is None:
            raise ValueError("oral doses need `ka`")
        b = c * ka / (ka - lam)
        return np.append(b, -b.sum()), np.append(lam, ka)
    raise ValueError(f"`route` must be 'iv' or 'oral', got {route!r}")


# --------------------------------------------------------------------------- superposition


def _single(u: np.ndarray, b, mu, amount, rate, duration, include_zero: bool) -> np.ndarray:
    """Central amount ``u`` h after the (lagged) start of one dose; 0 before it."""
    u = np.asarray(u, dtype=float)
    out = np.zeros_like(u)
    if rate == 0.0:  # bolus (Gibaldi & Perrier eq. 1.8, 3.2)
        on = u >= 0 if include_zero else u > 0
        out[on] = amount * np.sum(b[:, None] * np.exp(-mu[:, None] * u[None, on]), axis=0)
        return out
    # zero-order input of `rate` for `duration` (Rowland & Tozer ch. 11; G&P eq. 2.2, 2.10)
    during = (u > 0) & (u <= duration)
    after = u > duration
    scale = rate * b / mu
    out[during] = np.sum(scale[:, None] * -np.expm1(-mu[:, None] * u[None, during]), axis=0)
    out[after] = np.sum(
        (scale * -np.expm1(-mu * duration))[:, None]
        * np.exp(-mu[:, None] * (u[None, after] - duration)),
        axis=0,
    )
    return out


def _tail_coefficients(b, mu, amount, rate, duration) -> np.ndarray:
    """``a`` with ``single(u) = Σ a[j] exp(-mu[j] u)`` for every ``u`` after the input ended."""
    if rate == 0.0:
        return amount * b
    return rate * b / mu * np.expm1(mu * duration)


def concentration(
    times: Sequence[float] | np.ndarray,
    administrations: Sequence[Administration],
    *,
    cl: float,
    v: float,
    q: float | None = None,
    v2: float | None = None,
    q3: float | None = None,
    v3: float | None = None,
    ka: float | None = None,
    f: float = 1.0,
    tlag: float = 0.0,
    at_dose: Literal["pre", "post"] = "pre",
) -> np.ndarray:
    """Central concentration (mg/L) at ``times`` after ``administrations``, by superposition.

    Parameters
    ----------
    times
        Output times, h, from the start (t = 0, nothing in the body).
    administrations
        Dosing records. ``additional`` (ADDL) repeats a record every ``interval`` (II).
        ``steady_state`` (SS=1) discards every record before it and replaces the record
        by the infinite train of the same dose every ``interval`` ending with it.
    cl, v, q, v2, q3, v3
        Clearances (L/h) and volumes (L); give ``q, v2`` for two and also ``q3, v3`` for
        three compartments.
    ka, f, tlag
        Absorption rate constant (1/h), bioavailability and lag time (h) of oral doses.
    at_dose
        At the exact time a bolus enters: ``"pre"`` excludes it, ``"post"`` includes it.

    Notes
    -----
    Oral doses: the amount is ``f × amount`` and the dose enters at ``time + tlag``. An
    infusion given by ``rate`` keeps the rate (duration ``f × amount / rate``), one given
    by ``duration`` keeps the duration (rate ``f × amount / duration``).

    Steady state (SS=1, Rowland & Tozer ch. 12): with ``s`` the time since the (lagged)
    start of the SS dose, the central amount is ``Σ_{k≥0} single(s + kτ)``. Past doses
    (k ≥ 1) have ended (the infusion time is at most τ), so each is a sum of exponentials
    and the series sums, per exponential, to ``a e^{-μ u} · e^{-μτ} / (1 - e^{-μτ})``
    (the accumulation factor). Before the lagged start (``s < 0``, a lag time) the train's
    last delivered dose is the one ``⌈-s/τ⌉`` intervals earlier (NONMEM's semantics).
    """
    times = np.asarray(times, dtype=float)
    peripherals = [(qj, vj) for qj, vj in ((q, v2), (q3, v3)) if qj is not None]
    c, lam = disposition(cl, v, peripherals)
    include_zero = at_dose == "post"

    records: list[Administration] = []
    for adm in administrations:
        records.append(adm._replace(additional=0))
        records.extend(
            adm._replace(time=adm.time + k * adm.interval, steady_state=False, additional=0)
            for k in range(1, adm.additional + 1)
        )
    ss_times = np.array([r.time for r in records if r.steady_state])

    amount_central = np.zeros_like(times)
    for adm in records:
        b, mu = impulse_response(adm.route, c, lam, ka)
        oral = adm.route == "oral"
        amount = adm.amount * (f if oral else 1.0)
        start = adm.time + (tlag if oral else 0.0)
        if adm.rate > 0:
            rate, duration = adm.rate, amount / adm.rate
        elif adm.duration > 0:
            rate, duration = amount / adm.duration, adm.duration
        else:
            rate, duration = 0.0, 0.0
        s = times - start
        if not adm.steady_state:
            contribution = _single(s, b, mu, amount, rate, duration, include_zero)
        else:
            tau = adm.interval
            # u = s + kτ for the last dose of the train delivered by then: u > 0 ("pre",
            # a dose at exactly this time not yet given) or u ≥ 0 ("post")
            if include_zero:
                shifts = np.where(s < 0, np.ceil(-s / tau), 0.0)
            else:
                shifts = np.where(s <= 0, np.floor(-s / tau) + 1.0, 0.0)
            u = s + shifts * tau
            a = _tail_coefficients(b, mu, amount, rate, duration)
            accumulation = np.exp(-mu * tau) / -np.expm1(-mu * tau)
            past = np.sum((a * accumulation)[:, None] * np.exp(-mu[:, None] * u[None, :]), axis=0)
            contribution = _single(u, b, mu, amount, rate, duration, include_zero) + past
            contribution = np.where(times >= adm.time, contribution, 0.0)
        # SS=1 resets the system at its record time (before any output or dose at that
        # time): nothing of an earlier record counts from then on
        later = ss_times[ss_times > adm.time]
        if later.size:
            contribution = np.where(times >= later.min(), 0.0, contribution)
        amount_central += contribution
    return amount_central / v
