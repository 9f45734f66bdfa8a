"""Honest accuracy study of the patient twin (vancomycin and warfarin virtual patients).

Virtual patients are simulated from the drug's population model with its published
residual error; each twin is fitted to a few measured levels (population-only, MAP,
Laplace, NUTS) and its prediction compared with the known truth: median absolute
percentage error of the steady-state AUC24 (vancomycin; 1, 2 and 4 levels) or of the
day-14 INR (warfarin; INRs on days 3, 5, 7), 90 % credible-interval coverage overall,
by sex and by ancestry, and the MAP against an independent scipy.optimize MAP. The
design is in ``twinsim.twin._accuracy``.

Run: ``nice .venv/bin/python benchmarks/accuracy_study.py`` (500 vancomycin patients,
NUTS for all of them with two levels, sampled together by ``fit_nuts_many``; 50 warfarin
patients, MAP/Laplace; writes ``results/accuracy.json`` and prints a table).

The warfarin twin by NUTS (ODE model, ~3 min per patient on one core) runs on its own:
``nice .venv/bin/python benchmarks/accuracy_study.py --only warfarin --warfarin-nuts
--warfarin-nuts-patients 16 --nuts-warmup 150 --nuts-samples 100
--out benchmarks/results/accuracy_warfarin_nuts.json``; vancomycin NUTS with other
numbers of levels, e.g. ``--only vancomycin --nuts-levels 4 --nuts-patients 100
--out benchmarks/results/accuracy_vancomycin_nuts4.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _common as common
import jax

jax.config.update("jax_enable_x64", True)

from twinsim.twin._accuracy import (  # noqa: E402
    format_table,
    run_study,
    vancomycin_study,
    warfarin_study,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-patients", type=int, default=500, help="vancomycin patients")
    parser.add_argument("--n-warfarin", type=int, default=50, help="warfarin patients")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nuts-warmup", type=int, default=400)
    parser.add_argument("--nuts-samples", type=int, default=400, help="per chain")
    parser.add_argument("--nuts-chains", type=int, default=2)
    parser.add_argument(
        "--nuts-patients", type=int, default=None, help="vancomycin patients fitted by NUTS too"
    )
    parser.add_argument(
        "--nuts-levels",
        type=int,
        nargs="+",
        default=[2],
        choices=(1, 2, 4),
        help="vancomycin: the numbers of levels fitted by NUTS",
    )
    parser.add_argument("--scipy-patients", type=int, default=100, help="scipy MAP checks")
    parser.add_argument(
        "--warfarin-nuts", action="store_true", help="NUTS for warfarin too (ODE model; slow)"
    )
    parser.add_argument(
        "--warfarin-nuts-patients", type=int, default=None, help="warfarin patients by NUTS"
    )
    parser.add_argument("--only", choices=("all", "vancomycin", "warfarin"), default="all")
    parser.add_argument("--out", type=Path, default=common.RESULTS / "accuracy.json")
    args = parser.parse_args()
    nuts = {
        "num_warmup": args.nuts_warmup,
        "num_samples": args.nuts_samples,
        "num_chains": args.nuts_chains,
    }
    warfarin_options = (
        {"nuts": nuts, "nuts_patients": args.warfarin_nuts_patients}
        if args.warfarin_nuts
        else {"nuts_levels": ()}
    )
    vancomycin_options = {
        "nuts": nuts,
        "nuts_patients": args.nuts_patients,
        "nuts_levels": tuple(args.nuts_levels),
        "scipy_check": args.scipy_patients,
    }
    if args.only == "vancomycin":
        vanco = vancomycin_study(args.n_patients, args.seed, progress=True, **vancomycin_options)
        record = {"vancomycin": vanco, "jax": jax.__version__}
    elif args.only == "warfarin":
        record = {
            "warfarin": warfarin_study(
                args.n_warfarin, args.seed, progress=True, **warfarin_options
            ),
            "jax": jax.__version__,
        }
    else:
        record = run_study(
            args.n_patients,
            args.seed,
            n_warfarin=args.n_warfarin,
            vancomycin_options=vancomycin_options,
            warfarin_options=warfarin_options,
            progress=True,
        )
    record["machine"] = common.machine()
    record["command"] = " ".join(["benchmarks/accuracy_study.py", *sys.argv[1:]])
    common.write_json(args.out, record)
    print(format_table(record))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
