"""Population models: typical values from covariates, between-subject and between-occasion
variability, residual error — one definition to simulate from and to infer with.

A :class:`PopulationModel` wraps a structural :class:`~twinsim.priors.ODEModel` with

- ``theta``: named fixed effects (typical values, covariate exponents and multipliers);
- ``parameters(theta, covariates) -> {structural parameter: array[subject]}``: typical
  structural parameters per subject. ``theta`` is a :class:`~twinsim.priors.Named` view
  (``theta.cl``), ``covariates`` a mapping of covariate name to an array over subjects in
  which categorical covariates (those declared with ``levels``) are already encoded as the
  0-based index of the level (so ``jnp.array([1.0, 0.685])[covariates["cyp2c9"]]`` is a
  genotype multiplier). Structural parameters the function does not return are taken from
  ``theta`` by name; with ``parameters=None`` every structural parameter comes from theta.
  A covariate declared ``Covariate(..., time_varying=True)`` may change during a
  subject's course: give its values as ``[subject, segment]`` with the segments' start
  times (``covariate_times`` of :meth:`PopulationModel.simulate` and
  :meth:`ObservationData.build`). The function is then called once per segment (still
  with one value per subject), the individual parameters are piecewise constant in time
  and predictions solve the course segment after segment, exactly (see
  :mod:`twinsim.priors._segments`): the value given at a change time holds from that time
  on, last observation carried forward. Covariates that change continuously (a smoking
  cessation's decay) are modelled inside the structural model instead, as parameters (e.g.
  a quit time) that this function supplies;
- ``random_effects``: structural parameters with log-normal between-subject variability,
  ``p_i = p_typ,i · exp(η_i)``, ``η_i ~ N(0, Ω)`` with ``omega`` the full covariance Ω
  (log scale, NONMEM ``$OMEGA BLOCK``);
- optional between-occasion variability (BOV): ``occasion_effects`` with covariance
  ``occasion_omega``; on occasion ``k`` the parameter is ``p_typ · exp(η_i + κ_ik)``,
  ``κ_ik ~ N(0, Ω_occ)``. Occasions start at the times ``occasions`` (h; the first is 0).
  An occasion's parameters apply to the whole dosing history used to predict that
  occasion's outputs: exact when occasions are separate dosing periods with washout or at
  steady state (crossover studies, separate visits), an approximation when the parameters
  change while an earlier occasion's doses are still in the body;
- ``residual``: one :class:`ResidualError` per output (additive, proportional, combined,
  exponential; M3 censoring below the limit of quantification in the likelihood);
- ``covariates``: the :class:`Covariate` declarations (units, reference values, the range
  the model was estimated on; :meth:`PopulationModel.check_covariates` warns
  :class:`CovariateRangeWarning` outside it).

API (``pm`` a PopulationModel, ``cov`` a mapping of covariate arrays over subjects):

- ``pm.typical_parameters(cov) -> [subject, P]``; ``pm.individual_parameters(cov, eta)``;
- ``pm.sample_parameters(seed, cov, ids=None) -> PopulationSample`` (η, κ and the
  individual parameters ``[subject, occasion, P]``); subject ``i`` depends only on
  ``(seed, ids[i])`` (:func:`~twinsim.simulators.subject_keys`), never on the batch;
- ``pm.simulate(seed, cov, events, times, *, residual=True, ids=None) ->
  PopulationSimulation`` (predictions, noisy observations, parameters);
- ``pm.check_covariates(cov)`` (warns), ``pm.encode_covariates(cov)`` (arrays for jit);
- ``ObservationData.build(...)``: observations as padded arrays for inference;
- ``pm.log_likelihood(data, params)``: ``[subject]`` log-likelihood of the observations;
- ``pm.population_model(data, priors=...)``: a NumPyro model with θ, Ω (half-normal
  SDs and an LKJ correlation for a full Ω), residual SDs and η per subject random;
- ``pm.individual_model(data, prior_weight=1.0)``: a NumPyro model with θ, Ω, σ fixed at
  the model's values and η (and κ) per subject random; ``prior_weight`` scales the
  population prior's log density (1: Bayes; < 1: trust the data more);
- ``pm.replace(**changes)``: a new model with some fields changed.

Examples
--------
>>> import jax.numpy as jnp
>>> from twinsim.priors import Covariate, PopulationModel, ResidualError, one_compartment
>>> pm = PopulationModel(
...     name="demo",
...     structural=one_compartment(absorption=True),
...     theta={"cl": 2.8, "v": 31.5, "ka": 1.5, "f_oral": 1.0, "cl_wt": 0.75},
...     parameters=lambda th, cov: {"cl": th.cl * (cov["weight"] / 70.0) ** th.cl_wt},
...     random_effects=("cl", "v", "ka"),
...     omega=jnp.diag(jnp.array([0.27, 0.13, 0.64]) ** 2),
...     residual={"conc": ResidualError(additive=0.7)},
...     covariates=(Covariate("weight", "kg", 70.0, range=(40.0, 120.0)),),
... )
>>> [round(float(c), 3) for c in pm.typical_parameters({"weight": jnp.array([70.0, 140.0])})[:, 0]]
[2.8, 4.709]
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from ..simulators._model import Named, ODEModel
from ._covariates import DERIVED_COVARIATES
from ._errors import PopulationModelError

__all__ = [
    "Covariate",
    "CovariateRangeWarning",
    "InferencePriors",
    "ObservationData",
    "PopulationModel",
    "PopulationModelError",
    "PopulationSample",
    "PopulationSimulation",
    "ResidualError",
]

# tags folded into a subject's key so that each kind of draw has its own stream
_ETA, _OCCASION, _RESIDUAL = 0, 1, 2
_LOG_2PI = math.log(2.0 * math.pi)


class CovariateRangeWarning(UserWarning):
    """A covariate lies outside the range the model was estimated on (extrapolation)."""


# --------------------------------------------------------------------------- covariates


@dataclass(frozen=True)
class Covariate:
    """A covariate a population model uses.

    Parameters
    ----------
    name
        Column name in the covariate table (see the standard names in the docs), e.g.
        ``"weight"``, ``"crcl"``, ``"cyp2c9"``.
    unit
        Unit of the values, e.g. ``"kg"``; ``""`` for unitless or categorical.
    reference
        Reference value the effect is centred on (e.g. 70 kg), or the reference level.
    range
        ``(low, high)`` the model was estimated on; values outside warn.
    levels
        For a categorical covariate: its levels (strings); the model sees the 0-based
        index of the level.
    description
        Free text (source, how it is measured).
    default
        Value used when the column is absent (optional covariates such as a
        co-medication flag, absent meaning "not taking it"); ``None``: the column is
        required.
    time_varying
        The covariate may change within a subject (creatinine clearance, weight): its
        values are given per segment (``[subject, segment]`` with ``covariate_times``) and
        a NONMEM data set's per-record values are kept (last observation carried
        forward). ``False``: one value per subject (a data set's first record).

    Examples
    --------
    >>> Covariate("cyp2c9", levels=("*1/*1", "*1/*3")).encode(["*1/*3", "*1/*1"]).tolist()
    [1, 0]
    """

    name: str
    unit: str = ""
    reference: float | str | None = None
    range: tuple[float, float] | None = None
    levels: tuple[str, ...] | None = None
    description: str = ""
    default: float | None = None
    time_varying: bool = False

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise PopulationModelError(
                f"`Covariate.name` must be an identifier, got {self.name!r}; use e.g. 'weight'"
            )
        if self.range is not None:
            lo, hi = self.range
            if not lo <= hi:
                raise PopulationModelError(
                    f"`Covariate({self.name!r}).range` must be (low, high) with low ≤ high, "
                    f"got {self.range!r}"
                )
        if self.levels is not None:
            object.__setattr__(self, "levels", tuple(str(level) for level in self.levels))
            if len(set(self.levels)) != len(self.levels) or not self.levels:
                raise PopulationModelError(
                    f"`Covariate({self.name!r}).levels` must be distinct and non-empty, "
                    f"got {self.levels!r}"
                )

    @property
    def categorical(self) -> bool:
        return self.levels is not None

    def encode(self, values: Any) -> np.ndarray | Array:
        """Values as the model sees them: level indices (categorical) or float64."""
        if not self.categorical:
            if isinstance(values, jax.Array):
                return values.astype(jnp.float64)
            return np.asarray(values, dtype=np.float64)
        raw = np.asarray(values)
        if np.issubdtype(raw.dtype, np.integer):
            codes = raw.astype(np.int64)
            if codes.size and (codes.min() < 0 or codes.max() >= len(self.levels)):
                raise PopulationModelError(
                    f"covariate `{self.name}` codes must lie in 0..{len(self.levels) - 1} "
                    f"(levels {list(self.levels)}), got {sorted(set(codes.ravel().tolist()))}"
                )
            return codes
        index = {level: i for i, level in enumerate(self.levels)}
        flat = [str(v) for v in raw.ravel()]
        unknown = sorted({v for v in flat if v not in index})
        if unknown:
            raise PopulationModelError(
                f"covariate `{self.name}` has unknown levels {unknown}; known levels: "
                f"{list(self.levels)} (canonical spelling, e.g. from parse_diplotype)"
            )
        return np.array([index[v] for v in flat], dtype=np.int64).reshape(raw.shape)


# --------------------------------------------------------------------------- residual error


@dataclass(frozen=True)
class ResidualError:
    """Residual (unexplained, within-subject) error of one output.

    Kinds, for a prediction ``f``:

    - additive: ``y = f + ε``, SD ``additive``;
    - proportional: ``y = f (1 + ε)``, SD ``proportional · f``;
    - combined: SD ``sqrt(additive² + (proportional · f)²)`` (NONMEM's combined error with
      the two variances added);
    - exponential (``exponential=True``): ``log y = log f + ε``, SD ``proportional`` on
      the log scale (additive must be 0).

    Observations below ``lloq`` (the lower limit of quantification) are censored in the
    likelihood (Beal's M3): they contribute ``P(y < lloq)``, not a density.

    Parameters
    ----------
    additive
        SD in the output's unit (mg/L for concentrations), ≥ 0.
    proportional
        Proportional SD as a fraction (0.1 for 10 %), ≥ 0; log-scale SD if exponential.
    exponential
        Error additive on the log scale.
    lloq
        Default lower limit of quantification (output unit); ``None``: no censoring unless
        the data flags it.

    Examples
    --------
    >>> ResidualError(additive=0.5, proportional=0.1).kind
    'combined'
    >>> float(ResidualError(additive=0.5, proportional=0.1).sd(10.0))  # sqrt(0.25 + 1)
    1.118033988749895
    """

    additive: float = 0.0
    proportional: float = 0.0
    exponential: bool = False
    lloq: float | None = None

    def __post_init__(self) -> None:
        for name in ("additive", "proportional"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise PopulationModelError(
                    f"`ResidualError.{name}` must be a finite SD ≥ 0, got {value!r}"
                )
        if self.additive == 0 and self.proportional == 0:
            raise PopulationModelError(
                "`ResidualError` needs `additive` > 0 or `proportional` > 0 (an SD), got both 0; "
                "e.g. ResidualError(additive=0.5) for 0.5 mg/L"
            )
        if self.exponential and self.additive != 0:
            raise PopulationModelError(
                f"`ResidualError.additive` must be 0 with exponential=True (the log-scale SD is "
                f"`proportional`), got {self.additive!r}"
            )
        if self.lloq is not None and not (np.isfinite(self.lloq) and self.lloq >= 0):
            raise PopulationModelError(
                f"`ResidualError.lloq` must be a finite limit ≥ 0 or None, got {self.lloq!r}"
            )

    @property
    def kind(self) -> str:
        if self.exponential:
            return "exponential"
        if self.additive > 0 and self.proportional > 0:
            return "combined"
        return "additive" if self.additive > 0 else "proportional"

    @property
    def sigma_names(self) -> tuple[str, ...]:
        """The SDs this error model has (``"additive"``, ``"proportional"``)."""
        return tuple(n for n in ("additive", "proportional") if getattr(self, n) > 0)

    def sd(self, prediction, *, additive=None, proportional=None):
        """SD of an observation around ``prediction`` (log-scale SD if exponential)."""
        a = self.additive if additive is None else additive
        p = self.proportional if proportional is None else proportional
        if self.exponential:
            return jnp.broadcast_to(jnp.asarray(p, jnp.float64), jnp.shape(prediction))
        return jnp.sqrt(a**2 + (p * jnp.asarray(prediction)) ** 2)

    def log_likelihood(
        self,
        observed,
        prediction,
        *,
        censored=None,
        lloq=None,
        additive=None,
        proportional=None,
    ) -> Array:
        """Elementwise log-likelihood of ``observed`` given ``prediction``.

        Parameters
        ----------
        observed, prediction
            Arrays of one shape (output unit).
        censored
            Boolean array: the observation is below ``lloq`` (its value is ignored). By
            default, observations below ``lloq`` are censored when a limit is known.
        lloq
            Limit of quantification per observation (or scalar); defaults to ``self.lloq``.
        additive, proportional
            SDs to use instead of the stored ones (for inference, where they are random).

        Returns
        -------
        Array
            ``log p(y | f)`` per element; censored elements give ``log Φ((lloq − f)/sd)``
            (on the log scale for exponential error).

        Examples
        --------
        >>> err = ResidualError(additive=1.0)
        >>> round(float(err.log_likelihood(0.0, 0.0)), 6)  # -log(sqrt(2 pi))
        -0.918939
        >>> round(float(err.log_likelihood(0.0, 0.5, lloq=0.5)), 6)  # below the limit: log 0.5
        -0.693147
        """
        y = jnp.asarray(observed, jnp.float64)
        f = jnp.asarray(prediction, jnp.float64)
        limit = self.lloq if lloq is None else lloq
        sd = self.sd(f, additive=additive, proportional=proportional)
        if self.exponential:
            tiny = jnp.finfo(jnp.float64).tiny
            safe_y = jnp.where(y > 0, y, 1.0)
            loc, value = jnp.log(jnp.maximum(f, tiny)), jnp.log(safe_y)
            # density of y, not of log y: the Jacobian 1/y
            density = -0.5 * ((value - loc) / sd) ** 2 - jnp.log(sd) - 0.5 * _LOG_2PI - value
            density = jnp.where(y > 0, density, -jnp.inf)
        else:
            loc, value = f, y
            density = -0.5 * ((value - loc) / sd) ** 2 - jnp.log(sd) - 0.5 * _LOG_2PI
        if limit is None:
            if censored is not None:
                raise PopulationModelError(
                    "`censored` observations need a limit of quantification: give `lloq` "
                    "(per observation or scalar) or ResidualError(lloq=...)"
                )
            return density
        limit = jnp.asarray(limit, jnp.float64)
        if censored is None:
            censored = y < limit
        if self.exponential:
            limit_scale = jnp.log(jnp.maximum(limit, jnp.finfo(jnp.float64).tiny))
        else:
            limit_scale = limit
        below = jax.scipy.stats.norm.logcdf((limit_scale - loc) / sd)
        return jnp.where(censored, below, density)

    def sample(self, key: Array, prediction, *, additive=None, proportional=None) -> Array:
        """Noisy observations around ``prediction`` (same shape)."""
        f = jnp.asarray(prediction, jnp.float64)
        z = jax.random.normal(key, f.shape, jnp.float64)
        sd = self.sd(f, additive=additive, proportional=proportional)
        if self.exponential:
            return f * jnp.exp(sd * z)
        return f + sd * z


# --------------------------------------------------------------------------- data and results


def _check_covariate_times(covariate_times: Any, covariates: Mapping[str, Any], n: int):
    """``covariate_times`` as a checked ``[subject, segment]`` float64 array (or ``None``)
    consistent with the ``[subject, segment]`` covariate columns."""
    over_time = {k: np.shape(v) for k, v in covariates.items() if np.ndim(v) == 2}
    if covariate_times is None:
        if over_time:
            raise PopulationModelError(
                f"covariates {sorted(over_time)} have values per segment (shapes "
                f"{over_time}) but no `covariate_times`; give the segments' start times "
                "[subject, segment] (h)"
            )
        return None
    times = np.asarray(covariate_times, dtype=np.float64)
    if times.ndim == 1:
        times = np.broadcast_to(times, (n, times.shape[0])).copy()
    if times.ndim != 2 or times.shape[0] != n or times.shape[1] < 1:
        raise PopulationModelError(
            f"`covariate_times` has shape {np.shape(covariate_times)}; expected ({n}, segments) "
            "or (segments,): the start time (h) of each covariate segment"
        )
    if not np.all(np.isfinite(times)) or np.any(times < 0) or np.any(np.diff(times, axis=1) < 0):
        bad = int(np.flatnonzero(~np.all(np.isfinite(times), axis=1) | np.any(times < 0, axis=1)
                                 | np.any(np.diff(times, axis=1) < 0, axis=1))[0])  # fmt: skip
        raise PopulationModelError(
            f"`covariate_times[{bad}]` = {times[bad].tolist()} must be finite, ≥ 0 h and "
            "non-decreasing (the start times of the covariate segments)"
        )
    for k, shape in over_time.items():
        if shape != times.shape:
            raise PopulationModelError(
                f"covariate `{k}` has shape {shape} but `covariate_times` {times.shape}; give "
                "one value per subject and segment"
            )
    return times


class ObservationData(NamedTuple):
    """Observations of a set of subjects as padded arrays, for the likelihood.

    Build with :meth:`build`. Every array has shape ``[subject, observation]``; padded
    entries have ``mask == False`` and a time equal to the subject's last real time.
    """

    events: Any  #: :class:`~twinsim.simulators.DosingEvents` ``[subject, event]``
    times: Float[Array, "subject obs"]
    observed: Float[Array, "subject obs"]
    output: Int[Array, "subject obs"]  #: index into the model's outputs
    mask: Bool[Array, "subject obs"]
    censored: Bool[Array, "subject obs"]  #: below the limit of quantification (M3)
    lloq: Float[Array, "subject obs"]  #: limit per observation (NaN: none)
    occasion: Int[Array, "subject obs"]  #: 0-based occasion of each observation
    covariates: Mapping[str, Any]  #: raw covariate columns, one entry per subject
    ids: tuple  #: subject identifiers (as in the data set)
    #: ``[subject, segment]`` start times (h) of the segments of time-varying covariates
    #: (whose columns are then ``[subject, segment]``); ``None``: none
    covariate_times: Any = None

    @property
    def n_subjects(self) -> int:
        return int(self.times.shape[0])

    @property
    def n_observations(self) -> int:
        return int(np.count_nonzero(np.asarray(self.mask)))

    @classmethod
    def build(
        cls,
        events: Any,
        times: Sequence[Sequence[float]],
        observed: Sequence[Sequence[float]],
        *,
        covariates: Mapping[str, Any] | None = None,
        output: Sequence[Sequence[int]] | None = None,
        censored: Sequence[Sequence[bool]] | None = None,
        lloq: Sequence[Sequence[float]] | float | None = None,
        occasion: Sequence[Sequence[int]] | None = None,
        ids: Sequence[Any] | None = None,
        covariate_times: Any = None,
    ) -> ObservationData:
        """Pad ragged per-subject observation lists into arrays.

        Parameters
        ----------
        events
            Dosing table, one row per subject.
        times, observed
            One list per subject (h; output unit). Times must be sorted within a subject.
        covariates
            ``{name: values per subject}``; a time-varying covariate may be
            ``[subject, segment]`` (with ``covariate_times``).
        output
            Output index per observation (default 0, the model's first output).
        censored
            Below-LLOQ flags per observation (default: ``observed < lloq`` where known).
        lloq
            Limit per observation, or one limit for all; ``None``: none.
        occasion
            0-based occasion per observation (default 0).
        ids
            Subject identifiers (default ``0 … n − 1``).
        covariate_times
            ``[subject, segment]`` (h): segment ``k``'s covariate values hold from
            ``covariate_times[:, k]`` until the next segment's start (the first segment's
            from time 0); non-decreasing per subject (a repeated time pads a subject with
            fewer changes).

        Examples
        --------
        >>> from twinsim.simulators import DosingEvents
        >>> data = ObservationData.build(DosingEvents.repeated(100.0, 24.0, 1, n_subjects=2, compartment=0),
        ...                              [[1.0, 2.0], [1.0]], [[3.0, 2.0], [2.5]])
        >>> data.times.shape, data.mask.tolist()
        ((2, 2), [[True, True], [True, False]])
        """
        n = len(times)
        if len(observed) != n or events.n_subjects != n:
            raise PopulationModelError(
                f"`times` ({n} subjects), `observed` ({len(observed)}) and `events` "
                f"({events.n_subjects}) must have one entry per subject"
            )
        width = max((len(t) for t in times), default=1) or 1

        def pad(rows, fill, dtype, name):
            out = np.full((n, width), fill, dtype=dtype)
            for i, row in enumerate(rows):
                row = np.asarray(row, dtype=dtype).ravel()
                if row.shape[0] != len(times[i]):
                    raise PopulationModelError(
                        f"`{name}[{i}]` has {row.shape[0]} entries, `times[{i}]` has "
                        f"{len(times[i])}; give one per observation"
                    )
                out[i, : row.shape[0]] = row
            return out

        t = pad(times, 0.0, np.float64, "times")
        y = pad(observed, np.nan, np.float64, "observed")
        mask = np.zeros((n, width), bool)
        for i, row in enumerate(times):
            mask[i, : len(row)] = True
            if len(row):
                if np.any(np.diff(np.asarray(row, float)) < 0) or np.min(row) < 0:
                    raise PopulationModelError(
                        f"`times[{i}]` must be sorted and ≥ 0 h, got {list(row)[:8]}"
                    )
                t[i, len(row) :] = row[-1]
        out = (
            np.zeros((n, width), np.int64) if output is None else pad(output, 0, np.int64, "output")
        )
        occ = (
            np.zeros((n, width), np.int64)
            if occasion is None
            else pad(occasion, 0, np.int64, "occasion")
        )
        if lloq is None:
            limit = np.full((n, width), np.nan)
        elif np.ndim(lloq) == 0:
            limit = np.full((n, width), float(lloq))
        else:
            limit = pad(lloq, np.nan, np.float64, "lloq")
        if censored is None:
            cens = np.where(np.isnan(limit), False, np.nan_to_num(y, nan=np.inf) < limit)
        else:
            cens = pad(censored, False, bool, "censored")
            if np.any(cens & np.isnan(limit) & mask):
                raise PopulationModelError(
                    "`censored` observations need a limit of quantification: give `lloq`"
                )
        missing = mask & ~cens & ~np.isfinite(y)
        if missing.any():
            i, j = np.argwhere(missing)[0]
            raise PopulationModelError(
                f"`observed[{i}][{j}]` is {float(y[i, j])!r}; every uncensored observation needs a "
                "finite value (drop it or flag it as censored)"
            )
        cov = {k: np.asarray(v) for k, v in (covariates or {}).items()}
        change_times = _check_covariate_times(covariate_times, cov, n)
        for k, v in cov.items():
            if v.shape[:1] != (n,):
                raise PopulationModelError(
                    f"covariate `{k}` has shape {v.shape}, expected ({n},): one value per subject"
                )
        return cls(
            events=events,
            times=jnp.asarray(t),
            observed=jnp.asarray(np.where(mask & ~cens, y, 0.0)),
            output=jnp.asarray(out),
            mask=jnp.asarray(mask),
            censored=jnp.asarray(cens & mask),
            lloq=jnp.asarray(limit),
            occasion=jnp.asarray(occ),
            covariates=cov,
            ids=tuple(ids) if ids is not None else tuple(range(n)),
            covariate_times=change_times,
        )


class PopulationSample(NamedTuple):
    """Individual parameters drawn from a population model."""

    ids: np.ndarray  #: subject ids the draws are keyed on
    typical: Float[Array, "subject param"]  #: typical (covariate) parameters
    eta: Float[Array, "subject effect"]  #: between-subject effects, ``random_effects`` order
    kappa: Float[Array, "subject occasion occasion_effect"]  #: between-occasion effects
    parameters: Float[Array, "subject occasion param"]  #: individual parameters


class PopulationSimulation(NamedTuple):
    """What :meth:`PopulationModel.simulate` returns."""

    times: Float[Array, "subject time"]
    prediction: Float[Array, "subject time output"]  #: without residual error
    observed: Float[Array, "subject time output"]  #: with residual error (= prediction if off)
    below_lloq: Bool[Array, "subject time output"]  #: observed below the output's LLOQ
    sample: PopulationSample
    output_names: tuple[str, ...]


@dataclass(frozen=True)
class InferencePriors:
    """Priors of the population parameters for :meth:`PopulationModel.population_model`.

    Thetas that are positive structural parameters get a log-normal prior centred on the
    model's value with log-scale SD ``theta_log_sd``; other thetas (covariate effects,
    exponents: either sign) a normal prior with SD ``theta_sd`` (``max(|θ|, 1)`` by
    default). BSV SDs (log scale) are half-normal with scale ``omega_scale``; an LKJ prior
    with ``lkj_concentration`` on the correlation when Ω is full; residual SDs half-normal
    with scale ``sigma_scale_factor`` × the model's value. ``overrides`` maps a theta name
    to a NumPyro distribution used instead.
    """

    theta_log_sd: float = 2.0
    theta_sd: float | None = None
    omega_scale: float = 1.0
    lkj_concentration: float = 2.0
    sigma_scale_factor: float = 5.0
    overrides: Mapping[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- the model


def _as_matrix(omega, n: int, where: str) -> np.ndarray:
    omega = np.asarray(omega, dtype=np.float64)
    if omega.shape == (n,):
        omega = np.diag(omega)
    if omega.shape != (n, n):
        raise PopulationModelError(
            f"`{where}` must be the ({n}, {n}) covariance (or {n} variances) of the random "
            f"effects, got shape {omega.shape}"
        )
    if not np.all(np.isfinite(omega)) or not np.allclose(omega, omega.T, atol=1e-15):
        raise PopulationModelError(f"`{where}` must be finite and symmetric")
    if n and np.linalg.eigvalsh(omega).min() < -1e-12 * max(omega.diagonal().max(), 1e-300):
        raise PopulationModelError(
            f"`{where}` must be positive semi-definite, got eigenvalues "
            f"{np.round(np.linalg.eigvalsh(omega), 6).tolist()}; check the correlations"
        )
    return omega


class PopulationModel:
    """A population (mixed-effects) model over a structural ODE model. Immutable.

    See the module docstring for the meaning of each field and the API.

    Parameters
    ----------
    name
        Short identifier.
    structural
        The :class:`~twinsim.priors.ODEModel`.
    theta
        ``{name: value}`` fixed effects (units in ``theta_units``).
    parameters
        ``(theta: Named, covariates) -> {structural parameter: array[subject]}`` or ``None``.
    random_effects
        Structural parameters with log-normal BSV, in the order of ``omega``.
    omega
        Covariance of η (log scale), ``[R, R]``, or the ``[R]`` variances.
    residual
        ``{output name: ResidualError}``; outputs without one cannot be observed.
    covariates
        Declared covariates.
    occasion_effects, occasion_omega
        Structural parameters with BOV and the covariance of κ.
    fixed
        Thetas held fixed in population inference (e.g. a bioavailability of 1).
    theta_units, citation, notes
        Documentation and provenance.
    reported
        ``(parameters [n, P]) -> {name: [n]}``: the parameters a fit summary shows for rows
        of structural parameters, or ``None`` (the random effects' own parameters). A model
        whose structural parameters are not clinical quantities (a trained latent model's
        ``latent_k``, features, network inputs) names its mechanistic ones here.
    """

    __slots__ = (
        "citation",
        "covariates",
        "fixed",
        "name",
        "notes",
        "occasion_effects",
        "occasion_omega",
        "omega",
        "parameters",
        "random_effects",
        "reported",
        "residual",
        "structural",
        "theta",
        "theta_units",
    )

    def __init__(
        self,
        *,
        name: str,
        structural: ODEModel,
        theta: Mapping[str, float],
        parameters: Callable[[Named, Mapping[str, Array]], Mapping[str, Array]] | None = None,
        random_effects: Sequence[str] = (),
        omega: Any = None,
        residual: Mapping[str, ResidualError] | None = None,
        covariates: Sequence[Covariate] = (),
        occasion_effects: Sequence[str] = (),
        occasion_omega: Any = None,
        fixed: Sequence[str] = (),
        theta_units: Mapping[str, str] | None = None,
        citation: str = "",
        notes: str = "",
        reported: Callable[[Array], Mapping[str, Array]] | None = None,
    ):
        set_ = object.__setattr__
        set_(self, "name", str(name))
        if not isinstance(structural, ODEModel):
            raise PopulationModelError(
                f"`structural` must be an ODEModel, got {type(structural).__name__}"
            )
        set_(self, "structural", structural)
        set_(self, "theta", {str(k): float(v) for k, v in dict(theta).items()})
        set_(self, "theta_units", dict(theta_units or {}))
        set_(self, "parameters", parameters)
        set_(self, "random_effects", tuple(random_effects))
        set_(self, "occasion_effects", tuple(occasion_effects))
        set_(self, "residual", dict(residual or {}))
        set_(self, "covariates", tuple(covariates))
        set_(self, "fixed", tuple(fixed))
        set_(self, "citation", citation)
        set_(self, "notes", notes)
        if reported is not None and not callable(reported):
            raise PopulationModelError(
                f"population model {self.name!r}: `reported` must be a function of the "
                f"structural parameter rows or None, got {type(reported).__name__}"
            )
        set_(self, "reported", reported)
        where = f"population model {self.name!r}"
        for k, v in self.theta.items():
            if not k.isidentifier() or not np.isfinite(v):
                raise PopulationModelError(
                    f"{where}: `theta[{k!r}]` must be a finite number named by an identifier, "
                    f"got {v!r}"
                )
        for field_, names in (
            ("random_effects", self.random_effects),
            ("occasion_effects", self.occasion_effects),
        ):
            unknown = [n for n in names if n not in structural.parameters]
            if unknown or len(set(names)) != len(names):
                raise PopulationModelError(
                    f"{where}: `{field_}` must name distinct structural parameters, got {list(names)}; "
                    f"known: {list(structural.parameters)}"
                )
        unknown = [n for n in self.fixed if n not in self.theta]
        if unknown:
            raise PopulationModelError(
                f"{where}: `fixed` names unknown thetas {unknown}; known: {list(self.theta)}"
            )
        set_(
            self,
            "omega",
            _as_matrix(
                np.zeros((0, 0)) if omega is None and not self.random_effects else omega,
                len(self.random_effects),
                "omega",
            ),
        )
        set_(
            self,
            "occasion_omega",
            _as_matrix(
                np.zeros((0, 0))
                if occasion_omega is None and not self.occasion_effects
                else occasion_omega,
                len(self.occasion_effects),
                "occasion_omega",
            ),
        )
        for out, err in self.residual.items():
            if out not in structural.output_names:
                raise PopulationModelError(
                    f"{where}: `residual` names output {out!r}; known outputs: "
                    f"{list(structural.output_names)}"
                )
            if not isinstance(err, ResidualError):
                raise PopulationModelError(
                    f"{where}: `residual[{out!r}]` must be a ResidualError, got {type(err).__name__}"
                )
        names = [c.name for c in self.covariates]
        if len(set(names)) != len(names):
            raise PopulationModelError(f"{where}: `covariates` repeats names: {names}")
        if self.occasion_effects and self.time_varying_covariates:
            raise PopulationModelError(
                f"{where}: time-varying covariates {list(self.time_varying_covariates)} and "
                f"between-occasion effects {list(self.occasion_effects)} cannot be combined; "
                "drop `occasion_effects` or declare the covariates with time_varying=False"
            )
        if self.parameters is None:
            missing = [p for p in structural.parameters if p not in self.theta]
            if missing:
                raise PopulationModelError(
                    f"{where}: without a `parameters` function every structural parameter needs a "
                    f"theta; missing {missing}"
                )

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("PopulationModel is immutable; use .replace(...)")

    def replace(self, **changes: Any) -> PopulationModel:
        """A new model with ``changes`` applied (same arguments as the constructor)."""
        kwargs = {k: getattr(self, k) for k in self.__slots__}
        kwargs.update(changes)
        return PopulationModel(**kwargs)

    def __repr__(self) -> str:
        return (
            f"PopulationModel({self.name!r}, structural={self.structural.name!r}, "
            f"theta={self.theta}, random_effects={self.random_effects})"
        )

    # ------------------------------------------------------------------ covariates
    @property
    def covariate_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.covariates)

    @property
    def time_varying_covariates(self) -> tuple[str, ...]:
        """Names of the covariates declared ``time_varying=True``."""
        return tuple(c.name for c in self.covariates if c.time_varying)

    def _over_time(self, covariates: Mapping[str, Any]) -> tuple[str, ...]:
        """Declared covariates given per segment (``[subject, segment]``); an error for a
        covariate given so that the model does not declare time-varying."""
        tv = set(self.time_varying_covariates)
        out = []
        for c in self.covariates:
            if c.name not in covariates or np.ndim(covariates[c.name]) != 2:
                continue
            if c.name not in tv:
                raise PopulationModelError(
                    f"covariate `{c.name}` is given per segment (shape "
                    f"{np.shape(covariates[c.name])}) but model {self.name!r} declares it "
                    "constant per subject; declare Covariate(..., time_varying=True) or give "
                    "one value per subject"
                )
            out.append(c.name)
        return tuple(out)

    def _n_subjects(self, covariates: Mapping[str, Any], n: int | None = None) -> int:
        sizes = {k: int(np.shape(v)[0]) for k, v in covariates.items() if np.ndim(v) >= 1}
        if n is not None:
            sizes["(requested)"] = n
        if len(set(sizes.values())) > 1:
            raise PopulationModelError(
                f"covariate columns must have one value per subject, got lengths {sizes}"
            )
        return next(iter(sizes.values()), 1)

    def encode_covariates(self, covariates: Mapping[str, Any]) -> dict[str, Any]:
        """Declared covariates as arrays for the ``parameters`` function (levels → codes).

        Raises :class:`PopulationModelError` naming a declared covariate that is missing
        (covariates with a ``default`` may be absent: they take the default).
        """
        missing = [
            c.name for c in self.covariates if c.name not in covariates and c.default is None
        ]
        if missing:
            raise PopulationModelError(
                f"population model {self.name!r} needs covariates {missing}; got columns "
                f"{sorted(covariates)}"
            )
        out = dict(covariates)
        for c in self.covariates:
            if c.name not in covariates:
                out[c.name] = jnp.asarray(c.default, jnp.float64)
                continue
            out[c.name] = c.encode(covariates[c.name])
        return out

    def covariate_columns(self, table: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """This model's covariate columns from a standard covariate table.

        A column the table has is taken as it is; one it lacks is derived from the
        co-medication columns where :data:`~twinsim.priors.DERIVED_COVARIATES` says how
        (the warfarin model's ``amiodarone`` from ``comed_amiodarone``), otherwise filled
        with the covariate's ``default``. A covariate with neither is an error naming it
        and the table's columns.

        Examples
        --------
        >>> from twinsim.priors import drug_model
        >>> table = {"age": np.array([60.0, 70.0]), "cyp2c9": np.array(["*1/*1", "*1/*3"]),
        ...          "vkorc1": np.array(["G/A", "G/G"]), "comed_amiodarone": np.array([0.0, 1.0])}
        >>> columns = drug_model("warfarin").covariate_columns(table)
        >>> columns["amiodarone"].tolist(), columns["enzyme_inducer"].tolist()
        ([0.0, 1.0], [0.0, 0.0])
        """
        n = len(np.atleast_1d(next(iter(table.values())))) if table else 1
        out: dict[str, np.ndarray] = {}
        for c in self.covariates:
            if c.name in table:
                out[c.name] = np.asarray(table[c.name])
                continue
            sources = [s for s in DERIVED_COVARIATES.get(c.name, ()) if s in table]
            if sources:
                taken = np.stack([np.asarray(table[s], dtype=np.float64) for s in sources])
                out[c.name] = (taken > 0).any(axis=0).astype(np.float64)
            elif c.default is not None:
                out[c.name] = np.full(n, float(c.default))
            else:
                raise PopulationModelError(
                    f"population model {self.name!r} needs covariate {c.name!r}; the table "
                    f"has columns {sorted(table)}; add a column {c.name!r} (or give the "
                    "covariate a default in the model)"
                )
        return out

    def check_covariates(self, covariates: Mapping[str, Any]) -> list[str]:
        """Warn (:class:`CovariateRangeWarning`) for values outside the estimated ranges.

        Returns the warning messages (empty when everything is in range).
        """
        messages = []
        for c in self.covariates:
            if c.range is None or c.categorical or c.name not in covariates:
                continue
            values = np.asarray(covariates[c.name], dtype=np.float64)
            lo, hi = c.range
            bad = (values < lo) | (values > hi)
            outside = np.flatnonzero(bad.reshape(bad.shape[0], -1).any(axis=1) if bad.ndim else bad)
            if outside.size:
                flat = values[bad] if values.ndim else values.reshape(1)
                shown = ", ".join(f"{v:g}" for v in flat[:5])
                msg = (
                    f"covariate `{c.name}` outside the range the model {self.name!r} was estimated "
                    f"on ({lo:g}–{hi:g} {c.unit}) for {outside.size} subject(s) (values {shown}); "
                    "predictions there are extrapolations"
                )
                warnings.warn(msg, CovariateRangeWarning, stacklevel=2)
                messages.append(msg)
        return messages

    # ------------------------------------------------------------------ parameters
    def theta_vector(self) -> Array:
        return jnp.asarray([self.theta[k] for k in self.theta], jnp.float64)

    def _typical(self, theta: Array, covariates: Mapping[str, Any], n: int) -> Array:
        """Typical parameters [n, P] from a theta vector (traceable); ``[n, segment, P]``
        when time-varying covariates are given per segment (one call per segment)."""
        over_time = self._over_time(covariates)
        if over_time:
            k = max(int(np.shape(covariates[name])[1]) for name in over_time)
            segments = [
                self._typical_at(
                    theta, {**covariates, **{m: covariates[m][:, j] for m in over_time}}, n
                )
                for j in range(k)
            ]
            return jnp.stack(segments, axis=1)
        return self._typical_at(theta, covariates, n)

    def _typical_at(self, theta: Array, covariates: Mapping[str, Any], n: int) -> Array:
        view = Named(tuple(self.theta), theta)
        given = dict(self.parameters(view, covariates)) if self.parameters is not None else {}
        unknown = set(given) - set(self.structural.parameters)
        if unknown:
            raise PopulationModelError(
                f"population model {self.name!r}: `parameters` returned unknown structural "
                f"parameters {sorted(unknown)}; known: {list(self.structural.parameters)}"
            )
        columns = []
        for p in self.structural.parameters:
            if p in given:
                value = given[p]
            elif p in self.theta:
                value = view[p]
            else:
                raise PopulationModelError(
                    f"population model {self.name!r}: structural parameter {p!r} is neither "
                    "returned by `parameters` nor a theta; return it or add a theta of that name"
                )
            columns.append(jnp.broadcast_to(jnp.asarray(value, jnp.float64), (n,)))
        return jnp.stack(columns, axis=-1)

    def typical_parameters(self, covariates: Mapping[str, Any] | None = None) -> Array:
        """Typical structural parameters ``[subject, P]`` (``structural.parameters`` order)."""
        covariates = covariates or {}
        encoded = self.encode_covariates(covariates)
        return self._typical(self.theta_vector(), encoded, self._n_subjects(covariates))

    def _effect_index(self, names: Sequence[str]) -> np.ndarray:
        return np.array([self.structural.parameters.index(n) for n in names], dtype=np.int64)

    def _apply(self, typical: Array, eta: Array, kappa: Array | None = None) -> Array:
        """Individual parameters: ``[n, P]`` or, with ``kappa [n, K, Rb]``, ``[n, K, P]``."""
        log_shift = jnp.zeros_like(typical)
        if typical.ndim == 3 and kappa is None:  # segments of time-varying covariates
            eta = jnp.asarray(eta)[:, None, :]
        if self.random_effects:
            log_shift = log_shift.at[..., self._effect_index(self.random_effects)].add(eta)
        if kappa is None:
            return typical * jnp.exp(log_shift)
        shift = jnp.broadcast_to(log_shift[:, None, :], (*kappa.shape[:2], typical.shape[-1]))
        if self.occasion_effects:
            shift = shift.at[..., self._effect_index(self.occasion_effects)].add(kappa)
        return typical[:, None, :] * jnp.exp(shift)

    def individual_parameters(
        self, covariates: Mapping[str, Any] | None, eta: Any, kappa: Any = None
    ) -> Array:
        """``p_typ · exp(η)`` per subject, ``[subject, P]`` (``[subject, occasion, P]`` with κ)."""
        eta = jnp.atleast_2d(jnp.asarray(eta, jnp.float64))
        if eta.shape[-1] != len(self.random_effects):
            raise PopulationModelError(
                f"`eta` must have {len(self.random_effects)} columns ({list(self.random_effects)}), "
                f"got shape {eta.shape}"
            )
        covariates = covariates or {}
        n = self._n_subjects(covariates, eta.shape[0] if covariates else None)
        n = max(n, eta.shape[0])
        typical = self._typical(self.theta_vector(), self.encode_covariates(covariates), n)
        return self._apply(typical, eta, None if kappa is None else jnp.asarray(kappa))

    def sample_parameters(
        self,
        seed: int,
        covariates: Mapping[str, Any] | None = None,
        ids: Sequence[int] | None = None,
        *,
        n_occasions: int = 1,
    ) -> PopulationSample:
        """Draw η (and κ per occasion) for each subject and return individual parameters.

        Subject ``ids[i]``'s draws depend only on ``(seed, ids[i])``.

        Examples
        --------
        >>> import jax.numpy as jnp
        >>> from twinsim.priors import PopulationModel, one_compartment
        >>> pm = PopulationModel(name="iv", structural=one_compartment(),
        ...     theta={"cl": 5.0, "v": 50.0}, random_effects=("cl",), omega=[0.09])
        >>> s = pm.sample_parameters(3, ids=[0, 1, 2])
        >>> s.parameters.shape, bool((s.parameters[:, 0, 1] == 50.0).all())
        ((3, 1, 2), True)
        """
        from ..simulators import lognormal_parameters, subject_keys

        covariates = covariates or {}
        if ids is None:
            n = self._n_subjects(covariates)
            ids = np.arange(n)
        ids = np.asarray(ids, dtype=np.int64)
        n = ids.shape[0]
        if covariates:
            self._n_subjects(covariates, n)  # one value per id, or a clear error
        typical = self._typical(self.theta_vector(), self.encode_covariates(covariates), n)
        r = len(self.random_effects)
        if r:
            eta = jnp.log(lognormal_parameters(seed, ids, np.ones(r), self.omega))
        else:
            eta = jnp.zeros((n, 0))
        if typical.ndim == 3:  # [subject, segment, P]: time-varying covariates, no BOV
            parameters = self._apply(typical, eta)
            return PopulationSample(ids, typical, eta, jnp.zeros((n, 1, 0)), parameters)
        rb = len(self.occasion_effects)
        if rb and n:
            keys = subject_keys(seed, ids)
            factor = jnp.asarray(_cholesky(self.occasion_omega))

            def one(key):
                z = jax.random.normal(
                    jax.random.fold_in(key, _OCCASION), (n_occasions, rb), jnp.float64
                )
                return z @ factor.T

            kappa = jax.vmap(one)(keys)
        else:
            kappa = jnp.zeros((n, n_occasions, rb))
        parameters = self._apply(typical, eta, kappa)
        return PopulationSample(ids, typical, eta, kappa, parameters)

    # ------------------------------------------------------------------ prediction
    def _occasion_of(self, times: Array, occasions: Sequence[float] | None) -> Array:
        if occasions is None:
            return jnp.zeros(times.shape, jnp.int64)
        starts = np.asarray(occasions, dtype=np.float64)
        if starts.ndim != 1 or starts.size == 0 or starts[0] != 0 or np.any(np.diff(starts) <= 0):
            raise PopulationModelError(
                f"`occasions` must be increasing start times beginning at 0 h, got {starts.tolist()}"
            )
        return jnp.searchsorted(jnp.asarray(starts), times, side="right") - 1

    def predict(
        self,
        parameters: Array,
        events: Any,
        times: Array,
        occasion: Array | None = None,
        *,
        method: str = "auto",
        covariate_times: Any = None,
    ) -> Array:
        """Outputs ``[subject, time, output]`` for individual parameters.

        ``parameters`` is ``[subject, P]`` or ``[subject, occasion, P]``; with occasions,
        ``occasion[subject, time]`` picks the parameters of each output time (see the module
        docstring). With ``covariate_times`` (``[subject, segment]``, h), ``parameters`` is
        ``[subject, segment, P]``: piecewise constant in time, solved segment after segment
        (:func:`~twinsim.priors._segments.predict_segments`). Linear models without
        steady-state doses use the exact superposition path
        (:func:`~twinsim.simulators.predict_linear`); others the engine.
        """
        from ..simulators import predict_outputs

        times = jnp.asarray(times, jnp.float64)
        if parameters.ndim == 3 and covariate_times is not None:
            from ._segments import predict_segments

            return predict_segments(
                self.structural, parameters, events, times, covariate_times, method=method
            )
        if parameters.ndim == 3 and self.time_varying_covariates:
            raise PopulationModelError(
                f"population model {self.name!r}: parameters per covariate segment "
                f"{tuple(parameters.shape)} need `covariate_times` (the segments' start times)"
            )
        if parameters.ndim == 2:
            return predict_outputs(self.structural, parameters, events, times, method=method)
        n, k, p = parameters.shape
        if times.ndim == 1:
            times = jnp.broadcast_to(times, (n, times.shape[0]))
        if k == 1:
            return predict_outputs(self.structural, parameters[:, 0], events, times, method=method)
        # each occasion is simulated for the whole history with its own parameters
        flat = parameters.reshape(n * k, p)
        rep = np.repeat(np.arange(n), k)
        outs = predict_outputs(
            self.structural,
            flat,
            events.subset(rep),
            jnp.repeat(times, k, axis=0),
            method=method,
        ).reshape(n, k, times.shape[1], -1)
        occ = jnp.clip(jnp.asarray(occasion), 0, k - 1)
        return jnp.take_along_axis(outs, occ[:, None, :, None], axis=1)[:, 0]

    def simulate(
        self,
        seed: int,
        covariates: Mapping[str, Any] | None,
        events: Any,
        times: Any,
        *,
        residual: bool = True,
        ids: Sequence[int] | None = None,
        occasions: Sequence[float] | None = None,
        method: str = "auto",
        covariate_times: Any = None,
    ) -> PopulationSimulation:
        """Simulate subjects with between-subject (and -occasion) variability and residual error.

        Parameters
        ----------
        seed
            Root seed; subject ``ids[i]`` depends only on ``(seed, ids[i])``.
        covariates
            ``{name: values per subject}`` (warns outside the estimated ranges).
        events
            :class:`~twinsim.simulators.DosingEvents`, one row per subject or one shared.
        times
            Output times, ``[time]`` or ``[subject, time]`` (h).
        residual
            Add residual error (``observed``); otherwise ``observed == prediction``.
        ids
            Subject ids (default ``0 … n − 1``).
        occasions
            Start times of the occasions (h, the first 0) when the model has BOV.
        method
            Engine, as in :func:`~twinsim.simulators.simulate`.
        covariate_times
            ``[subject, segment]`` or ``[segment]`` start times (h) of the segments of
            time-varying covariates, given as ``[subject, segment]`` in ``covariates``:
            segment ``k``'s values hold from ``covariate_times[:, k]`` on (the first from
            time 0).

        Returns
        -------
        PopulationSimulation

        Examples
        --------
        >>> import jax.numpy as jnp
        >>> from twinsim.priors import PopulationModel, ResidualError, one_compartment
        >>> from twinsim.simulators import DosingEvents
        >>> pm = PopulationModel(name="iv", structural=one_compartment(),
        ...     theta={"cl": 5.0, "v": 50.0}, random_effects=("cl",), omega=[0.09],
        ...     residual={"conc": ResidualError(proportional=0.1)})
        >>> sim = pm.simulate(0, None, DosingEvents.repeated(100.0, 12.0, 1, compartment=0), jnp.array([1.0, 6.0]),
        ...                   ids=range(3))
        >>> sim.observed.shape
        (3, 2, 1)
        """
        from ..simulators import subject_keys

        covariates = covariates or {}
        self.check_covariates(covariates)
        ids_arr = None if ids is None else np.asarray(list(ids), dtype=np.int64)
        n = self._n_subjects(covariates, None if ids_arr is None else ids_arr.shape[0])
        if ids_arr is None:
            ids_arr = np.arange(n)
        change_times = _check_covariate_times(covariate_times, covariates, n)
        if events.n_subjects == 1 and n > 1:
            events = events.broadcast(n)
        times = jnp.asarray(times, jnp.float64)
        if times.ndim == 1:
            times = jnp.broadcast_to(times, (n, times.shape[0]))
        occasion = self._occasion_of(times, occasions)
        n_occ = 1 if occasions is None else len(occasions)
        sample = self.sample_parameters(seed, covariates, ids_arr, n_occasions=n_occ)
        prediction = self.predict(
            sample.parameters, events, times, occasion, method=method, covariate_times=change_times
        )
        observed = prediction
        below = jnp.zeros(prediction.shape, bool)
        if residual:
            keys = subject_keys(seed, ids_arr)
            columns, flags = [], []
            for j, out in enumerate(self.structural.output_names):
                err = self.residual.get(out)
                if err is None:
                    columns.append(prediction[..., j])
                    flags.append(jnp.zeros(prediction.shape[:2], bool))
                    continue
                noisy = jax.vmap(
                    lambda key, f, j=j, err=err: err.sample(
                        jax.random.fold_in(jax.random.fold_in(key, _RESIDUAL), j), f
                    )
                )(keys, prediction[..., j])
                columns.append(noisy)
                flags.append(
                    noisy < err.lloq if err.lloq is not None else jnp.zeros(noisy.shape, bool)
                )
            observed = jnp.stack(columns, axis=-1)
            below = jnp.stack(flags, axis=-1)
        return PopulationSimulation(
            times, prediction, observed, below, sample, self.structural.output_names
        )

    # ------------------------------------------------------------------ likelihood
    def _observed_outputs(self, data: ObservationData) -> list[int]:
        used = sorted(set(np.asarray(data.output)[np.asarray(data.mask)].tolist()))
        names = self.structural.output_names
        for j in used:
            if j >= len(names) or names[j] not in self.residual:
                raise PopulationModelError(
                    f"population model {self.name!r}: observations of output {j} "
                    f"({names[j] if j < len(names) else '?'}) but no ResidualError for it; "
                    f"residual errors are given for {list(self.residual)}"
                )
        return used

    def log_likelihood(
        self,
        data: ObservationData,
        parameters: Array,
        sigmas: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        method: str = "auto",
    ) -> Array:
        """Log-likelihood ``[subject]`` of ``data`` for individual ``parameters``.

        ``parameters`` as in :meth:`predict`; ``sigmas`` ``{output: {"additive": sd, ...}}``
        overrides the residual SDs (defaults: the model's). Censored observations (M3) add
        ``log P(y < lloq)``.
        """
        prediction = self.predict(
            parameters,
            data.events,
            data.times,
            data.occasion,
            method=method,
            covariate_times=data.covariate_times,
        )
        f = jnp.take_along_axis(prediction, data.output[..., None], axis=-1)[..., 0]
        total = jnp.zeros(data.times.shape, jnp.float64)
        names = self.structural.output_names
        has_limit = ~jnp.isnan(data.lloq)
        for j in self._observed_outputs(data):
            err = self.residual[names[j]]
            sd = (sigmas or {}).get(names[j], {})
            if bool(np.any(np.asarray(data.censored))):
                ll = err.log_likelihood(
                    data.observed,
                    f,
                    censored=data.censored,
                    lloq=jnp.where(has_limit, data.lloq, 0.0),
                    **sd,
                )
            else:
                ll = err.log_likelihood(data.observed, f, **sd)
            total = total + jnp.where(data.mask & (data.output == j), ll, 0.0)
        return total.sum(axis=1)

    # ------------------------------------------------------------------ NumPyro models
    def _estimated_thetas(self) -> list[str]:
        return [k for k in self.theta if k not in self.fixed]

    def _n_occasions(self, data: ObservationData) -> int:
        return int(np.asarray(data.occasion).max(initial=0)) + 1 if self.occasion_effects else 1

    def population_model(
        self,
        data: ObservationData,
        *,
        priors: InferencePriors | None = None,
        omega_structure: str = "auto",
        parameterization: str = "centered",
        method: str = "auto",
    ) -> Callable[[], None]:
        """A NumPyro model for population inference (θ, Ω, σ and η random).

        Sample sites: ``theta_<name>`` per estimated theta, ``omega_sd`` ``[R]`` (log-scale
        SDs), ``omega_corr`` (Cholesky factor of the correlation, LKJ) for a full Ω,
        ``eta`` ``[subject, R]`` (centred; or ``eta_z``, standard normal with η = L z, when
        non-centred), ``sigma_<output>_
        <additive|proportional>``, and with BOV ``occasion_sd``, ``kappa_z``. Deterministic
        sites ``eta`` and ``omega`` hold η and Ω. The likelihood enters as a factor
        ``"log_likelihood"``.

        Parameters
        ----------
        data
            Observations (:meth:`ObservationData.build`).
        priors
            :class:`InferencePriors` (default: weakly informative around the model's values).
        omega_structure
            ``"full"`` (LKJ correlation), ``"diagonal"``, or ``"auto"`` (full if the model's
            Ω has a nonzero off-diagonal element).
        parameterization
            ``"centered"`` (site ``eta ~ N(0, Ω)``; suits subjects with several
            observations each) or ``"noncentered"`` (site ``eta_z``, η = L z; suits sparse
            data).
        method
            Prediction engine (``"auto"``: exact superposition for linear models).
        """
        import numpyro
        import numpyro.distributions as dist

        if parameterization not in ("centered", "noncentered"):
            raise PopulationModelError(
                f"`parameterization` must be 'centered' or 'noncentered', got {parameterization!r}"
            )
        centered = parameterization == "centered"
        priors = priors or InferencePriors()
        if omega_structure == "auto":
            off = self.omega - np.diag(np.diag(self.omega))
            omega_structure = "full" if np.any(off != 0) else "diagonal"
        if omega_structure not in ("full", "diagonal"):
            raise PopulationModelError(
                f"`omega_structure` must be 'full', 'diagonal' or 'auto', got {omega_structure!r}"
            )
        self._observed_outputs(data)
        encoded = self.encode_covariates(data.covariates)
        n, r, rb = data.n_subjects, len(self.random_effects), len(self.occasion_effects)
        k = self._n_occasions(data)
        theta_names = list(self.theta)
        estimated = self._estimated_thetas()
        theta_dists = {name: self._theta_prior(name, priors) for name in estimated}
        sigma_specs = [
            (out, s, getattr(err, s)) for out, err in self.residual.items() for s in err.sigma_names
        ]

        def model():
            values = {}
            for name in theta_names:
                if name in theta_dists:
                    values[name] = numpyro.sample(f"theta_{name}", theta_dists[name])
                else:
                    values[name] = jnp.asarray(self.theta[name], jnp.float64)
            theta = jnp.stack([values[name] for name in theta_names])
            typical = self._typical(theta, encoded, n)
            if r:
                sd = numpyro.sample(
                    "omega_sd", dist.HalfNormal(priors.omega_scale * jnp.ones(r)).to_event(1)
                )
                if omega_structure == "full" and r > 1:
                    corr = numpyro.sample(
                        "omega_corr", dist.LKJCholesky(r, priors.lkj_concentration)
                    )
                    factor = sd[:, None] * corr
                else:
                    factor = jnp.diag(sd)
                numpyro.deterministic("omega", factor @ factor.T)
            else:
                factor = jnp.zeros((0, 0))
            occ_factor = jnp.zeros((0, 0))
            if rb:
                occ_factor = jnp.diag(
                    numpyro.sample(
                        "occasion_sd",
                        dist.HalfNormal(priors.omega_scale * jnp.ones(rb)).to_event(1),
                    )
                )
            eta, kappa = _sample_effects(n, k, factor, occ_factor, centered=centered)
            sigmas: dict[str, dict[str, Array]] = {}
            for out, s, value in sigma_specs:
                sigmas.setdefault(out, {})[s] = numpyro.sample(
                    f"sigma_{out}_{s}", dist.HalfNormal(priors.sigma_scale_factor * value)
                )
            params = self._apply(typical, eta, kappa)
            ll = self.log_likelihood(data, params, sigmas, method=method)
            numpyro.factor("log_likelihood", ll.sum())

        return model

    def _theta_prior(self, name: str, priors: InferencePriors):
        import numpyro.distributions as dist

        if name in priors.overrides:
            return priors.overrides[name]
        value = self.theta[name]
        # log-normal only for a positive structural parameter: a covariate effect or an
        # exponent that starts positive may well be negative
        if value > 0 and name in self.structural.parameters:
            return dist.LogNormal(math.log(value), priors.theta_log_sd)
        return dist.Normal(value, priors.theta_sd or max(abs(value), 1.0))

    def individual_model(
        self,
        data: ObservationData,
        *,
        prior_weight: float = 1.0,
        method: str = "auto",
    ) -> Callable[[], None]:
        """A NumPyro model for individual (Bayesian forecasting) inference.

        θ, Ω and σ are fixed at the model's values; ``eta`` ``[subject, R]`` (and ``kappa``
        ``[subject, occasion, Rb]``) are random with the population prior ``N(0, Ω)`` whose log
        density is multiplied by ``prior_weight`` (> 0; 1 is Bayes' rule, smaller values let
        the data weigh more). Deterministic site ``parameters`` holds the individual
        parameters.
        """
        import numpyro

        if not (np.isfinite(prior_weight) and prior_weight > 0):
            raise PopulationModelError(
                f"`prior_weight` must be a finite number > 0 (1 = Bayes), got {prior_weight!r}"
            )
        self._observed_outputs(data)
        encoded = self.encode_covariates(data.covariates)
        n, k = data.n_subjects, self._n_occasions(data)
        typical = self._typical(self.theta_vector(), encoded, n)
        # a Gaussian prior's log density times w is the Gaussian with covariance Ω / w
        scale = 1.0 / math.sqrt(prior_weight)
        factor = jnp.asarray(_cholesky(self.omega)) * scale
        occ_factor = jnp.asarray(_cholesky(self.occasion_omega)) * scale

        def model():
            eta, kappa = _sample_effects(n, k, factor, occ_factor)
            params = numpyro.deterministic("parameters", self._apply(typical, eta, kappa))
            numpyro.factor("log_likelihood", self.log_likelihood(data, params, method=method).sum())

        return model


def _sample_effects(n: int, k: int, factor: Array, occ_factor: Array, *, centered: bool = False):
    """η per subject (and κ per subject and occasion) as NumPyro sites.

    Non-centred: ``eta_z ~ N(0, I)``, η = L z (good when the data say little about each
    subject). Centred: ``eta ~ N(0, L Lᵀ)`` (good when every subject is well observed, as
    in a rich PK study: the non-centred posterior then couples ω and z tightly).
    """
    import numpyro
    import numpyro.distributions as dist

    r, rb = factor.shape[0], occ_factor.shape[0]
    eta = jnp.zeros((n, 0))
    if r and centered:
        with numpyro.plate("subject", n, dim=-1):
            eta = numpyro.sample("eta", dist.MultivariateNormal(jnp.zeros(r), scale_tril=factor))
    elif r:
        with numpyro.plate("subject", n, dim=-1):
            z = numpyro.sample("eta_z", dist.Normal(0.0, jnp.ones(r)).to_event(1))
        eta = numpyro.deterministic("eta", z @ factor.T)
    kappa = None
    if rb:
        with numpyro.plate("subject_occasion", n * k, dim=-1):
            kz = numpyro.sample("kappa_z", dist.Normal(0.0, jnp.ones(rb)).to_event(1))
        kappa = numpyro.deterministic("kappa", (kz @ occ_factor.T).reshape(n, k, rb))
    return eta, kappa


def _cholesky(omega: np.ndarray) -> np.ndarray:
    """``L`` with ``L Lᵀ = Ω`` (PSD Ω; zero-variance rows stay zero)."""
    from ..simulators._cohort import _cholesky_factor

    return _cholesky_factor(omega, omega.shape[0]) if omega.size else np.zeros((0, 0))
