"""The Laplace posterior corrected by importance sampling (``PatientTwin.fit("importance")``).

The Laplace approximation ``N(η̂, H⁻¹)`` is exact for a Gaussian posterior; a nonlinear
model's posterior with few or censored levels is skewed, and a Gaussian around its mode
then misplaces the interval (a vancomycin patient with one low level: Laplace mean of
η_CL 0.55, exact 0.35, 5 % quantile −0.01 against −0.40; tests/twin/test_importance.py
checks against quadrature). Sampling–importance resampling corrects it at a fraction of
NUTS's cost (Rubin 1988; for pharmacometric posteriors Dosne et al., J Pharmacokinet
Pharmacodyn 2016;43:583):

1. draw 256 proposals from a multivariate Student-t (ν = ``_DF``) centred at the mode
   with the Laplace covariance as its scale — heavier tails than a Gaussian's, so the
   weights stay bounded (Geweke, Econometrica 1989;57:1317);
2. weight each by ``p(η | data) / q(η)`` on the exact fit solves (all proposals in one
   compiled call; a failed solve weighs 0), and stabilise the weights by Pareto
   smoothing (PSIS, Vehtari et al., JMLR 2024;25:72, as :func:`arviz.psislw`);
3. draw ``M`` = 2 n (:func:`proposal_count`) from a Student-t with the weighted draws'
   mean and covariance and weigh them the same way (one step of adaptive importance
   sampling: a posterior with a long tail, as a latent twin's can have, gave Pareto k̂ up
   to 1.2 from the Laplace proposal alone and < 0.5 after it);
4. resample ``n`` draws in proportion to the last round's weights (systematic
   resampling).

Cost: 256 + M solves of the patient's history. Measured with n = 500 on the 2-core
machine at load 3–4 (``benchmarks/accuracy_study.py``): 0.04 s a vancomycin patient
(superposition; NUTS 3.2 s), 0.3 s a warfarin patient (semilinear engine); an ODE model's
solves cost more (theophylline: 40 ms each, 85 ms with a steady-state history, whose
Newton search runs proposal by proposal), so its fit takes tens of seconds.

The Pareto shape ``k̂`` of the last round says whether the weights can be trusted
(``k̂ < 0.7``); above it the proposal misses posterior mass the weights cannot recover,
and the fit warns and names NUTS. ``k̂`` and the weights' effective sample size are in
the diagnostics.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from ._clinical import PatientTwinError

if TYPE_CHECKING:
    from ._compiled import _Engine

__all__ = ["PARETO_K_LIMIT"]

_DF = 5.0  # the proposal's degrees of freedom
_STAGES = 2  # proposal rounds (one adaptation: see importance_draws)
_FIRST_ROUND = 256  # proposals of each round before the last
PARETO_K_LIMIT = 0.7  # above it the weights' estimate is unreliable (Vehtari et al. 2024)


def proposal_count(n: int) -> int:
    """Proposals of the last round for ``n`` resampled draws: 2 n, rounded up to a power of
    two ≥ 256 (one compiled program per size); the adaptive round before it draws
    ``_FIRST_ROUND``."""
    return max(_FIRST_ROUND, 1 << math.ceil(math.log2(2 * max(int(n), 1))))


def _student_t(key: jax.Array, mode: np.ndarray, chol: np.ndarray, m: int):
    """``m`` proposals ``[m, R]`` and their log density up to a constant common to all:
    ``−(ν + r)/2 · log(1 + |L⁻¹(η − η̂)|² / ν)``."""
    r = mode.size
    k1, k2 = jax.random.split(key)
    z = np.asarray(jax.random.normal(k1, (m, r)), np.float64)
    chi2 = np.asarray(jax.random.chisquare(k2, _DF, (m,)), np.float64)
    scale = np.sqrt(_DF / chi2)
    white = z * scale[:, None]
    log_q = -0.5 * (_DF + r) * np.log1p(np.sum(white**2, axis=1) / _DF)
    return mode[None] + white @ chol.T, log_q


def _systematic(weights: np.ndarray, n: int, u: float) -> np.ndarray:
    """Indices of ``n`` systematic resamples of normalised ``weights`` (offset ``u`` in
    [0, 1)): each proposal appears ⌊n w⌋ or ⌈n w⌉ times."""
    edges = np.cumsum(weights)
    edges[-1] = 1.0
    return np.searchsorted(edges, (u + np.arange(n)) / n, side="right")


def importance_draws(
    engine: _Engine,
    batch: Mapping[str, Any],
    mode: np.ndarray,
    covariance: np.ndarray,
    n: int,
    seed: int,
    *,
    stages: int = _STAGES,
) -> tuple[np.ndarray, dict[str, Any]]:
    """``n`` draws of η ``[n, R]`` from the importance-corrected Laplace posterior and the
    diagnostics (``pareto_k``, ``importance_ess``, ``proposals``, ``failed_solves``).
    ``stages``: proposal rounds, each after the first centred on the previous round's
    weighted mean with its weighted covariance."""
    import arviz as az

    m = proposal_count(n)
    key_resample, *keys = jax.random.split(jax.random.PRNGKey(seed), 1 + stages)
    centre, chol = np.asarray(mode, np.float64), np.linalg.cholesky(covariance)
    for stage, key in enumerate(keys):
        size = m if stage + 1 == stages else _FIRST_ROUND
        eta, log_q = _student_t(key, centre, chol, size)
        log_p = np.asarray(engine.log_posteriors(jnp.asarray(eta), batch), np.float64)
        failed = ~np.isfinite(log_p)
        if failed.all():
            raise PatientTwinError(
                "fit('importance'): every proposal's solve failed (the posterior could not "
                "be evaluated near its mode); use fit('laplace') or fit('nuts')"
            )
        log_w = np.where(failed, -np.inf, log_p - log_q)
        smoothed, k = az.psislw(log_w[~failed] - log_w[~failed].max())
        weights = np.zeros(size)
        weights[~failed] = np.exp(np.asarray(smoothed) - np.max(smoothed))
        weights /= weights.sum()
        if stage + 1 < stages:  # the next proposal: the weighted draws' mean and covariance
            centre = weights @ eta
            spread = (eta - centre).T @ ((eta - centre) * weights[:, None])
            chol = np.linalg.cholesky(spread + 1e-12 * np.eye(centre.size))
    u = float(jax.random.uniform(key_resample))
    draws = eta[_systematic(weights, int(n), u)]
    k = float(np.asarray(k))
    diagnostics = {
        "pareto_k": k,
        "importance_ess": float(1.0 / np.sum(weights**2)),
        "proposals": m + (stages - 1) * _FIRST_ROUND,
        "failed_solves": int(failed.sum()),
    }
    if not k < PARETO_K_LIMIT:
        warnings.warn(
            f"fit('importance'): Pareto k = {k:.2f} ≥ {PARETO_K_LIMIT} — the importance "
            "weights cannot correct the Laplace approximation for this patient (its "
            "posterior is far from Gaussian); use fit('nuts') for intervals you can trust",
            UserWarning,
            stacklevel=3,
        )
    return draws, diagnostics
