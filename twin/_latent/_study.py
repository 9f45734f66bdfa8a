"""Virtual vancomycin patients from three 'true' processes, for the latent twin's study.

- ``"published"``: Goti 2018 exactly (the prior is right);
- ``"genomic"``: clearance × ``GENOMIC_FOLD`` in CYP3A5 expressers (any ``*1`` allele) — a
  *synthetic* effect (vancomycin is not a CYP3A5 substrate) that the published model
  lacks and the latent model sees only as the ``cyp3a5`` covariate column;
- ``"structural"``: clearance falling over days, ``CL(t) = CL · (F + (1 − F) e^(−t/τ))``
  with ``F = DECLINE_FLOOR``, ``τ = DECLINE_TIME`` (worsening renal function), a
  time-varying departure no covariate model can express.

Covariates: weight, CrCL, age, sex, ancestry, CYP3A5 diplotype (Hardy–Weinberg by
ancestry). Regimens: ``"train"`` 15 mg/kg every 12 h (1 h infusions, rounded to 250 mg)
for 3 days; ``"heldout"`` 25 mg/kg every 24 h (2 h infusions) — never seen in training.
Levels: up to four per patient at jittered peak/trough/mid-interval times over 72 h,
with the published residual error (3.4 mg/L + 22.7 %); a level below ``LLOQ`` (2 mg/L, a
typical immunoassay's limit) is reported as censored, as a laboratory would.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from ...priors import ANCESTRIES, GENES, Covariate, vancomycin_model
from ...priors import diplotype_frequencies as _diplotypes
from ...simulators import Dose, DosingEvents, ODEModel
from ...simulators._model import Named

__all__ = ["KINDS", "LLOQ", "simulate_patients", "true_model"]

KINDS = ("published", "genomic", "structural")
GENOMIC_FOLD = 1.6
DECLINE_FLOOR, DECLINE_TIME = 0.45, 36.0
HORIZON = 72.0
LLOQ = 2.0  # mg/L


def _declining(structural: ODEModel) -> ODEModel:
    s = structural
    i_cl = s.parameters.index("cl")

    def rhs(t, y, p):
        fall = DECLINE_FLOOR + (1.0 - DECLINE_FLOOR) * jnp.exp(-t / DECLINE_TIME)
        theta = p._array * jnp.ones_like(p._array).at[i_cl].set(fall)
        return s.rhs(t, y, Named(s.parameters, theta))

    return ODEModel(
        name=f"{s.name}_declining_cl", states=s.states, parameters=s.parameters, rhs=rhs,
        outputs=dict(s.outputs), output_units=dict(s.output_units), linear=False,
        routes=dict(s.routes), citation=s.citation,
    )  # fmt: skip


def true_model(kind: str):
    """The population model that generates patients of ``kind`` (see the module doc)."""
    pm = vancomycin_model()
    if kind == "published":
        return pm
    if kind == "genomic":
        base = pm.parameters

        def parameters(th, cov):
            out = dict(base(th, cov))
            out["cl"] = out["cl"] * GENOMIC_FOLD ** cov["cyp3a5_expresser"]
            return out

        extra = Covariate("cyp3a5_expresser", "1", 0.0, range=(0.0, 1.0))
        return pm.replace(name="vancomycin_cyp3a5", parameters=parameters,
                          covariates=(*pm.covariates, extra))  # fmt: skip
    if kind == "structural":
        return pm.replace(name="vancomycin_declining", structural=_declining(pm.structural))
    raise ValueError(f"`kind` must be one of {list(KINDS)}, got {kind!r}")


def _covariates(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    weight = np.clip(rng.lognormal(math.log(78.0), 0.22, n), 40.0, 160.0)
    crcl = np.clip(rng.normal(85.0, 30.0, n), 20.0, 150.0)
    female = (rng.random(n) < 0.5).astype(float)
    age = np.clip(rng.normal(58.0, 16.0, n), 18.0, 95.0)
    ancestry = rng.choice(np.array(ANCESTRIES), size=n, p=[0.5, 0.2, 0.3])
    cyp3a5 = np.empty(n, dtype=object)
    for group in ANCESTRIES:
        rows = np.flatnonzero(ancestry == group)
        freq = _diplotypes("CYP3A5", group)
        names = list(freq)
        cyp3a5[rows] = rng.choice(
            names, size=rows.size, p=np.array(list(freq.values())) / sum(freq.values())
        )
    gene = GENES["CYP3A5"]
    expresser = np.array([float(gene.activity_score(d) > 0) for d in cyp3a5])
    return {"weight": weight, "crcl": crcl, "dialysis": np.zeros(n), "age": age,
            "female": female, "ancestry": ancestry.astype(object), "cyp3a5": cyp3a5,
            "cyp3a5_expresser": expresser}  # fmt: skip


def regimen_doses(regimen: str, weight: float) -> list[Dose]:
    """The doses of ``"train"`` or ``"heldout"`` for one patient (mg, h)."""
    if regimen == "train":
        amount, interval, hours = 15.0, 12.0, 1.0
    elif regimen == "heldout":
        amount, interval, hours = 25.0, 24.0, 2.0
    else:
        raise ValueError(f"`regimen` must be 'train' or 'heldout', got {regimen!r}")
    dose = max(250.0, round(amount * weight / 250.0) * 250.0)
    return [
        Dose(float(t), dose, compartment=0, rate=dose / hours)
        for t in np.arange(0.0, HORIZON, interval)
    ]


def _sampling_times(regimen: str, rng: np.random.Generator) -> np.ndarray:
    interval = 12.0 if regimen == "train" else 24.0
    hours = 1.0 if regimen == "train" else 2.0
    nominal = [hours + 1.0, interval - 0.5, 36.0 + 2.0, HORIZON - 0.5]
    jitter = rng.uniform(-0.4, 0.4, len(nominal))
    return np.sort(np.clip(np.array(nominal) + jitter, 0.1, HORIZON))


def simulate_patients(kind: str, n: int, seed: int, regimen: str = "train") -> dict[str, Any]:
    """``n`` virtual patients of ``kind`` on ``regimen``.

    Returns
    -------
    dict
        ``covariates`` (columns, incl. the truth-only ``cyp3a5_expresser``), ``doses``
        (lists of Dose), ``times`` ``[n, 4]`` h, ``observed`` and ``prediction`` (true,
        noise-free) ``[n, 4]`` mg/L, ``censored`` ``[n, 4]`` (observed below ``LLOQ``;
        the observed value is then 0), ``auc24`` (true AUC over 48–72 h, mg·h/L)
        and ``curve`` (the true concentrations on ``grid``, 48–72 h every 0.5 h).
    """
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    cov = _covariates(n, rng)
    doses = [regimen_doses(regimen, w) for w in cov["weight"]]
    times = np.stack([_sampling_times(regimen, rng) for _ in range(n)])
    pm = true_model(kind)
    events = DosingEvents.from_doses(doses)
    grid = np.linspace(48.0, 72.0, 49)
    both = np.concatenate([times, np.tile(grid, (n, 1))], axis=1)
    order = np.argsort(both, axis=1, kind="stable")
    sim = pm.simulate(seed, {k: v for k, v in cov.items() if k in pm.covariate_names},
                      events, np.take_along_axis(both, order, axis=1))  # fmt: skip
    inverse = np.argsort(order, axis=1)
    pred = np.take_along_axis(np.asarray(sim.prediction[..., 0]), inverse, axis=1)
    obs = np.take_along_axis(np.asarray(sim.observed[..., 0]), inverse, axis=1)
    k = times.shape[1]
    curve = pred[:, k:]
    auc24 = np.trapezoid(curve, grid, axis=1)
    censored = obs[:, :k] < LLOQ
    return {"covariates": cov, "doses": doses, "times": times,
            "observed": np.where(censored, 0.0, obs[:, :k]), "censored": censored,
            "prediction": pred[:, :k], "auc24": auc24, "curve": curve, "grid": grid}  # fmt: skip


def observation_lists(cohort: Mapping[str, Any], n_levels: int | None = None) -> list:
    """The first ``n_levels`` (time, value) pairs of each patient."""
    k = cohort["times"].shape[1] if n_levels is None else n_levels
    return [
        list(zip(t[:k], v[:k], strict=True))
        for t, v in zip(cohort["times"], cohort["observed"], strict=True)
    ]


def latent_covariates(cohort: Mapping[str, Any], rows: Any = None) -> dict[str, np.ndarray]:
    """The covariate columns a model sees (without the truth-only ``cyp3a5_expresser``)."""
    cov = {k: v for k, v in cohort["covariates"].items() if k != "cyp3a5_expresser"}
    return cov if rows is None else {k: v[rows] for k, v in cov.items()}
