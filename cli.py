"""The ``twinsim`` command line (``twinsim.cli``, also ``python -m twinsim``).

The top floor of the house: the only module that imports both the workflows
(:mod:`twinsim.scenarios`) and the dashboard (:mod:`twinsim.dashboard`).

::

    twinsim simulate SPEC.yaml --out result.nc     run a spec: NetCDF (or Zarr) + provenance
    twinsim nonmem SPEC.yaml --out data.csv        the simulated cohort as a NONMEM data set
    twinsim schema [--out schema.json]             JSON Schema of a spec file
    twinsim examples                               the example specs shipped with twinsim
    twinsim demo [--out-dir demo-output]           a two-compartment oral cohort, end to end
    twinsim fit DATA.csv --model M --out DIR       population fit (NUTS/SVI/Laplace) + VPC
    twinsim whatif WHATIF.yaml [--out report.html] one patient: fit a twin, compare regimens
        [--model MODEL_DIR]                        ... on a trained latent model instead
    twinsim dashboard [--host H] [--port P]         the web dashboard (clinician, educator, trial designer)
        [--model MODEL_DIR ...]                    ... offering trained models on the clinician page
    twinsim trial DESIGN.yaml --out DIR            replicated virtual trials: power, Zarr, report
    twinsim cases SPEC.yaml --out DIR              teaching cases: Markdown, HTML, JSON, FHIR
    twinsim train DATA.csv --prior DRUG --out DIR  train a latent generative twin (resumable)

An invalid spec, file or option is reported as one message naming the field, with exit
code 2, never as a traceback.
"""

from __future__ import annotations

import contextlib
import enum
import json
import shlex
import warnings
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

__all__ = ["app", "example_path", "example_specs", "main"]

app = typer.Typer(
    name="twinsim",
    help="twinsim: digital-twin patient simulation (PK/PD cohorts on JAX).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

#: The example the ``demo`` command runs.
DEMO_EXAMPLE = "two_compartment_oral_cohort"


def _consoles() -> tuple[Console, Console]:
    """(stdout, stderr) consoles, made per command so they follow redirected streams."""
    return Console(soft_wrap=True, highlight=False), Console(
        stderr=True, soft_wrap=True, highlight=False
    )


def _domain_errors() -> tuple[type[BaseException], ...]:
    from .scenarios._nonmem import NonmemError
    from .scenarios._outputs import OutputError
    from .scenarios._regimen import SpecError
    from .scenarios._trial import TrialError
    from .scenarios._units import UnitError
    from .simulators import EventError, MetricsError, SimulationError

    return (
        SpecError,
        TrialError,
        UnitError,
        NonmemError,
        OutputError,
        SimulationError,
        EventError,
        MetricsError,
    )


@contextlib.contextmanager
def _clean_errors(err: Console) -> Iterator[None]:
    """Turn an invalid spec, file or option into one message and exit code 2."""
    try:
        yield
    except _domain_errors() as error:
        err.print(f"error: {error}", markup=False)
        raise typer.Exit(2) from None
    except OSError as error:
        where = f" {error.filename!r}" if error.filename else ""
        err.print(f"error: cannot access{where}: {error.strerror or error}", markup=False)
        raise typer.Exit(2) from None


def _command_line(ctx: typer.Context) -> str:
    """The command as typed, rebuilt from the parsed parameters (for provenance)."""
    words = ctx.command_path.split()
    for parameter in ctx.command.params:
        value = ctx.params.get(parameter.name)
        if isinstance(value, enum.Enum):
            value = value.value
        if parameter.param_type_name == "argument":
            words.append(str(value))
        elif isinstance(value, bool):
            if value:
                words.append(parameter.opts[0])
        elif value is not None:
            words += [parameter.opts[0], str(value)]
    return shlex.join(words)


@contextlib.contextmanager
def _reported_warnings(err: Console) -> Iterator[None]:
    """Print twinsim's workflow warnings (failed subjects, ...) plainly; pass others on."""
    from .scenarios._cohort._run import WorkflowWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", WorkflowWarning)
        yield
    for item in caught:
        if issubclass(item.category, WorkflowWarning):
            err.print(f"warning: {item.message}", style="yellow", markup=False)
        else:
            warnings.showwarning(item.message, item.category, item.filename, item.lineno)


@contextlib.contextmanager
def _progress_bar(
    err: Console, total: int, chunk_size: int, quiet: bool, unit: str = "subjects"
) -> Iterator[Callable[[int, int], None] | None]:
    """A rich progress bar when the run takes more than one chunk (else nothing)."""
    if quiet or total <= chunk_size:
        yield None
        return
    columns = (
        TextColumn("simulating"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=False) as bar:
        task = bar.add_task("simulate", total=total)
        yield lambda done, _total: bar.update(task, completed=done)


def _format_number(value: float) -> str:
    return "–" if value != value else f"{value:.4g}"


def _summary_table(dataset: Any, title: str) -> Table:
    """Subjects, failures and the Cmax/AUC summary of a run."""
    import numpy as np

    from .scenarios._cohort._run import exposure_summary

    status = np.asarray(dataset["status"].values)
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("quantity")
    table.add_column("median", justify="right")
    table.add_column("5th pct", justify="right")
    table.add_column("95th pct", justify="right")
    table.add_column("unit")
    table.add_row("subjects", str(status.size), "", "", "")
    table.add_row("failed solves", str(int(np.count_nonzero(status))), "", "", "")
    output = "conc" if "conc" in dataset else str(np.asarray(dataset["output"].values)[0])
    summary = exposure_summary(dataset, output)
    labels = {"cmax": "Cmax", "tmax": "Tmax", "auc_last": "AUC (0–last)", "cmin": "Cmin"}
    for name, row in summary.iterrows():
        table.add_row(
            f"{labels.get(str(name), name)} of {output}",
            _format_number(row["median"]),
            _format_number(row["p5"]),
            _format_number(row["p95"]),
            str(row["unit"]),
        )
    return table


# ---------------------------------------------------------------------------- commands
SpecArgument = Annotated[
    Path,
    typer.Argument(
        help="Spec file (YAML or JSON); see `twinsim schema`.", metavar="SPEC", show_default=False
    ),
]
ChunkOption = Annotated[
    int,
    typer.Option("--chunk-size", min=1, help="Subjects simulated per chunk (results do not depend on it)."),
]  # fmt: skip
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")]


class _Format(enum.StrEnum):
    """Output file formats of ``simulate``."""

    auto = "auto"
    netcdf = "netcdf"
    zarr = "zarr"


@app.command()
def simulate(
    ctx: typer.Context,
    spec_file: SpecArgument,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Output file: .nc (NetCDF) or .zarr; default: <spec name>.nc."
        ),
    ] = None,
    chunk_size: ChunkOption = 1024,
    file_format: Annotated[
        _Format,
        typer.Option(
            "--format",
            help="auto (NetCDF; Zarr for .zarr paths and large cohorts), netcdf or zarr.",
        ),
    ] = _Format.auto,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Start an existing Zarr store afresh, not resume it."),
    ] = False,
    quiet: QuietOption = False,
) -> None:
    """Simulate the cohort of a spec file and write it with a provenance record."""
    out_console, err = _consoles()
    with _clean_errors(err):
        from .scenarios._cohort._run import cohort_size, output_target, run_simulation
        from .scenarios._cohort._spec import load_spec

        spec = load_spec(spec_file)
        requested = out if out is not None else Path(f"{spec_file.stem}.nc")
        target, _ = output_target(spec, requested, file_format.value)
        with (
            _reported_warnings(err),
            _progress_bar(err, cohort_size(spec), chunk_size, quiet) as progress,
        ):
            dataset = run_simulation(
                spec,
                out=requested,
                chunk_size=chunk_size,
                progress=progress,
                file_format=file_format.value,
                overwrite=overwrite,
                command=_command_line(ctx),
                provenance={"spec_file": str(spec_file)},
            )
        if not quiet:
            out_console.print(_summary_table(dataset, f"{spec.model}: {spec_file.name}"))
        from .scenarios._provenance import provenance_path

        out_console.print(f"wrote {target}", markup=False)
        out_console.print(f"provenance {provenance_path(target)}", markup=False)


@app.command()
def nonmem(
    ctx: typer.Context,
    spec_file: SpecArgument,
    out: Annotated[Path, typer.Option("--out", "-o", help="CSV file to write.")],
    output: Annotated[
        str, typer.Option("--output", help="Model output written as DV (default conc).")
    ] = "conc",
    chunk_size: ChunkOption = 1024,
    quiet: QuietOption = False,
) -> None:
    """Simulate a spec and write the cohort as a NONMEM data set (DV = simulated value).

    Doses are written as dose records (EVID 1, CMT 1-based); every output time is an
    observation record (EVID 0) with the noise-free simulated value as DV. Subjects are
    ID 1..N; with patients in the spec, PAT numbers them and AGE, SEX (1 female, 0 male),
    WT, HT, SCR are written where given.
    """
    out_console, err = _consoles()
    with _clean_errors(err):
        from .scenarios._cohort._run import cohort_size, run_simulation, simulated_nonmem
        from .scenarios._cohort._spec import load_spec
        from .scenarios._nonmem import write_nonmem
        from .scenarios._provenance import provenance_record, write_provenance

        spec = load_spec(spec_file)
        with (
            _reported_warnings(err),
            _progress_bar(err, cohort_size(spec), chunk_size, quiet) as progress,
        ):
            dataset = run_simulation(spec, out=None, chunk_size=chunk_size, progress=progress)
        data = simulated_nonmem(spec, dataset, output=output)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_nonmem(data, out)
        record = provenance_record(
            spec,
            command=_command_line(ctx),
            outputs={
                "path": str(out),
                "format": "nonmem-csv",
                "dv": output,
                "n_subjects": data.n_subjects,
                "n_failed": int((dataset["status"].values != 0).sum()),
            },
            extra={"spec_file": str(spec_file)},
        )
        provenance = write_provenance(record, out)
        if not quiet:
            out_console.print(
                f"{data.n_subjects} subjects, {len(data.observations)} observation records "
                f"(DV = {output}), {sum(len(d) for d in data.doses)} dose records",
                markup=False,
            )
        out_console.print(f"wrote {out}", markup=False)
        out_console.print(f"provenance {provenance}", markup=False)


@app.command()
def schema(
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write to this file instead of stdout.")
    ] = None,
) -> None:
    """Print (or write) the JSON Schema of a spec file, for editors and form builders."""
    out_console, err = _consoles()
    with _clean_errors(err):
        from .scenarios._cohort._spec import spec_json_schema

        text = json.dumps(spec_json_schema(), indent=2, ensure_ascii=False)
        if out is None:
            typer.echo(text)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text + "\n", encoding="utf-8")
            out_console.print(f"wrote {out}", markup=False)


def example_specs() -> dict[str, Path]:
    """``{name: path}`` of the example spec files shipped in ``twinsim/scenarios/examples``.

    Examples
    --------
    >>> "two_compartment_oral_cohort" in example_specs()
    True
    """
    folder = resources.files("twinsim.scenarios") / "examples"
    return {
        Path(entry.name).stem: Path(str(entry))
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        # what-if files (``whatif_*.yaml``) are another kind of spec: see whatif_examples()
        if entry.name.endswith(".yaml") and not entry.name.startswith("whatif_")
    }


def example_path(name: str) -> Path:
    """Path of the shipped example spec ``name`` (file name without ``.yaml``).

    Raises
    ------
    SpecError
        For an unknown name; the message lists the examples.
    """
    from .scenarios._regimen import SpecError

    examples = example_specs()
    if name not in examples:
        raise SpecError(
            [f"`example` {name!r} is not a shipped example; examples: {', '.join(examples)}"],
            title="unknown example",
        )
    return examples[name]


@app.command()
def examples() -> None:
    """List the example spec files shipped with twinsim (run one with `twinsim simulate PATH`,
    a what-if file with `twinsim whatif PATH`)."""
    out_console, err = _consoles()
    with _clean_errors(err):
        from .scenarios import load_whatif, whatif_examples
        from .scenarios._cohort._run import cohort_size
        from .scenarios._cohort._spec import load_spec

        for name, path in example_specs().items():
            spec = load_spec(path)
            out_console.print(
                f"{name}: {spec.model}, {cohort_size(spec)} subjects\n    {path}", markup=False
            )
        for name, path in whatif_examples().items():
            whatif = load_whatif(path)
            out_console.print(
                f"{name}: what-if, {whatif.drug}, {len(whatif.candidates)} candidate regimens "
                f"(twinsim whatif)\n    {path}",
                markup=False,
            )
        from .scenarios import load_trial, trial_examples

        for name, path in trial_examples().items():
            design = load_trial(path)
            out_console.print(
                f"{name}: trial design, {design.drug}, arms "
                f"{', '.join(a.name for a in design.arms)} (twinsim trial)\n    {path}",
                markup=False,
            )


@app.command()
def demo(
    ctx: typer.Context,
    out_dir: Annotated[
        Path, typer.Option("--out-dir", help="Folder for the demo's outputs.")
    ] = Path("demo-output"),
    quiet: QuietOption = False,
) -> None:
    """Run a built-in example end to end: a two-compartment oral cohort of 200 subjects.

    100 mg every 12 h for 7 days, 30 % CV on clearance, central volume and absorption.
    Writes the NetCDF cohort, a tidy CSV, a metrics CSV, a plotly HTML plot of the median
    and 5–95 % band and the provenance record.
    """
    out_console, err = _consoles()
    with _clean_errors(err):
        from .scenarios._cohort._run import cohort_size, concentration_band_figure, run_simulation
        from .scenarios._cohort._spec import load_spec
        from .scenarios._outputs import metrics_table, to_frame
        from .scenarios._provenance import provenance_path

        spec_file = example_path(DEMO_EXAMPLE)
        spec = load_spec(spec_file)
        out_dir.mkdir(parents=True, exist_ok=True)
        cohort = out_dir / "cohort.nc"
        with (
            _reported_warnings(err),
            _progress_bar(err, cohort_size(spec), 1024, quiet) as progress,
        ):
            dataset = run_simulation(
                spec,
                out=cohort,
                progress=progress,
                command=_command_line(ctx),
                provenance={"spec_file": str(spec_file), "example": DEMO_EXAMPLE},
            )
        tidy = out_dir / "cohort.csv"
        to_frame(dataset).to_csv(tidy, index=False)
        metrics = out_dir / "metrics.csv"
        interval = spec.regimen.doses[0].interval
        metrics_table(dataset, "conc", tau=interval).to_csv(metrics, index=False)
        plot = out_dir / "concentration.html"
        concentration_band_figure(dataset, "conc").write_html(plot, include_plotlyjs=True)
        if not quiet:
            out_console.print(_summary_table(dataset, f"demo: {spec_file.name}"))
        out_console.print(f"demo outputs in {out_dir}:", markup=False)
        for what, path in (
            ("cohort (NetCDF)", cohort),
            ("tidy table (CSV)", tidy),
            ("exposure metrics per subject (CSV)", metrics),
            ("median and 5–95 % band (HTML)", plot),
            ("provenance (JSON)", provenance_path(cohort)),
            ("spec", spec_file),
        ):
            out_console.print(f"  {what}: {path}", markup=False)


class FitMethod(enum.StrEnum):
    nuts = "nuts"
    svi = "svi"
    laplace = "laplace"
    focei = "focei"


class CovariateInterpolation(enum.StrEnum):
    locf = "locf"
    nocb = "nocb"


def _pairs(values: list[str] | None, option: str) -> dict[str, str]:
    """``["NAME=VALUE", ...]`` → ``{NAME: VALUE}``, or a BadParameter naming the option."""
    out = {}
    for item in values or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise typer.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint=option)
        out[name.strip()] = value.strip()
    return out


def _numbers(values: dict[str, str], option: str) -> dict[str, float]:
    out = {}
    for name, value in values.items():
        try:
            out[name] = float(value)
        except ValueError:
            raise typer.BadParameter(
                f"{name}={value!r}: the value must be a number", param_hint=option
            ) from None
    return out


def _bounds(values: dict[str, str]) -> dict[str, tuple[float | None, float | None]]:
    out: dict[str, tuple[float | None, float | None]] = {}
    for name, text in values.items():
        low, sep, high = text.partition(":")
        try:
            if not sep:
                raise ValueError
            out[name] = (float(low) if low.strip() else None, float(high) if high.strip() else None)
        except ValueError:
            raise typer.BadParameter(
                f"{name}={text!r}: expected NAME=LOWER:UPPER (either side may be empty)",
                param_hint="--bounds",
            ) from None
    return out


@app.command()
def fit(
    ctx: typer.Context,
    data_file: Annotated[Path, typer.Argument(help="NONMEM-layout CSV data set.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the fit report.")],
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="one_compartment_oral, one_compartment_iv, two_compartment_oral, a drug "
            "library model (e.g. theophylline), or a model file my_model.py defining `model` "
            "(a PopulationModel), optionally `initial` and `bounds`.",
        ),
    ] = "one_compartment_oral",
    method: Annotated[FitMethod, typer.Option("--method", help="Inference method.")] = (
        FitMethod.nuts
    ),
    error: Annotated[
        str,
        typer.Option(
            "--error",
            help="Residual error of generic models: additive, proportional, combined, exponential.",
        ),
    ] = "additive",
    init: Annotated[
        list[str] | None,
        typer.Option(
            "--init",
            help="Starting value NAME=VALUE (repeatable): cl=0.006, omega_sd_cl=0.3, "
            "sigma_conc_proportional=0.1.",
        ),
    ] = None,
    bounds: Annotated[
        list[str] | None,
        typer.Option(
            "--bounds", help="Bounds NAME=LOWER:UPPER (repeatable; Laplace/FOCE-I), e.g. cl=1e-4:1."
        ),
    ] = None,
    covariate_map: Annotated[
        list[str] | None,
        typer.Option(
            "--covariate-map", help="Model covariate from a data column, NAME=COLUMN (repeatable)."
        ),
    ] = None,
    covariate_default: Annotated[
        list[str] | None,
        typer.Option(
            "--covariate-default",
            help="One value of a model covariate for every subject, NAME=VALUE (repeatable).",
        ),
    ] = None,
    covariate_interpolation: Annotated[
        CovariateInterpolation,
        typer.Option(
            "--covariate-interpolation",
            help="Time-varying covariates: a record's value applies from its time on (locf, "
            "as rxode2/nlmixr2) or to the interval ending at it (nocb, as NONMEM's PREDPP).",
        ),
    ] = CovariateInterpolation.locf,
    chains: Annotated[int, typer.Option("--chains", help="NUTS chains.")] = 4,
    warmup: Annotated[int, typer.Option("--warmup", help="NUTS warm-up draws per chain.")] = 1000,
    samples: Annotated[int, typer.Option("--samples", help="NUTS draws per chain.")] = 1000,
    svi_steps: Annotated[int, typer.Option("--svi-steps", help="SVI optimisation steps.")] = 4000,
    lloq: Annotated[
        float | None,
        typer.Option("--lloq", help="Limit of quantification (DV unit); below it: censored (M3)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Root seed.")] = 0,
    vpc_replicates: Annotated[
        int, typer.Option("--vpc-replicates", help="Simulated studies in the VPC.")
    ] = 200,
    png: Annotated[bool, typer.Option("--png/--no-png", help="Also write vpc.png.")] = True,
    quiet: QuietOption = False,
) -> None:
    """Fit a population model to a NONMEM data set and write estimates, diagnostics and a VPC.

    Writes estimates.csv, report.json, report.md and vpc.html (vpc.png when a static image
    engine is installed) to --out. A fit that fails its checks (optimiser, covariance step,
    implausible estimates, estimates at a bound, NUTS not mixing) is reported as FAILED
    with the reasons, and the command exits with code 1 (the report is still written).
    """
    out_console, err = _consoles()
    with _clean_errors(err):
        from .priors import PopulationModelError
        from .scenarios._fit import fit_data, fit_model, load_model_file, write_fit_report
        from .scenarios._nonmem import read_nonmem
        from .twin import fit_population

        initial = _numbers(_pairs(init, "--init"), "--init")
        limits = _bounds(_pairs(bounds, "--bounds"))
        defaults = _numbers(_pairs(covariate_default, "--covariate-default"), "--covariate-default")
        try:
            if model.endswith(".py"):
                user = load_model_file(model)
                population = user.model
                initial = {**user.initial, **initial}
                limits = {**user.bounds, **limits}
            else:
                population = fit_model(model, error=error)
            with _reported_warnings(err):
                data = fit_data(
                    read_nonmem(data_file),
                    population,
                    lloq=lloq,
                    covariate_map=_pairs(covariate_map, "--covariate-map"),
                    covariate_defaults=defaults,
                    covariate_interpolation=covariate_interpolation.value,
                )
                result = fit_population(
                    population,
                    data,
                    method=method.value,
                    seed=seed,
                    num_chains=chains,
                    num_warmup=warmup,
                    num_samples=samples,
                    svi_steps=svi_steps,
                    initial=initial,
                    bounds=limits,
                )
            paths = write_fit_report(
                result,
                out,
                vpc_replicates=vpc_replicates,
                seed=seed,
                png=png,
                extra={"command": _command_line(ctx), "data_file": str(data_file)},
            )
        except PopulationModelError as exc:
            err.print(f"error: {exc}", markup=False)
            raise typer.Exit(2) from None
        d = result.diagnostics
        if not quiet:
            table = Table(title=f"{result.model.name}: {method.value}")
            for column in ("parameter", "unit", "estimate", "SE", "90 % interval", "CV %", "R-hat"):
                table.add_column(column)
            for row in result.summary:
                table.add_row(
                    row["name"],
                    row["unit"],
                    _format_number(row["estimate"]),
                    "" if row["se"] != row["se"] else _format_number(row["se"]),
                    f"{_format_number(row['q05'])} – {_format_number(row['q95'])}",
                    "" if row["cv_percent"] != row["cv_percent"] else f"{row['cv_percent']:.1f}",
                    "" if row["r_hat"] != row["r_hat"] else f"{row['r_hat']:.3f}",
                )
            out_console.print(table)
            line = f"{d['seconds']:.1f} s; shrinkage " + ", ".join(
                f"{k} {100 * v:.0f} %" for k, v in result.shrinkage.items()
            )
            if "objective_function_value" in d:
                line += f"; OFV {d['objective_function_value']:.3f} (−2 log L without N·log 2π)"
            if method.value == "nuts":
                line += (
                    f"; max R-hat {d['max_r_hat']:.3f}; divergences {d['divergences']}; "
                    f"trees at the depth limit {d.get('saturated_trees', 0)}"
                )
            out_console.print(line, markup=False)
        for path in paths.values():
            if path is not None:
                out_console.print(f"wrote {path}", markup=False)
        if png and paths.get("vpc_png") is None:
            err.print(
                "note: vpc.png not written (needs kaleido>=1 and Chrome/Chromium); "
                "see vpc_png_error in report.json",
                markup=False,
            )
        if not result.success:
            err.print("FIT FAILED:", markup=False)
            for reason in d["failure_reasons"]:
                err.print(f"  - {reason}", markup=False)
            raise typer.Exit(1)
        out_console.print("fit succeeded: every check passed", markup=False)


class WhatIfMethod(enum.StrEnum):
    map = "map"
    laplace = "laplace"
    importance = "importance"
    nuts = "nuts"


@app.command()
def whatif(
    ctx: typer.Context,
    spec_file: Annotated[
        Path,
        typer.Argument(
            help="What-if file (YAML or JSON): drug, patient, history, observations, candidates.",
            metavar="WHATIF",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="HTML report; default: <spec name>.html."),
    ] = None,
    table: Annotated[
        Path | None, typer.Option("--table", help="Also write the regimen table as CSV.")
    ] = None,
    method: Annotated[
        WhatIfMethod | None,
        typer.Option(
            "--method",
            help="Fit method instead of the spec's (map, laplace, importance, nuts).",
        ),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            help="Trained latent model folder (twinsim train --out) instead of the published "
            "model; its prior must be the spec's drug.",
            metavar="MODEL_DIR",
        ),
    ] = None,
    quiet: QuietOption = False,
) -> None:
    """Fit a patient twin to the measured levels and compare regimens: table + HTML report.

    With --model MODEL_DIR (or `model: MODEL_DIR` in the file) the twin is the trained
    latent model instead of the library's published model; the output and the report
    name the folder, its prior and the hashes of its parameters and model.json.

    Prints one row per regimen (the spec's candidates, then the recommended ones) with
    the probability of target attainment and the exposure metrics (median and 90 %
    interval), the recommendation and what the twin assumed beyond the data (e.g. a
    genotype "not tested" averaged over the patient's ancestry); writes the HTML report
    with the plot and a provenance record next to it.
    """
    out_console, err = _consoles()
    with _clean_errors(err):
        from .scenarios import load_whatif, run_whatif, write_whatif_report
        from .twin import PatientTwinError

        spec = load_whatif(spec_file, model=model)
        if method is not None:
            spec = spec.model_copy(
                update={"fit": spec.fit.model_copy(update={"method": method.value})}
            )
        try:
            with _reported_warnings(err):
                result = run_whatif(
                    spec, command=_command_line(ctx), provenance={"spec_file": str(spec_file)}
                )
        except PatientTwinError as exc:
            err.print(f"error: {exc}", markup=False)
            raise typer.Exit(2) from None
        paths = write_whatif_report(
            result, out if out is not None else Path(f"{spec_file.stem}.html"), table=table
        )
        if not quiet:
            out_console.print(_whatif_table(result))
        out_console.print(f"model: {result.model_text}", markup=False)
        out_console.print(f"recommendation: {result.recommendation_text()}", markup=False)
        for note in result.notes:  # e.g. an untested genotype averaged over: always shown
            out_console.print(f"assumption: {note}", markup=False)
        if result.objective_text:
            out_console.print(f"objective: {result.objective_text}", markup=False)
        if result.safety_text:
            out_console.print(f"safety: {result.safety_text}", markup=False)
        for path in paths.values():
            out_console.print(f"wrote {path}", markup=False)


def _whatif_table(result: Any) -> Table:
    """The regimens of a what-if: PTA and each metric's median (90 % interval)."""
    from .scenarios import METRIC_LABELS

    units: dict[str, str] = {}
    for forecast in result.forecasts:
        for name, metric in forecast.metrics.items():
            units.setdefault(name, metric.display_unit)
    table = Table(
        title=f"{result.spec.title or result.spec.drug} — target {result.target.describe()}",
        caption="metrics: median (90 % interval)"
        + ("; see the twin's assumption(s) below" if getattr(result, "notes", ()) else ""),
        show_header=True,
        header_style="bold",
    )
    table.add_column("regimen")
    table.add_column("source", no_wrap=True)
    table.add_column("PTA", justify="right")
    # the probability of the drug's safety threshold (described below the table)
    table.add_column("P(unsafe)", justify="right")
    for name, unit in units.items():
        label = METRIC_LABELS.get(name, name)
        table.add_column(f"{label} ({unit})" if unit else label, justify="right")
    best = result.recommendation
    for forecast in result.forecasts:
        table.add_row(
            forecast.name,
            forecast.source,
            f"{100 * forecast.pta:.0f} %",
            "–"
            if forecast.p_unsafe != forecast.p_unsafe  # NaN: no safety threshold
            else f"{100 * forecast.p_unsafe:.0f} %"
            + (" (excluded)" if forecast.safety_note else ""),
            *(forecast.metrics[m].compact() if m in forecast.metrics else "–" for m in units),
            style="bold green" if forecast is best else None,
        )
    return table


@app.command()
def dashboard(
    host: Annotated[
        str,
        typer.Option("--host", help="Address to serve on; the default serves this machine only."),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", help="TCP port.", min=1, max=65535)] = 8050,
    warm_up: Annotated[
        bool,
        typer.Option(
            "--warm-up/--no-warm-up",
            help="Compile the models in the background at start (instant first what-if).",
        ),
    ] = True,
    model: Annotated[
        list[Path] | None,
        typer.Option(
            "--model",
            help="Trained latent model folder (twinsim train --out) offered in the clinician "
            "page's Model menu; repeat for several.",
            metavar="MODEL_DIR",
        ),
    ] = None,
) -> None:
    """Serve the dashboard (clinician, educator and trial-designer pages) at http://HOST:PORT/.

    With --model MODEL_DIR the clinician page's Model menu offers the trained latent
    model besides the published one; fit, forecasts and recommendation then run on it.
    """
    out_console, err = _consoles()
    models: tuple[str, ...] = ()
    if model:
        with _clean_errors(err):
            from .dashboard._app import trained_models

            models = trained_models(model)
        for folder in models:
            out_console.print(f"trained model offered: {folder}", markup=False)
    if host not in ("127.0.0.1", "localhost", "::1"):
        err.print(
            f"warning: serving on {host}: anyone who can reach this address can use the "
            "dashboard and see the patient data typed in (there is no login); use the default "
            "127.0.0.1 unless you mean it",
            markup=False,
        )
    from .dashboard import serve

    shown = f"[{host}]" if ":" in host else host
    out_console.print(f"twinsim dashboard on http://{shown}:{port}/ (Ctrl+C stops)", markup=False)
    serve(host, port, warm_up=warm_up, models=models)


@app.command()
def cases(
    spec_file: Annotated[
        Path,
        typer.Argument(
            help="Case spec (YAML): template, number of cases, population, seed.",
            metavar="SPEC",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the cases (created if needed).")
    ] = Path("cases"),
    quiet: QuietOption = False,
) -> None:
    """Generate teaching cases: Markdown, HTML, JSON (student and instructor) and FHIR.

    Each case's patient, labs, time course and answer keys come from one digital twin;
    the same spec and seed write byte-identical files. Prints the set's mix against the
    request (sex, ancestry, age, genotype).
    """
    out_console, err = _consoles()
    with _clean_errors(err):
        from .scenarios import generate_cases, load_case_spec, write_case_set

        spec = load_case_spec(spec_file)
        case_set = generate_cases(spec)
        paths = write_case_set(case_set, out)
        if not quiet:
            for case in case_set.cases:
                keys = " ".join(
                    next(o["letter"] for o in q["options"] if o["correct"])
                    for q in case["questions"]
                )
                out_console.print(
                    f"{case['id']}: {case['narrative'][:90]}… key {keys}", markup=False
                )
        out_console.print(
            f"wrote {len(case_set.cases)} cases ({len(paths)} files) to {out}; summary in "
            f"{out / 'summary.md'}",
            markup=False,
        )


@app.command()
def trial(
    design_file: Annotated[
        Path,
        typer.Argument(
            help="Trial design (YAML or JSON): population, arms, endpoints, analyses.",
            metavar="DESIGN",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder (a run stopped there resumes).")
    ] = Path("trial-output"),
    replicates: Annotated[
        int | None,
        typer.Option("--replicates", "-r", min=1, help="Replicates instead of the design's."),
    ] = None,
    chunk_size: Annotated[
        int, typer.Option("--chunk-size", min=1, help="Replicates per chunk (memory, resume).")
    ] = 10,
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler", help="Dask scheduler address (tcp://HOST:PORT): run chunks there."
        ),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            help="Trained latent model folder (twinsim train --out) as the subjects' dynamics "
            "instead of the published model; its prior must be the design's drug.",
            metavar="MODEL_DIR",
        ),
    ] = None,
    quiet: QuietOption = False,
) -> None:
    """Run replicate virtual trials of a design: power per sample size, effect estimates,
    a Zarr store, the endpoint table, a NONMEM CSV, a summary and an HTML report.

    With --model MODEL_DIR (or `model: MODEL_DIR` in the design) each subject's dynamics
    come from the trained latent model; the output, the report and the provenance record
    name the folder, its prior and the hashes of its parameters and model.json."""
    out_console, err = _consoles()
    with _clean_errors(err):
        from .scenarios import load_trial, run_trial

        design = load_trial(design_file, model=model)
        if design.model is not None and not quiet:
            out_console.print(f"model: {design.model_text()}", markup=False)
        if replicates is not None:
            design = design.model_copy(update={"replicates": replicates})
        with (
            _reported_warnings(err),
            _progress_bar(err, design.replicates, 0, quiet, unit="replicates") as progress,
        ):
            result = run_trial(
                design, out, chunk_size=chunk_size, scheduler=scheduler, progress=progress
            )
        summary = result.summary()
        if not quiet:
            out_console.print(_trial_table(summary))
        for path in result.files.values():
            out_console.print(f"wrote {path}", markup=False)


def _trial_table(summary: dict[str, Any]) -> Table:
    """Power ± Monte-Carlo SE and the mean estimate, per analysis and sample size."""
    table = Table(
        title=f"{summary['design']}: {summary['replicates']} replicates",
        show_header=True,
        header_style="bold",
    )
    for column in ("analysis", "comparison", "n per arm", "power", "mean estimate"):
        table.add_column(column)
    for entry in summary["analyses"]:
        for size in entry["sizes"]:
            mean = size["estimate_mean"]
            table.add_row(
                entry["analysis"],
                entry["comparison"],
                str(size["n"]),
                f"{size['power']:.3f} ± {size['power_mc_se']:.3f}",
                "–" if mean is None else f"{mean:.4g} ({entry['estimate']})",
            )
    return table


@app.command()
def train(
    ctx: typer.Context,
    data_file: Annotated[Path, typer.Argument(help="NONMEM-layout CSV with covariate columns.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model folder (resumes a killed run).")],
    prior: Annotated[
        str, typer.Option("--prior", help="Drug library model used as the mechanistic prior.")
    ] = "vancomycin",
    epochs: Annotated[int, typer.Option("--epochs", help="Most passes over the data.")] = 20,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Subjects per step.")] = 32,
    learning_rate: Annotated[float, typer.Option("--learning-rate", help="Adam step.")] = 3e-3,
    validation_fraction: Annotated[
        float, typer.Option("--validation-fraction", help="Share held out for early stopping.")
    ] = 0.2,
    patience: Annotated[int, typer.Option("--patience", help="Epochs without improvement.")] = 5,
    weight_decay: Annotated[
        float,
        typer.Option(
            "--weight-decay",
            help="Pull of the model's networks (prior, covariate shift, correction) back to "
            "the published model each step (AdamW); 0 turns it off.",
        ),
    ] = 0.3,
    checkpoint_every: Annotated[
        int, typer.Option("--checkpoint-every", help="Steps between checkpoints.")
    ] = 20,
    latent_dim: Annotated[int, typer.Option("--latent-dim", help="Size of z.")] = 4,
    hidden: Annotated[int, typer.Option("--hidden", help="Width of the networks.")] = 32,
    correction_hidden: Annotated[
        int, typer.Option("--correction-hidden", help="Width of the ODE correction network.")
    ] = 16,
    decoder: Annotated[
        str,
        typer.Option(
            "--decoder",
            help="hybrid: the prior's mechanistic ODE + a learned correction; neural: a latent "
            "neural ODE without the mechanistic prior (the baseline).",
        ),
    ] = "hybrid",
    neural_states: Annotated[
        int | None,
        typer.Option(
            "--neural-states", help="States of the neural decoder (default: the prior's)."
        ),
    ] = None,
    learn_variability: Annotated[
        bool,
        typer.Option(
            "--learn-variability/--published-variability",
            help="Learn the between-patient variability too (default: keep the prior's Ω; "
            "the ELBO tends to shrink it).",
        ),
    ] = False,
    modulate_volumes: Annotated[
        bool,
        typer.Option(
            "--modulate-volumes/--rates-only",
            help="hybrid: the correction also multiplies the volumes with between-patient "
            "variability (default: clearances and other rates only; the volumes over-narrowed "
            "the forecast intervals in the latent study).",
        ),
    ] = False,
    lloq: Annotated[
        float | None,
        typer.Option("--lloq", help="Limit of quantification (DV unit); below it: censored (M3)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Root seed.")] = 0,
    quiet: QuietOption = False,
) -> None:
    """Train a latent generative twin (mechanistic prior + flax networks) on a data set.

    `--decoder neural` trains the neural-only baseline (no mechanistic prior in the decoder).

    Writes model.json (settings, provenance) and params/ to --out; checkpoints/ there
    lets the same command resume after a kill.
    """
    out_console, err = _consoles()
    with _clean_errors(err):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        from .priors import DrugLibraryError, PopulationModelError
        from .scenarios._train import train_from_nonmem
        from .twin import LatentConfig, LatentModelError, TrainingSettings

        try:
            settings = TrainingSettings(
                epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                validation_fraction=validation_fraction, patience=patience,
                checkpoint_every=checkpoint_every, seed=seed, weight_decay=weight_decay,
            )  # fmt: skip
            config = LatentConfig(
                latent_dim=latent_dim, hidden=hidden, correction_hidden=correction_hidden,
                decoder=decoder, neural_states=neural_states,
                learn_variability=learn_variability, modulate_volumes=modulate_volumes,
            )  # fmt: skip
            columns = (
                TextColumn("epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("-ELBO {task.fields[loss]:.2f}  validation {task.fields[validation]}"),
            )
            with Progress(*columns, console=err, disable=quiet) as bar:
                task = bar.add_task("train", total=None, epoch=0, loss=float("nan"), validation="-")

                def progress(info: dict) -> None:
                    validation = info.get("validation")
                    bar.update(
                        task, completed=info["step"], total=info["steps_per_epoch"],
                        epoch=info["epoch"] + 1, loss=info["loss"],
                        **({"validation": f"{validation:.2f}"} if validation is not None else {}),
                    )  # fmt: skip

                with _reported_warnings(err):
                    result, path = train_from_nonmem(
                        data_file, prior, out, settings=settings, config=config, lloq=lloq,
                        command=_command_line(ctx), progress=progress,
                    )  # fmt: skip
        except (LatentModelError, PopulationModelError, DrugLibraryError) as exc:
            err.print(f"error: {exc}", markup=False)
            raise typer.Exit(2) from None
        if not quiet and result.history:
            last = result.history[-1]
            out_console.print(
                f"{len(result.history)} epochs; -ELBO per patient: train {last['train']:.2f}, "
                f"validation {last['validation']:.2f}"
                + (" (stopped early)" if result.stopped_early else ""),
                markup=False,
            )
        out_console.print(f"wrote {path}", markup=False)


@app.command("synth-report")
def synth_report(
    ctx: typer.Context,
    model_dir: Annotated[Path, typer.Argument(help="Latent model folder (from `twinsim train`).")],
    data_file: Annotated[
        Path, typer.Argument(help="The NONMEM-layout CSV the model was trained on.")
    ],
    holdout: Annotated[
        Path,
        typer.Option("--holdout", help="NONMEM-layout CSV of real patients the model never saw."),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for report.json and report.html.")
    ],
    n: Annotated[
        int | None,
        typer.Option("--n", min=1, help="Synthetic patients (default: as many as trained on)."),
    ] = None,
    weight_based_doses: Annotated[
        bool,
        typer.Option(
            "--weight-based-doses/--fixed-doses",
            help="Scale a borrowed regimen by synthetic/donor weight (mg/kg regimens).",
        ),
    ] = False,
    lloq: Annotated[
        float | None,
        typer.Option("--lloq", help="Limit of quantification (DV unit); below it: censored (M3)."),
    ] = None,
    mia_max: Annotated[
        float, typer.Option("--mia-max", help="Largest acceptable membership-inference AUC.")
    ] = 0.6,
    seed: Annotated[int, typer.Option("--seed", help="Root seed (same seed, same report).")] = 0,
    quiet: QuietOption = False,
) -> None:
    """Are a latent model's synthetic patients useful and private? Fidelity and privacy report.

    Generates synthetic patients (copula covariates, training designs, the model's
    trajectories) and compares them with the training patients (marginals, pairs, a
    detection classifier) and, for privacy, with holdout patients (distance to the
    closest training record, membership-inference attack AUC). Exit code 1 when the
    privacy checks fail.
    """
    out_console, err = _consoles()
    with _clean_errors(err):
        from rich.table import Table

        from .priors import DrugLibraryError, PopulationModelError
        from .scenarios._synthetic import synthetic_report_from_files
        from .twin import LatentModelError

        try:
            with _reported_warnings(err):
                report, paths = synthetic_report_from_files(
                    model_dir, data_file, holdout, out, n=n, seed=seed,
                    weight_based_doses=weight_based_doses, lloq=lloq, mia_max=mia_max,
                    command=_command_line(ctx),
                )  # fmt: skip
        except (LatentModelError, PopulationModelError, DrugLibraryError) as exc:
            err.print(f"error: {exc}", markup=False)
            raise typer.Exit(2) from None
        if not quiet:
            table = Table(title="Synthetic patients: fidelity and privacy")
            for column in ("measure", "value", "meaning"):
                table.add_column(column)
            for row in report.summary():
                table.add_row(*row)
            out_console.print(table)
            verdict = "privacy checks passed" if report.passed else "privacy checks FAILED"
            out_console.print(verdict, markup=False)
        for path in paths.values():
            out_console.print(f"wrote {path}", markup=False)
        if not report.passed:
            raise typer.Exit(1)


def main() -> None:
    """Entry point of the ``twinsim`` console script."""
    app()
