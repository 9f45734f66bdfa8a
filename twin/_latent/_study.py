"""Virtual vancomycin patients from three 'true' processes, for the latent twin's study.

- ``"published"``: Goti 2018 exactly (the prior is right);
- ``"genomic"``: clearance × ``GENOMIC_FOLD`` (2.5) in CYP3A5 expressers (any ``*1``
  allele) — a *synthetic* effect (vancomycin is not a CYP3A5 substrate) that the published
  model lacks and the latent model sees only as the ``cyp3a5`` covariate column. Its size
  is chosen so the hidden effect is worth the issue's 25 %: the twin on the true process
  itself forecasts with 16 % less error than the mechanistic twin at a fold of 1.6 (the
  study's value before December 2026), 25 % at 2.0 and 35 % at 2.5
  (``benchmarks/genomic_fold_scan.py``); 2.5 is a little larger than CYP3A5's effect on
  tacrolimus, whose expressers start on 1.5–2× the dose (CPIC, Birdwell et al., Clin
  Pharmacol Ther 2015;98:19);
- ``"structural"``: clearance falling over days, ``CL(t) = CL · (F + (1 − F) e^(−t/τ))``
  with ``F = DECLINE_FLOOR``, ``τ = DECLINE_TIME`` (worsening renal function), a
  time-varying departure no covariate model can express.

Covariates: weight, CrCL, age, sex, ancestry, CYP3A5 diplotype (Hardy–Weinberg by
ancestry). Regimens: ``"train"`` 15 mg/kg every 12 h (1 h infusions, rounded to 250 mg)
for 3 days; ``"heldout"`` 25 mg/kg every 24 h (2 h infusions) — never seen in training.
Levels: up to four per patient at jittered peak/trough/mid-interval times over 72 h,
with the published residual error (3.4 mg/L + 22.7 %); a level below ``LLOQ`` (2 mg/L, a
typical immunoassay's limit) is reported as censored, as a laboratory would.

The evaluation (:func:`evaluate_study`, :func:`study_checks`, :func:`study_table`) forecasts
held-out patients' true AUC over 48–72 h and concentration curve from their first
0, 1, 2, 4 levels with each arm — ``mechanistic`` (PatientTwin on Goti 2018, Laplace),
``oracle`` (PatientTwin on the true process itself, the best any model could do; not for
``"published"``, where it is the mechanistic twin), ``hybrid`` (PatientTwin on the trained
latent model, Laplace over z), ``hybrid_encoder`` (its amortised encoder) and
``neural_encoder`` (the neural-only model's encoder); on request the two twins fitted by
``fit("importance")`` (``mechanistic_importance``, ``hybrid_importance``) and by NUTS —
and scores the median absolute
percentage error, the median bias, the 90 % intervals' coverage (overall, by sex and by
ancestry) and the held-out levels' negative log predictive density.
``benchmarks/latent_study.py`` runs it at full size; ``tests/twin/test_latent_study.py``
reduced.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Collection, Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from ...priors import ANCESTRIES, GENES, Covariate, vancomycin_model
from ...priors import diplotype_frequencies as _diplotypes
from ...simulators import Dose, DosingEvents, ODEModel, predict_outputs
from ...simulators._model import Named
from .._intervals import draw_quantiles

__all__ = [
    "KINDS",
    "LLOQ",
    "evaluate_study",
    "simulate_patients",
    "study_checks",
    "study_table",
    "true_model",
]

KINDS = ("published", "genomic", "structural")
REGIMENS = ("train", "heldout")
LEVELS = (0, 1, 2, 4)
ARMS = ("mechanistic", "mechanistic_importance", "mechanistic_nuts", "hybrid",
        "hybrid_importance", "hybrid_nuts", "hybrid_encoder", "neural_encoder", "oracle")  # fmt: skip
# the pairs of twins compared, by how their posterior is computed
_PAIRS = (("hybrid", "mechanistic"), ("hybrid_importance", "mechanistic_importance"))
GENOMIC_FOLD = 2.5
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


def true_model(kind: str, genomic_fold: float = GENOMIC_FOLD):
    """The population model that generates patients of ``kind`` (see the module doc;
    ``genomic_fold``: the genomic truth's clearance fold in CYP3A5 expressers); one instance
    per kind (and fold), so the twins built on it share their compiled programs."""
    try:
        fold = float(genomic_fold)
    except (TypeError, ValueError):
        fold = math.nan
    if not (math.isfinite(fold) and fold > 0):
        raise ValueError(
            f"`genomic_fold` must be a finite number > 0 (a clearance multiplier, e.g. 2.5), "
            f"got {genomic_fold!r}"
        )
    return _true_model(kind, fold if kind == "genomic" else None)


@functools.cache
def _true_model(kind: str, genomic_fold: float | None):
    pm = vancomycin_model()
    if kind == "published":
        return pm
    if kind == "genomic":
        base = pm.parameters

        def parameters(th, cov):
            out = dict(base(th, cov))
            out["cl"] = out["cl"] * genomic_fold ** cov["cyp3a5_expresser"]
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


def simulate_patients(
    kind: str, n: int, seed: int, regimen: str = "train", *, genomic_fold: float = GENOMIC_FOLD
) -> dict[str, Any]:
    """``n`` virtual patients of ``kind`` on ``regimen`` (``genomic_fold``: see
    :func:`true_model`).

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
    pm = true_model(kind, genomic_fold)
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


# ---------------------------------------------------------------- evaluation
def _times(cohort: Mapping[str, Any], i: int) -> tuple[np.ndarray, np.ndarray]:
    """The patient's level times then the 48–72 h grid, sorted (solvers want sorted
    times), and the permutation that puts a sorted prediction back in that order."""
    times = np.concatenate([cohort["times"][i], cohort["grid"]])
    order = np.argsort(times, kind="stable")
    return times[order], np.argsort(order, kind="stable")


def twin_curves(
    drug: Any,
    pm: Any,
    cohort: Mapping[str, Any],
    k: int,
    n_draws: int,
    *,
    nuts: Mapping[str, int] | None = None,
    method: str = "laplace",
) -> np.ndarray:
    """Posterior draws of the concentration ``[patient, draw, time]`` at the patients' level
    times then on the 48–72 h grid, from PatientTwin on ``drug`` (a library name, a
    PopulationModel or a latent model) whose population model is ``pm``, individualised on
    the first ``k`` levels: ``fit(method)`` (``"laplace"`` or ``"importance"``), or NUTS
    with ``nuts`` (``num_warmup``, ``num_samples``, ``num_chains`` of
    :func:`~twinsim.twin.fit_nuts_many`, all patients sampled together); the prior for
    ``k = 0``."""
    from .._clinical import Observation
    from .._nuts import fit_nuts_many
    from .._patient import PatientTwin

    rows = [{c: cohort["covariates"][c][i] for c in pm.covariate_names}
            for i in range(len(cohort["doses"]))]  # fmt: skip
    twins = [
        PatientTwin.create(drug, row, doses, [Observation(float(t), float(v), lloq=LLOQ)
                                              for t, v in levels])
        for row, doses, levels in zip(rows, cohort["doses"], observation_lists(cohort, k),
                                      strict=True)
    ]  # fmt: skip
    if k == 0:
        posteriors = [twin.fit("prior") for twin in twins]
    elif nuts is not None:
        posteriors = fit_nuts_many(twins, **nuts)
    else:
        posteriors = [twin.fit(method, num_samples=n_draws, seed=i)
                      for i, twin in enumerate(twins)]  # fmt: skip
    out = []
    for i, (row, post) in enumerate(zip(rows, posteriors, strict=True)):
        eps = post.eta_draws(n_draws, seed=i)
        table = {c: np.repeat(np.asarray([v]), n_draws) for c, v in row.items()}
        params = pm.individual_parameters(table, eps)
        events = DosingEvents.from_doses([cohort["doses"][i]]).broadcast(n_draws)
        times, back = _times(cohort, i)
        pred = predict_outputs(pm.structural, params, events, np.tile(times, (n_draws, 1)))
        out.append(np.asarray(pred)[:, back, 0])
    return np.stack(out)


def encoder_curves(model: Any, cohort: Mapping[str, Any], k: int, n_draws: int) -> np.ndarray:
    """The same from a latent model's amortised encoder q(z | x, first k levels)."""
    from ._data import LatentData

    cov = latent_covariates(cohort)
    n_levels = cohort["times"].shape[1]
    data = LatentData.build(model, cov, cohort["doses"], observation_lists(cohort, k),
                            n_observations=n_levels, lloq=LLOQ)  # fmt: skip
    out = []
    for i in range(len(cohort["doses"])):
        times, back = _times(cohort, i)
        f = model.forecast(latent_covariates(cohort, [i]), model.encode(data, i),
                           [cohort["doses"][i]], times, n_draws=n_draws, seed=i)  # fmt: skip
        out.append(f["draws"][0][:, back, 0])
    return np.stack(out)


def held_out_nll(draws: np.ndarray, cohort: Mapping[str, Any], k: int) -> float:
    """Mean negative log predictive density of the levels after the first ``k`` (the
    residual-error density averaged over the draws; M3 for censored levels)."""
    from scipy.special import logsumexp

    err = vancomycin_model().residual["conc"]
    n_levels = cohort["times"].shape[1]
    if k >= n_levels:
        return math.nan
    pred = draws[:, :, k:n_levels]  # [patient, draw, level]
    obs = np.broadcast_to(cohort["observed"][:, None, k:], pred.shape)
    cens = np.broadcast_to(cohort["censored"][:, None, k:], pred.shape)
    ll = np.asarray(err.log_likelihood(obs, pred, censored=cens, lloq=np.full(pred.shape, LLOQ)))
    density = logsumexp(ll, axis=1) - np.log(ll.shape[1])  # [patient, level]
    return float(-density.mean())


def summarise(draws: np.ndarray, cohort: Mapping[str, Any], k: int) -> dict[str, Any]:
    """Scores of one arm's draws ``[patient, draw, level times + grid]`` (see the module
    doc): AUC MdAPE and median bias (%), curve MdAPE (%), held-out NLL, 90 % coverage
    overall and by sex and ancestry."""
    n_levels = cohort["times"].shape[1]
    curve = draws[:, :, n_levels:]
    auc = np.trapezoid(curve, cohort["grid"], axis=-1)
    truth = cohort["auc24"]
    median = np.median(auc, axis=1)
    low, high = draw_quantiles(auc, [0.05, 0.95], axis=1)
    inside = (truth >= low) & (truth <= high)
    level_ape = np.abs(np.median(curve, axis=1) - cohort["curve"]) / cohort["curve"]
    cov = cohort["covariates"]
    groups = {"female": cov["female"] == 1, "male": cov["female"] == 0}
    groups.update({a: cov["ancestry"] == a for a in np.unique(cov["ancestry"])})
    return {
        "auc_mdape_percent": float(100 * np.median(np.abs(median - truth) / truth)),
        "auc_median_bias_percent": float(100 * np.median(median / truth - 1.0)),
        "level_mdape_percent": float(100 * np.median(level_ape)),
        "nll_held_out_levels": held_out_nll(draws, cohort, k),
        "coverage90": float(inside.mean()),
        "coverage90_by_group": {g: float(inside[m].mean()) for g, m in groups.items() if m.any()},
    }


def learned_genomic_fold(model: Any, cohort: Mapping[str, Any]) -> float:
    """The learned clearance ratio of CYP3A5 expressers (``*1/*1``) to non-expressers
    (``*3/*3``) for the typical patient (z at the prior mean: ``exp`` of the difference
    of ``η_CL = A μ_p(x) + b(x)``), median over the cohort's other covariates."""
    cov = latent_covariates(cohort)
    i_cl = model.effects.index("cl")
    eta = {}
    for label, diplotype in (("expresser", "*1/*1"), ("non", "*3/*3")):
        x = model.features.transform(dict(cov, cyp3a5=np.array([diplotype] * len(cov["weight"]))))
        mean, _ = model.prior(model.params, x)
        eta[label] = np.asarray(model.eta(model.params, x, mean))[:, i_cl]
    return float(np.exp(np.median(eta["expresser"] - eta["non"])))


def _arm_draws(arm: str, kind: str, models: Mapping[str, Any], test: Mapping[str, Any], k: int,
               n_draws: int, nuts: Mapping[str, int] | None,
               genomic_fold: float = GENOMIC_FOLD) -> np.ndarray:  # fmt: skip
    """One arm's draws ``[patient, draw, time]`` (see :func:`evaluate_study`)."""
    method = "importance" if arm.endswith("_importance") else "laplace"
    if arm in ("mechanistic", "mechanistic_importance", "mechanistic_nuts"):
        pm = vancomycin_model()
        return twin_curves("vancomycin", pm, test, k, n_draws, method=method,
                           nuts=nuts if arm == "mechanistic_nuts" else None)  # fmt: skip
    if arm == "oracle":
        truth = true_model(kind, genomic_fold)
        return twin_curves(truth, truth, test, k, n_draws)
    if arm in ("hybrid", "hybrid_importance", "hybrid_nuts"):
        hybrid = models["hybrid"]
        return twin_curves(hybrid, hybrid.population_model(), test, k, n_draws, method=method,
                           nuts=nuts if arm == "hybrid_nuts" else None)  # fmt: skip
    model = models["hybrid" if arm == "hybrid_encoder" else "neural"]
    return encoder_curves(model, test, k, n_draws)


def evaluate_study(
    kind: str,
    models: Mapping[str, Any],
    *,
    n_test: int,
    n_draws: int,
    levels: tuple[int, ...] = LEVELS,
    regimens: tuple[str, ...] = REGIMENS,
    seed: int = 1000,
    arms: Collection[str] | None = None,
    nuts: Mapping[str, int] | None = None,
    progress: Any = None,
    genomic_fold: float = GENOMIC_FOLD,
) -> dict[str, Any]:
    """Score every arm on ``n_test`` held-out patients of ``kind`` per regimen.

    Parameters
    ----------
    kind
        One of :data:`KINDS`.
    models
        Trained latent models by name: ``"hybrid"`` (arms ``hybrid`` and
        ``hybrid_encoder``) and/or ``"neural"`` (arm ``neural_encoder``); either may be
        missing.
    n_test, n_draws
        Held-out patients per regimen; posterior draws per forecast.
    levels, regimens, seed
        Numbers of levels observed, regimens, the held-out patients' seed.
    arms
        The arms to run (default: every arm the models allow except
        ``mechanistic_nuts`` and ``hybrid_nuts``, which run when ``nuts`` is given, and
        ``mechanistic_importance`` and ``hybrid_importance`` — the twins fitted with
        ``fit("importance")`` — which run when named).
    nuts
        Settings of the ``mechanistic_nuts`` and ``hybrid_nuts`` arms (the mechanistic and
        the hybrid twin individualised by NUTS: ``num_warmup``, ``num_samples``,
        ``num_chains``).
    progress
        Called with ``(kind, regimen, k, seconds, row)`` after each cell.
    genomic_fold
        The genomic truth's clearance fold in CYP3A5 expressers (:func:`true_model`).

    Returns
    -------
    dict
        ``{regimen: {str(k): {arm: summarise(...)}}}``, ``genomic_fold`` (genomic truth
        with a hybrid) and ``checks`` (:func:`study_checks`).
    """
    import time

    available = ["mechanistic"]
    available += ["mechanistic_nuts"] if nuts is not None else []
    available += ["hybrid_nuts"] if nuts is not None and "hybrid" in models else []
    available += ["oracle"] if kind != "published" else []  # published: the mechanistic twin
    available += ["hybrid", "hybrid_encoder"] if "hybrid" in models else []
    available += ["mechanistic_importance"] if arms is not None else []
    available += ["hybrid_importance"] if arms is not None and "hybrid" in models else []
    available += ["neural_encoder"] if "neural" in models else []
    entry: dict[str, Any] = {}
    for regimen in regimens:
        test = simulate_patients(kind, n_test, seed=seed, regimen=regimen,
                                 genomic_fold=genomic_fold)  # fmt: skip
        rows = {}
        for k in levels:
            t0 = time.perf_counter()
            chosen = [a for a in available if arms is None or a in arms]
            arms_run = {a: _arm_draws(a, kind, models, test, k, n_draws, nuts, genomic_fold)
                        for a in chosen}  # fmt: skip
            rows[str(k)] = {arm: summarise(d, test, k) for arm, d in arms_run.items()}
            if progress is not None:
                progress(kind, regimen, k, time.perf_counter() - t0, rows[str(k)])
        entry[regimen] = rows
    if kind == "genomic" and "hybrid" in models and (arms is None or "hybrid" in arms):
        test = simulate_patients(kind, n_test, seed=seed, genomic_fold=genomic_fold)
        entry["genomic_fold"] = {"true": genomic_fold,
                                 "learned": learned_genomic_fold(models["hybrid"], test)}  # fmt: skip
    entry["checks"] = study_checks(kind, entry)
    return entry


def _mean_error(entry: Mapping[str, Any], regimen: str, arm: str) -> float:
    cells = entry[regimen].values()
    return float(np.mean([cell[arm]["auc_mdape_percent"] for cell in cells]))


def study_checks(kind: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    """The issue's pass/fail criteria on one truth's :func:`evaluate_study` entry: the
    hybrid (Laplace over z on the trained model) against the mechanistic twin, its
    coverage, the neural-only model on the held-out regimen, the learned genomic effect.
    Errors are AUC MdAPEs averaged over the levels evaluated."""
    out: dict[str, Any] = {}
    for (hybrid, mech), regimen in itertools.product(_PAIRS, REGIMENS):
        if regimen not in entry:
            continue
        arms = set.intersection(*(set(cell) for cell in entry[regimen].values()))
        if not {hybrid, mech} <= arms:
            continue  # a run of some arms only (merged into the full entry afterwards)
        ratio = _mean_error(entry, regimen, hybrid) / _mean_error(entry, regimen, mech)
        out[f"{regimen}: {hybrid}/{mech} mean AUC MdAPE ratio"] = ratio
        if kind == "published":
            out[f"{regimen}: {hybrid} error within 5 % of {mech}"] = bool(ratio <= 1.05)
        else:
            out[f"{regimen}: {hybrid} error ≥ 25 % lower than {mech}"] = bool(ratio <= 0.75)
            if hybrid == "hybrid" and "oracle" in arms:
                best = _mean_error(entry, regimen, "oracle") / _mean_error(entry, regimen, mech)
                out[f"{regimen}: oracle/{mech} mean AUC MdAPE ratio (the best possible)"] = best
        covs = [cell[hybrid]["coverage90"] for cell in entry[regimen].values()]
        # the issue asks for coverage of 85-95 %: over the regimen's forecasts (every k,
        # the same patients); each k's own coverage is a stricter bar, whose binomial SE is
        # 1.3-1.6 points at 500 patients
        pooled = float(np.mean(covs))
        out[f"{regimen}: {hybrid} coverage over every k"] = pooled
        groups = [cell[hybrid].get("coverage90_by_group", {}) for cell in entry[regimen].values()]
        shared = set.intersection(*(set(g) for g in groups))
        out[f"{regimen}: {hybrid} coverage over every k by group"] = {
            g: float(np.mean([cell[g] for cell in groups])) for g in sorted(shared)
        }
        out[f"{regimen}: {hybrid} coverage 85–95 % over every k"] = bool(0.85 <= pooled <= 0.95)
        out[f"{regimen}: {hybrid} coverage 85–95 % at every k"] = bool(
            all(0.85 <= c <= 0.95 for c in covs)
        )
    held = entry.get("heldout", {})
    if held and all({"hybrid", "neural_encoder"} <= set(cell) for cell in held.values()):
        out["heldout: hybrid beats neural-only"] = bool(
            _mean_error(entry, "heldout", "hybrid")
            < _mean_error(entry, "heldout", "neural_encoder")
        )
    if "genomic_fold" in entry:
        true, learned = entry["genomic_fold"]["true"], entry["genomic_fold"]["learned"]
        out["genomic: learned effect right sign, size within 30 %"] = bool(
            learned > 1 and abs((learned - 1) - (true - 1)) <= 0.3 * (true - 1)
        )
    return out


def study_table(result: Mapping[str, Any]) -> str:
    """A Markdown table: AUC24 MdAPE % (90 % coverage) per truth, regimen, levels, arm."""
    arms = [a for a in ARMS if any(
        a in cell for entry in result["truths"].values() for r in REGIMENS
        for cell in entry.get(r, {}).values()
    )]  # fmt: skip
    lines = [
        "| truth | regimen | levels | " + " | ".join(arms) + " |",
        "|---|---|---|" + "---|" * len(arms),
    ]
    for kind, entry in result["truths"].items():
        for regimen in REGIMENS:
            for k, row in entry.get(regimen, {}).items():
                cells = [
                    f"{row[a]['auc_mdape_percent']:.1f} ({100 * row[a]['coverage90']:.0f} %)"
                    if a in row
                    else "–"
                    for a in arms
                ]
                lines.append(f"| {kind} | {regimen} | {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
