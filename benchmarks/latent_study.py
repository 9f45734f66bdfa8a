"""Latent twin study: the hybrid against the mechanistic twin on virtual vancomycin
patients from three true processes (published, hidden genomic effect, clearance falling
over days; see ``twinsim.twin._latent._study``).

For each truth: train the hybrid (and, where available, the neural-only latent ODE) on
``--train`` patients (15 mg/kg every 12 h, 4 sparse levels, published residual error,
levels below 2 mg/L censored). Then for held-out patients on the training regimen and on a
held-out regimen (25 mg/kg every 24 h, never seen in training), forecast from the first
0, 1, 2 and 4 levels:

- the true AUC over 48–72 h (MdAPE, %; 90 % interval coverage overall, by sex, by
  ancestry),
- the true concentration curve over 48–72 h (median absolute percentage error over the
  curve's points, "levels"),
- the negative log-likelihood of the levels not used (the predictive density of each
  held-out observed level: the residual-error density averaged over posterior draws, M3
  for censored ones), per level.

Arms: ``mechanistic`` (PatientTwin on Goti 2018, Laplace), ``hybrid`` (PatientTwin on the
trained latent model: Laplace over z), ``hybrid_encoder`` (the amortised encoder
q(z | x, levels)), ``neural_encoder`` (the neural-only latent ODE's encoder, when
trained). In the genomic truth, the hybrid's learned clearance ratio of CYP3A5 expressers
to non-expressers is compared with the true 1.6.

Stages (``--stage``): ``train`` writes each model folder under ``--models`` (orbax
checkpoints: a killed run resumes), ``eval`` loads them; ``all`` does both.

Run: ``nice .venv/bin/python benchmarks/latent_study.py`` (1,000 training patients per
truth, 100 held-out per regimen); writes ``benchmarks/results/latent_study.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from scipy.special import logsumexp  # noqa: E402

from twinsim.priors import vancomycin_model  # noqa: E402
from twinsim.scenarios import load_latent_model, save_latent_model  # noqa: E402
from twinsim.simulators import DosingEvents, predict_outputs  # noqa: E402
from twinsim.twin import (  # noqa: E402
    CovariateFeatures,
    LatentConfig,
    LatentData,
    LatentModel,
    Observation,
    PatientTwin,
    TrainingSettings,
    train_latent,
)
from twinsim.twin._latent._study import (  # noqa: E402
    GENOMIC_FOLD,
    KINDS,
    LLOQ,
    latent_covariates,
    observation_lists,
    simulate_patients,
    true_model,
)

LEVELS = (0, 1, 2, 4)
RESULTS = Path(__file__).parent / "results"


def _decoders() -> dict[str, dict]:
    """The latent models trained per truth: name → LatentConfig options."""
    decoders = {"hybrid": {}}
    if "decoder" in LatentConfig.__dataclass_fields__:
        decoders["neural"] = {"decoder": "neural"}
    return decoders


# ---------------------------------------------------------------- training
def train_models(kind: str, args) -> dict:
    train = simulate_patients(kind, args.train, seed=0)
    cov = latent_covariates(train)
    out = {}
    for name, options in _decoders().items():
        folder = Path(args.models) / kind / name
        if (folder / "model.json").is_file():
            print(kind, name, "already trained:", folder, flush=True)
            continue
        t0 = time.perf_counter()
        model = LatentModel.create(
            vancomycin_model(), CovariateFeatures.fit(cov), LatentConfig(**options), seed=0
        )
        data = LatentData.build(model, cov, train["doses"], observation_lists(train), lloq=LLOQ)
        settings = TrainingSettings(epochs=args.epochs, batch_size=args.batch,
                                    patience=args.patience, learning_rate=args.learning_rate,
                                    weight_decay=args.weight_decay, seed=0)  # fmt: skip

        def progress(p, kind=kind, name=name):
            if "validation" in p:
                print(kind, name, "epoch", p["epoch"], "train", round(p["loss"], 3),
                      "validation", round(p["validation"], 3), flush=True)  # fmt: skip

        result = train_latent(model, data, settings, checkpoint_dir=folder / "checkpoints",
                              progress=progress)  # fmt: skip
        seconds = time.perf_counter() - t0
        save_latent_model(result.model, folder, {"study": kind, "train_seconds": seconds,
                                                 "history": result.history})  # fmt: skip
        out[name] = {"train_seconds": seconds, "epochs": len(result.history),
                     "stopped_early": result.stopped_early, "history": result.history}  # fmt: skip
    return out


# ---------------------------------------------------------------- forecasting
def _auc(curves: np.ndarray, grid: np.ndarray) -> np.ndarray:
    return np.trapezoid(curves, grid, axis=-1)


def _twin_rows(cohort, i: int, pm) -> dict:
    return {c: cohort["covariates"][c][i] for c in pm.covariate_names}


def _times(cohort, i: int) -> tuple[np.ndarray, np.ndarray]:
    """The held-out levels' times then the grid, sorted (solvers want sorted times), and
    the permutation that puts a sorted prediction back in that order."""
    times = np.concatenate([cohort["times"][i], cohort["grid"]])
    order = np.argsort(times, kind="stable")
    return times[order], np.argsort(order, kind="stable")


def twin_curves(drug, pm, cohort, k: int, n_draws: int) -> np.ndarray:
    """Posterior draws of the concentration ``[patient, draw, time]`` at the held-out
    levels' times then on the 48–72 h grid, from PatientTwin (Laplace; the prior for k = 0)
    on ``drug`` (a library name or a latent model) whose population model is ``pm``."""
    out = []
    for i in range(len(cohort["doses"])):
        row = _twin_rows(cohort, i, pm)
        obs = [Observation(float(t), float(v), lloq=LLOQ)
               for t, v in observation_lists(cohort, k)[i]]  # fmt: skip
        twin = PatientTwin.create(drug, row, cohort["doses"][i], obs)
        post = twin.fit("laplace" if k else "prior")
        eps = post.eta_draws(n_draws, seed=i)
        table = {c: np.repeat(np.asarray([v]), n_draws) for c, v in row.items()}
        params = pm.individual_parameters(table, eps)
        events = DosingEvents.from_doses([cohort["doses"][i]]).broadcast(n_draws)
        times, back = _times(cohort, i)
        pred = predict_outputs(pm.structural, params, events, np.tile(times, (n_draws, 1)))
        out.append(np.asarray(pred)[:, back, 0])
    return np.stack(out)


def encoder_curves(model: LatentModel, cohort, k: int, n_draws: int) -> np.ndarray:
    """The same from the amortised encoder q(z | x, first k levels)."""
    cov = latent_covariates(cohort)
    data = LatentData.build(model, cov, cohort["doses"], observation_lists(cohort, k),
                            n_observations=4, lloq=LLOQ)  # fmt: skip
    out = []
    for i in range(len(cohort["doses"])):
        times, back = _times(cohort, i)
        f = model.forecast(latent_covariates(cohort, [i]), model.encode(data, i),
                           [cohort["doses"][i]], times, n_draws=n_draws, seed=i)  # fmt: skip
        out.append(f["draws"][0][:, back, 0])
    return np.stack(out)


def held_out_nll(draws: np.ndarray, cohort, k: int) -> float:
    """Mean negative log predictive density of the levels after the first k."""
    err = vancomycin_model().residual["conc"]
    n_levels = cohort["times"].shape[1]
    if k >= n_levels:
        return float("nan")
    pred = draws[:, :, k:n_levels]  # [patient, draw, level]
    obs = np.broadcast_to(cohort["observed"][:, None, k:], pred.shape)
    cens = np.broadcast_to(cohort["censored"][:, None, k:], pred.shape)
    ll = np.asarray(err.log_likelihood(obs, pred, censored=cens, lloq=np.full(pred.shape, LLOQ)))
    density = logsumexp(ll, axis=1) - np.log(ll.shape[1])  # [patient, level]
    return float(-density.mean())


def summarise(draws: np.ndarray, cohort, k: int) -> dict:
    n_levels = cohort["times"].shape[1]
    curve = draws[:, :, n_levels:]
    auc = _auc(curve, cohort["grid"])
    truth = cohort["auc24"]
    median = np.median(auc, axis=1)
    low, high = np.quantile(auc, [0.05, 0.95], axis=1)
    inside = (truth >= low) & (truth <= high)
    curve_median = np.median(curve, axis=1)
    level_ape = np.abs(curve_median - cohort["curve"]) / cohort["curve"]
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


def learned_genomic_fold(model: LatentModel, cohort) -> float:
    """The learned clearance ratio of CYP3A5 expressers (``*1/*1``) to non-expressers
    (``*3/*3``) for the typical patient (z at the prior mean: ``exp`` of the difference
    of ``η_CL = A μ_p(x) + b(x)``), median over the held-out patients' other covariates."""
    cov = latent_covariates(cohort)
    i_cl = model.effects.index("cl")
    eta = {}
    for label, diplotype in (("expresser", "*1/*1"), ("non", "*3/*3")):
        x = model.features.transform(dict(cov, cyp3a5=np.array([diplotype] * len(cov["weight"]))))
        mean, _ = model.prior(model.params, x)
        eta[label] = np.asarray(model.eta(model.params, x, mean))[:, i_cl]
    return float(np.exp(np.median(eta["expresser"] - eta["non"])))


def evaluate(kind: str, args) -> dict:
    models = {
        name: load_latent_model(Path(args.models) / kind / name)
        for name in _decoders()
        if (Path(args.models) / kind / name / "model.json").is_file()
    }
    pm = vancomycin_model()
    entry: dict = {}
    for regimen in ("train", "heldout"):
        test = simulate_patients(kind, args.test, seed=1000, regimen=regimen)
        rows = {}
        for k in LEVELS:
            t0 = time.perf_counter()
            arms = {"mechanistic": twin_curves("vancomycin", pm, test, k, args.draws)}
            if kind != "published":
                # the true process itself as the twin: the best any model could forecast
                truth = true_model(kind)
                arms["oracle"] = twin_curves(truth, truth, test, k, args.draws)
            if "hybrid" in models:
                hybrid = models["hybrid"]
                arms["hybrid"] = twin_curves(hybrid, hybrid.population_model(), test, k, args.draws)
                arms["hybrid_encoder"] = encoder_curves(hybrid, test, k, args.draws)
            if "neural" in models:
                arms["neural_encoder"] = encoder_curves(models["neural"], test, k, args.draws)
            rows[str(k)] = {arm: summarise(d, test, k) for arm, d in arms.items()}
            print(kind, regimen, k, round(time.perf_counter() - t0, 1), "s",
                  {a: (round(v["auc_mdape_percent"], 1), round(v["coverage90"], 2))
                   for a, v in rows[str(k)].items()}, flush=True)  # fmt: skip
        entry[regimen] = rows
    if kind == "genomic" and "hybrid" in models:
        test = simulate_patients(kind, args.test, seed=1000)
        entry["genomic_fold"] = {"true": GENOMIC_FOLD,
                                 "learned": learned_genomic_fold(models["hybrid"], test)}  # fmt: skip
    entry["checks"] = checks(kind, entry)
    return entry


def checks(kind: str, entry: dict) -> dict:
    """The issue's pass/fail criteria (the hybrid = Laplace over z on the trained model)."""
    out: dict = {}

    def mean_error(regimen, arm):
        return float(np.mean([entry[regimen][str(k)][arm]["auc_mdape_percent"] for k in LEVELS]))

    for regimen in ("train", "heldout"):
        ratio = mean_error(regimen, "hybrid") / mean_error(regimen, "mechanistic")
        out[f"{regimen}: hybrid/mechanistic mean AUC MdAPE ratio"] = ratio
        if kind == "published":
            out[f"{regimen}: hybrid error within 5 % of mechanistic"] = bool(ratio <= 1.05)
        else:
            out[f"{regimen}: hybrid error ≥ 25 % lower than mechanistic"] = bool(ratio <= 0.75)
        covs = [entry[regimen][str(k)]["hybrid"]["coverage90"] for k in LEVELS]
        out[f"{regimen}: hybrid coverage 85–95 % at every k"] = bool(
            all(0.85 <= c <= 0.95 for c in covs)
        )
    if "neural_encoder" in entry["heldout"]["0"]:
        out["heldout: hybrid beats neural-only"] = bool(
            mean_error("heldout", "hybrid") < mean_error("heldout", "neural_encoder")
        )
    if "genomic_fold" in entry:
        true, learned = entry["genomic_fold"]["true"], entry["genomic_fold"]["learned"]
        out["genomic: learned effect right sign, size within 30 %"] = bool(
            learned > 1 and abs((learned - 1) - (true - 1)) <= 0.3 * (true - 1)
        )
    return out


ARMS = ("mechanistic", "hybrid", "hybrid_encoder", "neural_encoder", "oracle")


def markdown(result: dict) -> str:
    """The README's table: AUC24 MdAPE % (90 % coverage) per truth, regimen, levels, arm."""
    lines = [
        "| truth | regimen | levels | " + " | ".join(ARMS) + " |",
        "|---|---|---|" + "---|" * len(ARMS),
    ]
    for kind, entry in result["truths"].items():
        for regimen in ("train", "heldout"):
            for k in LEVELS:
                row = entry.get(regimen, {}).get(str(k))
                if not row:
                    continue
                cells = [
                    f"{row[a]['auc_mdape_percent']:.1f} ({100 * row[a]['coverage90']:.0f} %)"
                    if a in row
                    else "–"
                    for a in ARMS
                ]
                lines.append(f"| {kind} | {regimen} | {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stage", choices=("train", "eval", "all"), default="all")
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--weight-decay", type=float, default=1.0)
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--models", default=str(RESULTS / "latent_models"))
    parser.add_argument("--out", default=str(RESULTS / "latent_study.json"))
    parser.add_argument("--table", action="store_true", help="print the README table of --out")
    args = parser.parse_args()
    out = Path(args.out)
    if args.table:
        print(markdown(json.loads(out.read_text())))
        return
    result = json.loads(out.read_text()) if out.is_file() else {"truths": {}}
    result.update(args=vars(args), load_before=os.getloadavg())
    for kind in args.kinds.split(","):
        entry = result["truths"].setdefault(kind, {})
        if args.stage in ("train", "all"):
            entry.setdefault("training", {}).update(train_models(kind, args))
        if args.stage in ("eval", "all"):
            entry.update(evaluate(kind, args))
        result["load_after"] = os.getloadavg()
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2, default=float))
        tmp.replace(out)
    print(json.dumps({k: v.get("checks") for k, v in result["truths"].items()}, indent=2))


if __name__ == "__main__":
    main()
