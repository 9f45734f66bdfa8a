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

Arms: ``mechanistic`` (PatientTwin on Goti 2018, Laplace), ``oracle`` (PatientTwin on the
true process itself: the best any model could forecast; genomic and structural truths),
``hybrid`` (PatientTwin on the
trained latent model: Laplace over z), ``hybrid_encoder`` (the amortised encoder
q(z | x, levels)), ``neural_encoder`` (the neural-only latent ODE's encoder, when
trained). In the genomic truth, the hybrid's learned clearance ratio of CYP3A5 expressers
to non-expressers is compared with the true ``GENOMIC_FOLD`` (2.5).

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


from twinsim.priors import vancomycin_model  # noqa: E402
from twinsim.scenarios import load_latent_model, save_latent_model  # noqa: E402
from twinsim.twin import (  # noqa: E402
    CovariateFeatures,
    LatentConfig,
    LatentData,
    LatentModel,
    TrainingSettings,
    train_latent,
)
from twinsim.twin._latent._study import (  # noqa: E402
    KINDS,
    LLOQ,
    REGIMENS,
    evaluate_study,
    latent_covariates,
    observation_lists,
    simulate_patients,
    study_checks,
    study_table,
)

RESULTS = Path(__file__).parent / "results"


def _decoders(args=None) -> dict[str, dict]:
    """The latent models trained per truth: name → LatentConfig options (``args``: the
    command line's hybrid options and ``--decoders``, the names to keep)."""
    without_state = getattr(args, "correction_without_state", False)
    modulated, only = getattr(args, "modulated", ""), getattr(args, "decoders", "")
    hybrid: dict = {"correction_sees_state": False} if without_state else {}
    if getattr(args, "modulate_volumes", False):
        hybrid["modulate_volumes"] = True
    if modulated:
        hybrid["modulated"] = tuple(modulated.split(","))
    decoders = {"hybrid": hybrid}
    if "decoder" in LatentConfig.__dataclass_fields__:
        decoders["neural"] = {"decoder": "neural"}
    if only:
        decoders = {k: v for k, v in decoders.items() if k in only.split(",")}
    return decoders


# ---------------------------------------------------------------- training
def train_models(kind: str, args) -> dict:
    train = simulate_patients(kind, args.train, seed=0)
    cov = latent_covariates(train)
    out = {}
    for name, options in _decoders(args).items():
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


def evaluate(kind: str, args, on_cell=None) -> dict:
    """Score the arms on held-out patients; ``on_cell(regimen, k, row)`` after each cell
    (the caller saves it: a killed evaluation keeps the cells it finished)."""
    models = {
        name: load_latent_model(Path(args.models) / kind / name)
        for name in _decoders()
        if (Path(args.models) / kind / name / "model.json").is_file()
    }

    def progress(kind, regimen, k, seconds, row):
        print(kind, regimen, k, round(seconds, 1), "s",
              {a: (round(v["auc_mdape_percent"], 1), round(v["coverage90"], 2))
               for a, v in row.items()}, flush=True)  # fmt: skip
        if on_cell is not None:
            on_cell(regimen, k, row)

    nuts = (
        dict(
            num_warmup=args.nuts_warmup, num_samples=args.nuts_samples, num_chains=args.nuts_chains
        )
        if args.nuts
        else None
    )
    arms = args.arms.split(",") if args.arms else None
    levels = tuple(int(k) for k in args.levels.split(","))
    return evaluate_study(kind, models, n_test=args.test, n_draws=args.draws, arms=arms,
                          nuts=nuts, levels=levels, seed=args.test_seed,
                          regimens=tuple(args.regimens.split(",")),
                          progress=progress)  # fmt: skip


def merge(entry: dict, new: dict, kind: str) -> None:
    """Add a run's cells to ``entry`` arm by arm (a run of some arms keeps the others)."""
    for key, value in new.items():
        if key in REGIMENS:
            for k, cell in value.items():
                entry.setdefault(key, {}).setdefault(k, {}).update(cell)
        elif key != "checks":
            entry[key] = value
    entry["checks"] = study_checks(kind, entry)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stage", choices=("train", "eval", "all"), default="all")
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--test-seed", type=int, default=1000, help="seed of the held-out patients")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patience", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--weight-decay", type=float, default=0.3)
    parser.add_argument(
        "--decoders",
        default="",
        help="train: comma-separated latent models (hybrid, neural; default both)",
    )
    parser.add_argument("--arms", default="", help="comma-separated arms (default: all)")
    parser.add_argument("--levels", default="0,1,2,4", help="numbers of levels observed")
    parser.add_argument(
        "--regimens", default=",".join(REGIMENS), help="comma-separated regimens evaluated"
    )
    parser.add_argument("--nuts", action="store_true", help="add the mechanistic NUTS arm")
    parser.add_argument("--nuts-warmup", type=int, default=300)
    parser.add_argument("--nuts-samples", type=int, default=300)
    parser.add_argument("--nuts-chains", type=int, default=2)
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--models", default=str(RESULTS / "latent_models"))
    parser.add_argument("--out", default=str(RESULTS / "latent_study.json"))
    parser.add_argument("--table", action="store_true", help="print the README table of --out")
    parser.add_argument(
        "--correction-without-state",
        action="store_true",
        help="hybrid: g_nn(x, t), the amounts not an input of the correction",
    )
    parser.add_argument(
        "--modulated",
        default="",
        help="hybrid: the comma-separated parameters the correction multiplies (default: "
        "the random effects less the volumes: cl)",
    )
    parser.add_argument(
        "--modulate-volumes",
        action="store_true",
        help="hybrid: the correction multiplies every random effect (cl, v1, v2; the default "
        "before stop 27)",
    )
    args = parser.parse_args()
    out = Path(args.out)
    if args.table:
        print(study_table(json.loads(out.read_text())))
        return
    result = json.loads(out.read_text()) if out.is_file() else {"truths": {}}
    result.update(args=vars(args), load_before=os.getloadavg())

    def save() -> None:
        result["load_after"] = os.getloadavg()
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2, default=float))
        tmp.replace(out)

    for kind in args.kinds.split(","):
        entry = result["truths"].setdefault(kind, {})
        if args.stage in ("train", "all"):
            entry.setdefault("training", {}).update(train_models(kind, args))
        if args.stage in ("eval", "all"):

            def on_cell(regimen, k, row, entry=entry, kind=kind):
                merge(entry, {regimen: {str(k): row}}, kind)
                save()

            merge(entry, evaluate(kind, args, on_cell), kind)
        save()
    print(json.dumps({k: v.get("checks") for k, v in result["truths"].items()}, indent=2))


if __name__ == "__main__":
    main()
