"""Population fits from NONMEM data sets: data mapping, models by name, report and VPC.

``twinsim fit DATA.csv --model one_compartment_oral --method nuts --out DIR`` (or
``--model my_model.py``, a user model file: :func:`load_model_file`) reads the
data set with :func:`~twinsim.scenarios.read_nonmem`, maps it onto the model
(:func:`fit_data`), fits it (:func:`~twinsim.twin.fit_population`) and writes
(:func:`write_fit_report`):

- ``estimates.csv``: one row per population parameter (estimate — the optimum for
  Laplace/FOCE-I, the posterior median for NUTS/SVI —, SE, RSE %, 90 % interval, CV % for
  BSV, R-hat and ESS for NUTS);
- ``report.json``: ``success`` and ``failure_reasons`` (a fit whose optimiser or
  covariance step failed, whose estimates are implausible or at a bound, or whose chains
  do not mix is reported as failed, with why), estimates, η-shrinkage, diagnostics (OFV
  on NONMEM's scale: −2 log L without N·log 2π), data and model facts, command;
- ``report.md``: the same as a readable table;
- ``vpc.html``: a visual predictive check (plotly): observed 5th/50th/95th percentiles
  per time bin against the 90 % intervals of the same percentiles in data sets simulated
  from the fitted model; ``vpc.png`` too when a static image engine (kaleido with a
  Chrome/Chromium) is installed, otherwise the report says why it is missing.

An example data set ships with twinsim: ``examples/theophylline_nonmem.csv`` next to this
module (Boeckmann, Sheiner & Beal, *NONMEM Users Guide*, 1994: 12 subjects, one oral dose
of theophylline, the observations of R's ``datasets::Theoph``; ``AMT`` in mg, ``DV``
mg/L, ``WT`` kg); :func:`example_data_path` returns its path.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..priors import ObservationData, PopulationModel
from ._nonmem import NonmemData, NonmemError

__all__ = [
    "FIT_MODELS",
    "NONMEM_COVARIATE_NAMES",
    "TimeVaryingCovariateWarning",
    "UserModel",
    "example_data_path",
    "fit_data",
    "fit_model",
    "load_model_file",
    "vpc_figure",
    "write_fit_report",
]

#: NONMEM column names mapped to twinsim's standard covariate names.
NONMEM_COVARIATE_NAMES = {
    "WT": "weight",
    "AGE": "age",
    "HT": "height",
    "SEX": "female",
    "SCR": "serum_creatinine",
    "CRCL": "crcl",
    "DIAL": "dialysis",
}

#: Models ``twinsim fit --model`` accepts besides the drug library's names.
FIT_MODELS = ("one_compartment_oral", "one_compartment_iv", "two_compartment_oral")


class FitDataError(NonmemError):
    """A data set cannot be mapped onto the model to fit."""


class TimeVaryingCovariateWarning(UserWarning):
    """A covariate the model holds constant per subject changes within subjects in the data."""


def _generic_model(name: str, error: str) -> PopulationModel:
    from ..priors import ResidualError, one_compartment, two_compartment

    residual = {
        "additive": ResidualError(additive=1.0),
        "proportional": ResidualError(proportional=0.2),
        "combined": ResidualError(additive=0.5, proportional=0.1),
        "exponential": ResidualError(proportional=0.2, exponential=True),
    }
    if error not in residual:
        raise FitDataError(f"`--error` must be one of {list(residual)}, got {error!r}")
    # neutral starting values (the centres of wide priors), not anyone's estimates
    if name == "one_compartment_oral":
        structural = one_compartment(absorption=True)
        theta = {"cl": 1.0, "v": 20.0, "ka": 1.0, "f_oral": 1.0}
        effects = ("cl", "v", "ka")
    elif name == "one_compartment_iv":
        structural = one_compartment()
        theta = {"cl": 1.0, "v": 20.0}
        effects = ("cl", "v")
    else:
        structural = two_compartment(absorption=True)
        theta = {"cl": 1.0, "v1": 20.0, "q": 1.0, "v2": 20.0, "ka": 1.0, "f_oral": 1.0}
        effects = ("cl", "v1", "ka")
    return PopulationModel(
        name=name,
        structural=structural,
        theta=theta,
        theta_units=dict(structural.parameter_units),
        random_effects=effects,
        omega=np.full(len(effects), 0.1),
        residual={"conc": residual[error]},
        fixed=("f_oral",) if "f_oral" in theta else (),
        citation=structural.citation,
        notes="generic model for `twinsim fit`; f_oral fixed at 1 (apparent CL/F and V/F)",
    )


def example_data_path() -> Path:
    """Path of the theophylline NONMEM data set shipped with twinsim (see the module docs).

    Examples
    --------
    >>> example_data_path().name
    'theophylline_nonmem.csv'
    """
    from importlib import resources

    return Path(str(resources.files("twinsim.scenarios") / "examples" / "theophylline_nonmem.csv"))


def fit_model(name: str, *, error: str = "additive") -> PopulationModel:
    """The population model ``twinsim fit --model NAME`` fits.

    ``one_compartment_oral`` (``cl, v, ka`` with BSV on each, ``f_oral`` fixed at 1),
    ``one_compartment_iv``, ``two_compartment_oral``, with the residual ``error`` model
    (``additive``, ``proportional``, ``combined``, ``exponential``); or a drug library
    model (e.g. ``theophylline``, fitted in its linear form).

    Examples
    --------
    >>> fit_model("one_compartment_oral").random_effects
    ('cl', 'v', 'ka')
    """
    if name in FIT_MODELS:
        return _generic_model(name, error)
    from .. import priors

    library = getattr(priors, "DRUG_LIBRARY", {})
    linear_name = f"{name}_linear"
    if name == "theophylline" and hasattr(priors, "theophylline_model"):
        return priors.theophylline_model(cessation=False)
    if name in library:
        return library[name]
    if linear_name in library:
        return library[linear_name]
    raise FitDataError(f"`--model` {name!r} is not known; give one of {[*FIT_MODELS, *library]}")


@dataclass(frozen=True)
class UserModel:
    """A population model from a user's model file (:func:`load_model_file`)."""

    model: PopulationModel  #: structural model, covariate model, random effects, residual error
    initial: dict[str, float] = field(default_factory=dict)  #: starting values
    bounds: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    path: Path | None = None


def load_model_file(path: str | Path) -> UserModel:
    r"""Load a population model from a Python file (``twinsim fit DATA --model FILE.py``).

    The contract: the file is plain Python, run once as a module, and defines

    - ``model``: a :class:`~twinsim.priors.PopulationModel` — the structural model
      (``structural``, an :class:`~twinsim.priors.ODEModel` such as
      ``one_compartment()`` or your own), the covariate model (``parameters=`` a function
      ``(theta, covariates) -> {structural parameter: array}`` with the ``covariates=``
      it declares), the random effects (``random_effects``, ``omega``) and the residual
      error (``residual``); its ``theta``, ``omega`` and residual SDs are the starting
      values; or ``build_model()``, a function without arguments returning one;
    - optionally ``initial``: ``{name: value}`` starting values that replace the
      model's (``cl`` or ``theta_cl``, ``omega_sd_cl``, ``sigma_conc_proportional``);
    - optionally ``bounds``: ``{name: (lower, upper)}`` on the natural scale (``None``
      for an open side), same names.

    Covariate effects (exponents, slopes) may take either sign: they are estimated on
    their own scale; only positive structural parameters are estimated on the log scale.

    Raises
    ------
    FitDataError
        The file is missing or not ``.py``, raises when run (its error is quoted), or
        does not define ``model``/``build_model`` as a PopulationModel, or ``initial``/
        ``bounds`` are not mappings.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> text = (
    ...     "from twinsim.priors import PopulationModel, ResidualError, one_compartment\n"
    ...     "model = PopulationModel(name='mine', structural=one_compartment(),\n"
    ...     "    theta={'cl': 1.0, 'v': 20.0}, random_effects=('cl',), omega=[0.1],\n"
    ...     "    residual={'conc': ResidualError(proportional=0.2)})\n"
    ...     "initial = {'cl': 0.006, 'v': 1.3}\n"
    ... )
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "mine.py"
    >>> _ = path.write_text(text)
    >>> user = load_model_file(path)
    >>> user.model.name, user.initial
    ('mine', {'cl': 0.006, 'v': 1.3})
    """
    path = Path(path)
    if path.suffix != ".py":
        raise FitDataError(f"model file {str(path)!r} must be a Python file ending in .py")
    if not path.is_file():
        raise FitDataError(f"model file {str(path)!r} does not exist")
    name = f"twinsim_user_model_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise FitDataError(f"model file {str(path)!r} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise FitDataError(
            f"model file {str(path)!r} raised {type(exc).__name__} when run: {exc}"
        ) from exc
    model = getattr(module, "model", None)
    if model is None and callable(getattr(module, "build_model", None)):
        try:
            model = module.build_model()
        except Exception as exc:
            raise FitDataError(
                f"model file {str(path)!r}: build_model() raised {type(exc).__name__}: {exc}"
            ) from exc
    if model is None:
        defined = sorted(k for k in vars(module) if not k.startswith("_"))
        raise FitDataError(
            f"model file {str(path)!r} must define `model` (a twinsim.priors.PopulationModel) "
            f"or `build_model()` returning one; it defines {defined}"
        )
    if not isinstance(model, PopulationModel):
        raise FitDataError(
            f"model file {str(path)!r}: `model` must be a twinsim.priors.PopulationModel, got "
            f"{type(model).__name__}"
        )
    extras = {}
    for key in ("initial", "bounds"):
        value = getattr(module, key, None) or {}
        if not isinstance(value, Mapping):
            raise FitDataError(
                f"model file {str(path)!r}: `{key}` must be a dict of parameter name to "
                f"{'value' if key == 'initial' else '(lower, upper)'}, got {type(value).__name__}"
            )
        extras[key] = dict(value)
    return UserModel(model, extras["initial"], extras["bounds"], path)


def fit_data(
    data: NonmemData,
    model: PopulationModel,
    *,
    covariate_columns: Mapping[str, str] | None = None,
    output_by_cmt: Mapping[int, str] | None = None,
    lloq: float | None = None,
    covariate_map: Mapping[str, str] | None = None,
    covariate_defaults: Mapping[str, Any] | None = None,
    covariate_interpolation: str = "locf",
) -> ObservationData:
    """Map a NONMEM data set onto ``model``'s observations, doses and covariates.

    Observation records are those with ``EVID`` 0 and ``MDV`` 0 (``MDV`` 1 records are
    dropped). With ``lloq``, observations below it are censored (M3 likelihood).
    Covariate columns are renamed with :data:`NONMEM_COVARIATE_NAMES` (and
    ``covariate_columns``) and lower-cased otherwise. A covariate the model declares but
    the data set lacks is an error naming it and the data's columns, unless it is mapped
    onto a column (``covariate_map``) or given one value for every subject
    (``covariate_defaults``) — never silently its reference value (every neonate would
    weigh 70 kg).

    Covariates are per subject (the value on its first record), except those the model
    declares ``Covariate(..., time_varying=True)``: their values on every record
    (doses, observations and ``EVID`` 2 records) are kept, and the individual parameters
    change at the records where a value changes (:attr:`ObservationData.covariate_times`).
    A column the model holds constant that changes within a subject warns
    (:class:`TimeVaryingCovariateWarning`, naming the column and the subjects) and keeps
    the first record's value.

    Which interval a record's value governs (``covariate_interpolation``):

    - ``"locf"`` (default, last observation carried forward): a value recorded at time
      ``t`` holds from ``t`` (included) until the next record — the value is known from
      when it is measured. rxode2/nlmixr2's default (``covsInterpolation = "locf"``).
    - ``"nocb"`` (next observation carried backward): a value recorded at ``t_j`` holds
      on the interval from the previous record ``t_(j−1)`` to ``t_j``: NONMEM's PREDPP
      uses an event record's data items for the advance that *ends* at that record's time
      (NONMEM Users Guide, Part VI, PREDPP), which mrgsolve reproduces with its default
      ``nocb = TRUE``. Here the change happens at ``t_(j−1)`` itself, so an observation
      exactly at ``t_(j−1)`` already sees ``t_j``'s value when an output reads a changing
      parameter (``central / v``); concentrations of a changing clearance are continuous
      and agree.

    Missing values (``.``) of a time-varying covariate take the subject's previous
    value (the next one before its first value).

    Parameters
    ----------
    data
        From :func:`~twinsim.scenarios.read_nonmem`.
    model
        The population model.
    covariate_columns
        Extra ``{COLUMN: covariate name}``.
    output_by_cmt
        ``{CMT: output name}`` for models with several outputs (default: every
        observation is the model's first output with a residual error).
    lloq
        One limit of quantification for every observation (output unit).
    covariate_map
        ``{model covariate: data column}`` (any case), e.g. ``{"weight": "BW"}``.
    covariate_defaults
        ``{model covariate: value}`` for covariates the data set does not have.
    covariate_interpolation
        ``"locf"`` or ``"nocb"``: see above.

    Returns
    -------
    ObservationData

    Raises
    ------
    FitDataError
        For a subject without observations, an unknown output, a model covariate absent
        from the data (neither mapped nor defaulted), a map onto a missing column, or a
        time-varying covariate without any value for a subject.
    """
    if covariate_interpolation not in ("locf", "nocb"):
        raise FitDataError(
            f"`covariate_interpolation` must be 'locf' (last observation carried forward) or "
            f"'nocb' (next observation carried backward, NONMEM's), got {covariate_interpolation!r}"
        )
    names = dict(NONMEM_COVARIATE_NAMES)
    names.update(covariate_columns or {})
    observed_outputs = [o for o in model.structural.output_names if o in model.residual]
    if not observed_outputs:
        raise FitDataError(f"model {model.name!r} has no output with a residual error")
    obs = data.observations
    obs = obs[(obs["EVID"] == 0) & (obs["MDV"] == 0)]
    columns = {c.upper(): c for c in data.covariates.columns}
    times, values, outputs, censored, limits = [], [], [], [], []
    for subject in data.ids:
        rows = obs[obs["ID"] == subject].sort_values("TIME", kind="stable")
        if rows.empty:
            raise FitDataError(
                f"subject ID {subject} has no observation records (EVID 0, MDV 0); "
                "remove the subject or add its observations"
            )
        times.append(rows["TIME"].to_numpy(float))
        values.append(rows["DV"].to_numpy(float))
        if output_by_cmt:
            out_idx = []
            for cmt in rows["CMT"].to_numpy(int):
                if cmt not in output_by_cmt:
                    raise FitDataError(
                        f"observation CMT {cmt} of subject {subject} has no output in "
                        f"`output_by_cmt` {dict(output_by_cmt)}"
                    )
                out_idx.append(model.structural.output_names.index(output_by_cmt[cmt]))
        else:
            out_idx = [model.structural.output_names.index(observed_outputs[0])] * len(rows)
        outputs.append(out_idx)
        limit = np.full(len(rows), np.nan if lloq is None else float(lloq))
        cens = np.zeros(len(rows), bool)
        if lloq is not None:
            cens = np.nan_to_num(rows["DV"].to_numpy(float), nan=-np.inf) < limit
        censored.append(cens)
        limits.append(limit)
    covariates: dict[str, Any] = {}
    column_of: dict[str, Any] = {}
    for column in data.covariates.columns:
        name = names.get(column.upper(), column.lower())
        covariates[name] = data.covariates[column].to_numpy()
        column_of[name] = column
    for name, column in (covariate_map or {}).items():
        if column.upper() not in columns:
            raise FitDataError(
                f"covariate map {name}={column}: the data set has no column {column!r}; its "
                f"columns: {list(data.covariates.columns)}"
            )
        covariates[name] = data.covariates[columns[column.upper()]].to_numpy()
        column_of[name] = columns[column.upper()]
    change_times = None
    records = data.covariate_records
    if records is not None:
        _warn_constant_but_varying(model, records, column_of)
        varying = [(c.name, column_of[c.name]) for c in model.covariates if c.time_varying
                   and c.name in column_of]  # fmt: skip
        if varying:
            over_time, change_times = _time_varying_covariates(
                data, records, varying, covariate_interpolation
            )
            covariates.update(over_time)
    for name, value in (covariate_defaults or {}).items():
        if name not in model.covariate_names:
            raise FitDataError(
                f"covariate default {name}={value!r}: model {model.name!r} has no covariate "
                f"{name!r}; its covariates: {list(model.covariate_names)}"
            )
        if name not in covariates:
            covariates[name] = np.full(data.n_subjects, value)
    for cov in model.covariates:
        if cov.name in covariates or cov.default is not None:  # optional: takes its default
            continue
        raise FitDataError(
            f"model {model.name!r} needs covariate `{cov.name}` ({cov.unit}), which the data "
            f"set lacks: its columns are {list(data.covariates.columns)} besides the NONMEM "
            f"ones (standard names: {NONMEM_COVARIATE_NAMES}). Map a column with "
            f"`--covariate-map {cov.name}=COLUMN` (covariate_map), or give every subject one "
            f"value with `--covariate-default {cov.name}=VALUE` (covariate_defaults)"
            + (f", e.g. its reference {cov.reference!r}" if cov.reference is not None else "")
        )
    any_limit = any(np.any(np.isfinite(lim)) for lim in limits)
    return ObservationData.build(
        data.events(),
        times,
        values,
        covariates=covariates,
        output=outputs,
        censored=censored if any_limit else None,
        lloq=limits if any_limit else None,
        ids=data.ids,
        covariate_times=change_times,
    )


def _warn_constant_but_varying(model: PopulationModel, records, column_of) -> None:
    for cov in model.covariates:
        if cov.time_varying or cov.name not in column_of:
            continue
        column = column_of[cov.name]
        counts = records.groupby("ID", sort=False)[column].nunique(dropna=True)
        subjects = counts.index[counts > 1].tolist()
        if subjects:
            shown = ", ".join(map(str, subjects[:10])) + (" …" if len(subjects) > 10 else "")
            warnings.warn(
                f"column {column} (model covariate `{cov.name}`) changes within "
                f"{len(subjects)} subject(s) (IDs {shown}), but model {model.name!r} holds "
                f"`{cov.name}` constant per subject: each subject keeps the value on its first "
                f"record. Declare Covariate({cov.name!r}, ..., time_varying=True) in the model "
                "to use every record's value",
                TimeVaryingCovariateWarning,
                stacklevel=3,
            )


def _time_varying_covariates(data: NonmemData, records, varying, interpolation: str):
    """``{name: [subject, segment]}`` and the segments' start times ``[subject, segment]``."""
    per_subject = []
    for subject in data.ids:
        rows = records[records["ID"] == subject]
        times = rows["TIME"].to_numpy(float)
        columns = []
        for name, column in varying:
            values = rows[column].ffill().bfill()
            if values.isna().all():
                raise FitDataError(
                    f"time-varying covariate `{name}` (column {column}) has no value for "
                    f"subject ID {subject}; give it on at least one of its records"
                )
            columns.append(values.to_numpy())
        if interpolation == "nocb":  # record j's value holds from the previous record on
            starts = np.concatenate([[0.0], times[:-1]])
        else:
            starts = np.concatenate([[0.0], times[1:]])
        segments: list[tuple[float, tuple]] = []
        for j, start in enumerate(starts):
            value = tuple(column[j] for column in columns)
            if segments and segments[-1][0] == start:  # same time: the later record holds
                segments[-1] = (start, value)
            else:
                segments.append((start, value))
        merged = [segments[0]]
        for start, value in segments[1:]:
            if value != merged[-1][1]:
                merged.append((start, value))
        per_subject.append(merged)
    k = max(len(segments) for segments in per_subject)
    padded = [segments + [segments[-1]] * (k - len(segments)) for segments in per_subject]
    change_times = np.array([[start for start, _ in segments] for segments in padded], float)
    values = {
        name: np.array([[value[m] for _, value in segments] for segments in padded])
        for m, (name, _) in enumerate(varying)
    }
    return values, change_times


# --------------------------------------------------------------------------- VPC


def _bins(times: np.ndarray, n_bins: int) -> np.ndarray:
    edges = np.unique(np.quantile(times, np.linspace(0, 1, n_bins + 1)))
    edges[-1] = np.nextafter(edges[-1], np.inf)
    return edges


def _binned_percentiles(times, values, edges, percentiles) -> np.ndarray:
    index = np.clip(np.searchsorted(edges, times, side="right") - 1, 0, len(edges) - 2)
    out = np.full((len(edges) - 1, len(percentiles)), np.nan)
    for b in range(len(edges) - 1):
        chosen = values[index == b]
        chosen = chosen[np.isfinite(chosen)]
        if chosen.size:
            out[b] = np.percentile(chosen, percentiles)
    return out


def vpc_figure(
    fit: Any,
    *,
    n_replicates: int = 200,
    seed: int = 0,
    n_bins: int = 8,
    percentiles: Sequence[float] = (5.0, 50.0, 95.0),
    output: str | None = None,
):
    """Visual predictive check of a :class:`~twinsim.twin.PopulationFit` (plotly figure).

    ``n_replicates`` copies of the study (same doses, times and covariates) are simulated
    from the fitted model (population parameters at their posterior medians) with
    between-subject variability and residual error. Per time bin (quantiles of the
    observed times) the figure shows the observed percentiles (lines) and the 90 %
    interval of each simulated percentile (bands), with the observations as points.

    Returns
    -------
    (plotly.graph_objects.Figure, dict)
        The figure and the numbers behind it (bin edges, observed and simulated
        percentiles), e.g. to check coverage.
    """
    import plotly.graph_objects as go

    data = fit.data
    model = fit.fitted_model()
    names = model.structural.output_names
    output = output or next(o for o in names if o in model.residual)
    j = names.index(output)
    mask = np.asarray(data.mask) & (np.asarray(data.output) == j) & ~np.asarray(data.censored)
    times = np.asarray(data.times)
    observed = np.asarray(data.observed)
    n = data.n_subjects
    ids = np.arange(n_replicates * n)
    replicate = np.tile(np.arange(n), n_replicates)
    covariates = {k: np.asarray(v)[replicate] for k, v in data.covariates.items()}
    events = data.events.subset(replicate)
    change_times = None
    if data.covariate_times is not None:
        change_times = np.asarray(data.covariate_times)[replicate]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the data's own covariates: range warnings said once
        sim = model.simulate(
            seed,
            covariates,
            events,
            np.tile(times, (n_replicates, 1)),
            ids=ids,
            covariate_times=change_times,
        )
    simulated = np.asarray(sim.observed[..., j]).reshape(n_replicates, n, -1)
    edges = _bins(times[mask], n_bins)
    centres = 0.5 * (edges[:-1] + edges[1:])
    obs_pct = _binned_percentiles(times[mask], observed[mask], edges, percentiles)
    sim_pct = np.stack(
        [
            _binned_percentiles(times[mask], simulated[r][mask], edges, percentiles)
            for r in range(n_replicates)
        ]
    )
    band = np.nanpercentile(sim_pct, [5.0, 50.0, 95.0], axis=0)  # [3, bin, percentile]
    unit = dict(model.structural.output_units).get(output, "")
    fig = go.Figure()
    colours = ("rgba(31,119,180,0.25)", "rgba(214,39,40,0.25)", "rgba(31,119,180,0.25)")
    for k, pct in enumerate(percentiles):
        fig.add_trace(
            go.Scatter(
                x=np.concatenate([centres, centres[::-1]]),
                y=np.concatenate([band[2, :, k], band[0, :, k][::-1]]),
                fill="toself",
                fillcolor=colours[k % len(colours)],
                line={"width": 0},
                name=f"simulated P{pct:g}, 90 % interval",
                hoverinfo="skip",
            )
        )
    for k, pct in enumerate(percentiles):
        fig.add_trace(
            go.Scatter(
                x=centres,
                y=obs_pct[:, k],
                mode="lines+markers",
                line={"color": "black", "dash": "solid" if pct == 50 else "dash"},
                name=f"observed P{pct:g}",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=times[mask],
            y=observed[mask],
            mode="markers",
            marker={"size": 4, "color": "rgba(0,0,0,0.35)"},
            name="observations",
        )
    )
    fig.update_layout(
        title=f"VPC: {model.name}, {fit.method}, {n_replicates} simulated studies",
        xaxis_title="time (h)",
        yaxis_title=f"{output} ({unit})" if unit else output,
        template="plotly_white",
    )
    numbers = {
        "edges": edges.tolist(),
        "percentiles": list(percentiles),
        "observed": obs_pct.tolist(),
        "simulated_low": band[0].tolist(),
        "simulated_median": band[1].tolist(),
        "simulated_high": band[2].tolist(),
    }
    return fig, numbers


# --------------------------------------------------------------------------- report


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        return _clean(value.item())
    return value


def _markdown(fit: Any) -> str:
    d = fit.diagnostics
    status = "succeeded (every check passed)" if fit.success else "**FAILED**"
    lines = [
        f"# Population fit: {fit.model.name} ({fit.method})",
        "",
        f"{fit.data.n_subjects} subjects, {fit.data.n_observations} observations.",
        "",
        f"Fit {status}.",
    ]
    lines += [f"- {reason}" for reason in d.get("failure_reasons", [])]
    if "objective_function_value" in d:
        lines += [
            "",
            f"OFV {d['objective_function_value']:.3f} ({d['ofv_definition']}); "
            f"−2 log L {d['minus_2_log_likelihood']:.3f}. Estimation: {d['estimation']}.",
        ]
    lines += [
        "",
        "| parameter | unit | estimate | SE | RSE % | 90 % interval | CV % | R-hat | ESS bulk |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def fmt(value, spec):
        return "" if not math.isfinite(value) else format(value, spec)

    for row in fit.summary:
        lines.append(
            f"| {row['name']} | {row['unit']} | {row['estimate']:.4g} | {fmt(row['se'], '.3g')} | "
            f"{fmt(row['rse_percent'], '.1f')} | {row['q05']:.4g} – {row['q95']:.4g} | "
            f"{fmt(row['cv_percent'], '.1f')} | {fmt(row['r_hat'], '.3f')} | "
            f"{fmt(row['ess_bulk'], '.0f')} |"
        )
    lines += [
        "",
        "η-shrinkage: " + ", ".join(f"{k} {100 * v:.1f} %" for k, v in fit.shrinkage.items()),
    ]
    shown = {k: v for k, v in d.items() if not isinstance(v, (dict, list))}
    lines += ["", "Diagnostics: " + ", ".join(f"{k} {v}" for k, v in shown.items())]
    return "\n".join(lines) + "\n"


def write_fit_report(
    fit: Any,
    out_dir: str | Path,
    *,
    vpc_replicates: int = 200,
    seed: int = 0,
    png: bool = True,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Path | None]:
    """Write ``estimates.csv``, ``report.json``, ``report.md``, ``vpc.html`` (and ``vpc.png``).

    Returns ``{what: path}``; ``"vpc_png"`` is ``None`` when no static image engine is
    available (``report.json`` then says why under ``vpc_png_error``).
    """
    import pandas as pd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path | None] = {}
    estimates = out / "estimates.csv"
    pd.DataFrame(fit.summary).to_csv(estimates, index=False)
    paths["estimates"] = estimates
    figure, numbers = vpc_figure(fit, n_replicates=vpc_replicates, seed=seed)
    html = out / "vpc.html"
    figure.write_html(html, include_plotlyjs=True)
    paths["vpc_html"] = html
    png_error = None
    paths["vpc_png"] = None
    if png:
        try:
            figure.write_image(out / "vpc.png")
            paths["vpc_png"] = out / "vpc.png"
        except Exception as exc:  # kaleido or Chrome missing: the fit itself is fine
            detail = " ".join(str(exc).split())
            png_error = (
                f"vpc.png not written ({type(exc).__name__}: {detail}); static images need "
                "kaleido>=1 and a Chrome/Chromium browser (e.g. Debian's `chromium`)"
            )
    report = {
        "model": {
            "name": fit.model.name,
            "citation": fit.model.citation,
            "theta_start": fit.model.theta,
            "random_effects": list(fit.model.random_effects),
            "residual": {k: v.kind for k, v in fit.model.residual.items()},
            "time_varying_covariates": list(fit.model.time_varying_covariates),
        },
        "data": {
            "n_subjects": fit.data.n_subjects,
            "n_observations": fit.data.n_observations,
            # the most covariate segments of any subject (1: covariates constant)
            "max_covariate_segments": 1
            if fit.data.covariate_times is None
            else int(np.shape(fit.data.covariate_times)[1]),
        },
        "success": fit.success,
        "failure_reasons": fit.diagnostics.get("failure_reasons", []),
        "estimates": fit.summary,
        "shrinkage": fit.shrinkage,
        "diagnostics": fit.diagnostics,
        "vpc": numbers,
        "vpc_png_error": png_error,
        **dict(extra or {}),
    }
    path = out / "report.json"
    path.write_text(json.dumps(_clean(report), indent=2, default=str) + "\n", encoding="utf-8")
    paths["report"] = path
    md = out / "report.md"
    md.write_text(_markdown(fit), encoding="utf-8")
    paths["markdown"] = md
    return paths
