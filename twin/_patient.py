"""The patient twin: Bayesian individualisation from measured levels, what-if regimens and
dose recommendation.

A :class:`PatientTwin` is one patient — covariates (one row of the standard covariate
table), a drug's :class:`~twinsim.priors.PopulationModel`, the doses actually given and
the levels measured (:class:`Observation`; below-LLOQ values are censored with Beal's M3
in the likelihood). :meth:`PatientTwin.fit` turns it into a :class:`TwinPosterior` over
the patient's random effects η (log-scale deviations of the individual parameters from
the covariate-typical ones):

- ``"map"`` / ``"laplace"``: the posterior mode and the Laplace approximation
  ``N(η̂, H⁻¹)`` with ``H`` the Hessian of the negative log posterior at the mode. Linear
  models: BFGS (optimistix) and exact second derivatives inside one compiled function.
  ODE models: a bounded L-BFGS-B search (scipy, prior-whitened coordinates) on one
  compiled value-and-gradient from forward sensitivities, ``H`` by central differences of
  that gradient. Both names give the same posterior; predictions draw from the Gaussian.
- ``"importance"``: the Laplace posterior corrected by sampling–importance resampling
  (Student-t proposals around the mode weighed by the exact posterior, Pareto-smoothed;
  :mod:`~twinsim.twin._importance`), for skewed posteriors whose Laplace intervals are
  too narrow, at a fraction of NUTS's cost; ``diagnostics["pareto_k"]`` says whether the
  correction can be trusted (< 0.7).
- ``"nuts"``: NumPyro's NUTS on the same posterior as
  :meth:`~twinsim.priors.PopulationModel.individual_model` (θ, Ω, σ fixed; η = L z, z
  standard normal; ``prior_weight`` scales the prior's log density), started at the mode.
  Chains are vectorised for linear models and for histories on the semilinear engine
  (below), and run one after another on the ODE engine (a vectorised event walk would
  run both sides of each of its data-dependent branches), whose solves inside the
  sampler use rtol 1e-5.
- ``"prior"``: no data — the population prior for this patient's covariates (the
  "population-only" prediction).

``prior_weight`` (> 0) multiplies the log density of the population prior ``N(0, Ω)``:
1 is Bayes' rule, smaller values trust the patient's data more (Ω/w), larger values the
population more.

Observations and doses are padded to power-of-two bucket sizes, and the compiled
functions take them as arguments, so re-fitting the same patient with one more level (or
dose) reuses the compilation (``PatientTwin.compilations()`` counts them).

A model with a linear PK part driving a part linear in itself (warfarin) is fitted and
sampled on the semilinear engine whenever the patient's boluses and observation times
lie on a grid of whole seconds (:func:`~twinsim.simulators.semilinear_outputs`: exact
PK, steps ≤ 0.5 h for fits and ≤ 2 h for NUTS, the step passed as data so any history
reuses the program); other histories take the model's ODE engine.

:meth:`TwinPosterior.predict` simulates candidate regimens (:class:`Regimen`, or dose
lists) after the doses already given, for posterior draws, and returns a
:class:`Prediction`: median and 5–95 % bands over time per output, exposure metrics with
their 90 % intervals, and the probability of target attainment (PTA). Metrics are taken
over the *evaluation window*, the last ``target.window_h`` hours of the horizon:

- ``auc24``: AUC of the target's output over the last 24 h of the horizon (mg·h/L);
- ``trough``: the pre-dose value at the last dose of the regimen inside the horizon
  (the value at the end of the horizon if none);
- ``cmax``: the largest value in the window; ``average``: AUC(window) / window;
- ``time_in_range``: fraction of the window with ``low ≤ output ≤ high``.

A draw attains the target (:meth:`Target.attained`) when: ``auc24`` / ``trough``: the
metric lies in ``[low, high]``; ``concentration`` / ``inr`` / ``time_in_range``: the time
in range is at least ``required_fraction``. PTA is the fraction of posterior draws that
attain it (true, error-free concentrations).

:meth:`TwinPosterior.recommend` searches practical regimens — doses from a grid of
available strengths (vials, tablets), standard intervals, optionally a loading dose — and
returns the best ones (:class:`Recommendation`) with their PTA and a plain-language why.

Built-in targets (:func:`default_target`, from :func:`~twinsim.priors.drug_metadata`):
vancomycin AUC24 400–600 mg·h/L; warfarin INR 2–3 (time in range over the last 72 h of
the horizon, ≥ 60 %); theophylline 10–20 mg/L (≥ 90 % of the last 24 h in range).

Names follow the issue-4 contract (``/tmp/coord/issue4.md``); additions: ``Regimen``,
``fit(method="prior")``, ``TwinPosterior.eta_draws``, ``Prediction.table()``.
"""

from __future__ import annotations

import functools
import math
import time as _time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from ..priors._covariates import DERIVED_COVARIATES, GENES, CovariateError, parse_diplotype
from ..priors._library import DrugLibraryError, drug_metadata
from ..priors._population import PopulationModel
from ..simulators import Dose, DosingEvents, bucket_size
from ..simulators._events import as_dose
from ._clinical import _PRACTICAL, Observation, PatientTwinError, default_target
from ._compiled import _SAMPLE_MAX_STEP, _engine, _inverse_pd
from ._genotype import (
    NOT_TESTED,
    GenotypeGroup,
    GenotypeMixture,
    ancestry_of,
    genotype_groups,
    is_not_tested,
    mixture_weights,
)
from ._importance import importance_draws
from ._latent import LatentModel
from ._nuts import _sample_nuts
from ._posterior import TwinPosterior

if TYPE_CHECKING:
    from ._clinical import Target
    from ._recommend import Recommendation

__all__ = ["PatientTwin"]

FIT_METHODS = ("map", "laplace", "importance", "nuts", "prior")


# model covariates derived from the standard co-medication columns (1 if any is taken)
_DERIVED = DERIVED_COVARIATES


def _canonical_genotype(column: str, value: Any) -> np.ndarray:
    """A genotype as a clinician writes it (``"A/G"``, ``"*3/*1"``) in the model's spelling."""
    try:
        return np.asarray([parse_diplotype(column.upper(), str(value))])
    except CovariateError as error:
        raise PatientTwinError(f"covariate `{column}`: {error}") from None


def _resolve_model(drug: str | PopulationModel | LatentModel) -> tuple[PopulationModel, str | None]:
    if isinstance(drug, LatentModel):
        # a trained latent twin: its population-model form, labelled with the drug of its
        # prior (targets, label limits and safety thresholds are the drug's)
        name = drug.population.name.lower()
        return drug.population_model(), (name if name in _PRACTICAL else None)
    if isinstance(drug, PopulationModel):
        name = drug.name.lower()
        return drug, (name if name in _PRACTICAL else None)
    if not isinstance(drug, str):
        raise PatientTwinError(
            f"`drug` must be a drug name, a PopulationModel or a trained LatentModel, got "
            f"{type(drug).__name__}"
        )
    from ..priors._library import DRUG_LIBRARY

    key = drug.strip().lower()
    if key not in DRUG_LIBRARY:
        try:
            drug_metadata(drug)  # the library's message: known drugs, closest match
        except DrugLibraryError as error:
            raise PatientTwinError(str(error)) from None
    # the library's shared instance: twins of one drug share compiled functions
    return DRUG_LIBRARY[key], key


@dataclass(frozen=True, eq=False)
class PatientTwin:
    """One patient's digital twin for one drug. Immutable: ``with_*`` return new twins.

    Build with :meth:`create`. Attributes: ``model`` (the population model), ``drug``
    (library name or ``None``), ``covariates`` (``{name: array of length 1}``), ``doses``
    (the doses given, :class:`~twinsim.simulators.Dose` records, ADDL expanded, sorted),
    ``observations`` (sorted by time), ``target``.
    """

    model: PopulationModel
    drug: str | None
    covariates: Mapping[str, np.ndarray]
    doses: tuple[Dose, ...] = ()
    observations: tuple[Observation, ...] = ()
    target: Target | None = None

    @property
    def ignored_covariates(self) -> tuple[str, ...]:
        """Covariates given that the drug model does not use (they change nothing).

        Examples
        --------
        >>> twin = PatientTwin.create(
        ...     "vancomycin", {"weight": 80.0, "crcl": 60.0, "dialysis": 0, "age": 70.0}
        ... )
        >>> twin.ignored_covariates
        ('age',)
        """
        used = {c.name for c in self.model.covariates}
        used |= {src for name, sources in _DERIVED.items() if name in used for src in sources}
        if self.untested_genes:
            used.add("ancestry")
        return tuple(sorted(name for name in self.covariates if name not in used))

    # ---- untested genotypes
    @property
    def untested_genes(self) -> tuple[str, ...]:
        """Genotype covariates given as not tested (``"not tested"``, ``"unknown"``, ``None``,
        ...; see :func:`~twinsim.twin._genotype.is_not_tested`): the twin averages over them.

        Examples
        --------
        >>> twin = PatientTwin.create(
        ...     "warfarin",
        ...     {"age": 70, "cyp2c9": "not tested", "vkorc1": "G/A", "ancestry": "european"},
        ... )
        >>> twin.untested_genes
        ('cyp2c9',)
        >>> [(g.label, round(g.prior, 3)) for g in twin.genotype_groups][:3]
        [('CYP2C9 *1/*1', 0.634), ('CYP2C9 *1/*2', 0.213), ('CYP2C9 *1/*3', 0.111)]
        """
        return tuple(
            c.name
            for c in self.model.covariates
            if c.name in self.covariates and str(self.covariates[c.name][0]) == NOT_TESTED
        )

    @property
    def ancestry(self) -> str | None:
        """The ancestry group whose genotype frequencies stand in for untested genes
        (``None`` when every genotype is given)."""
        if not self.untested_genes:
            return None
        return ancestry_of(self.covariates, self.untested_genes)

    @functools.cached_property
    def genotype_groups(self) -> tuple[GenotypeGroup, ...]:
        """The genotype groups averaged over, with their prior (population) weights: the
        Hardy–Weinberg diplotype frequencies of :attr:`ancestry`, diplotypes with the same
        model parameters pooled (empty when every genotype is given)."""
        return self._genotype_prior[0]

    @functools.cached_property
    def _genotype_prior(self) -> tuple[tuple[GenotypeGroup, ...], dict[str, float]]:
        if not self.untested_genes:
            return (), {}
        return genotype_groups(self.model, self.covariates, self.untested_genes, self.ancestry)

    @property
    def genotype_note(self) -> str:
        """What the twin does about untested genes, in words (``""`` when none)."""
        if not self.untested_genes:
            return ""
        groups = self.genotype_groups
        genes = " and ".join(c.upper() for c in self.untested_genes)
        return (
            f"{genes} not tested: the twin averages over {len(groups)} genotype group(s) "
            f"weighted by their frequency in {self.ancestry.replace('_', ' ').title()} "
            "ancestry (Hardy–Weinberg), and by the measured levels once fitted"
        )

    def with_genotype(self, **genotypes: str) -> PatientTwin:
        """A new twin with these genotypes (``cyp2c9="*1/*3"``; ``"not tested"`` to average)."""
        return PatientTwin.create(
            self.model, {**self.covariates, **genotypes}, self.doses, self.observations,
            self.target,
        )  # fmt: skip

    def _component(self, group: GenotypeGroup) -> PatientTwin:
        """This twin with the untested genes set to one genotype group."""
        row = {**self.covariates, **{c: np.asarray([v]) for c, v in group.genotypes.items()}}
        return PatientTwin(self.model, self.drug, row, self.doses, self.observations, self.target)

    @property
    def _structural_row(self) -> Mapping[str, np.ndarray]:
        """Covariates for questions about the structural model only (untested genes at
        the model's reference level)."""
        if not self.untested_genes:
            return self.covariates
        row = dict(self.covariates)
        for c in self.model.covariates:
            if c.name in self.untested_genes:
                row[c.name] = np.asarray([c.levels[0]])
        return row

    @property
    def _has_steady_state(self) -> bool:
        return any(d.steady_state for d in self.doses)

    # ---- construction
    @classmethod
    def create(
        cls,
        drug: str | PopulationModel | LatentModel,
        covariates: Mapping[str, Any],
        doses: DosingEvents | Sequence[Dose] = (),
        observations: Sequence[Observation] = (),
        target: Target | None = None,
    ) -> PatientTwin:
        """A twin from a drug (library name or model), covariates, doses and levels.

        Parameters
        ----------
        drug
            ``"vancomycin"``, ``"warfarin"``, ``"theophylline"``, a
            :class:`~twinsim.priors.PopulationModel` or a trained
            :class:`~twinsim.twin.LatentModel` (the twin then individualises the latent
            variable: MAP, Laplace and NUTS over ``z``; the drug's targets and label
            limits are those of the model's prior).
        covariates
            One row of the standard covariate table: scalars or arrays of length 1 (e.g.
            ``PatientSpec.covariates()``); the model's declared covariates are required.
            A genotype may be given as not tested (``"not tested"``, ``"untested"``,
            ``"unknown"``, ``"not known"``, ``"N/A"``, ``"none"``, ``""``, ``None`` or NaN):
            the twin then averages over the genotypes of the patient's ``ancestry``
            (required then: ``"european"``, ``"east_asian"`` or ``"african"``), see
            :attr:`untested_genes` and :mod:`twinsim.twin._genotype`.
        doses
            The doses given: :class:`~twinsim.simulators.Dose` records (0-based
            compartment, see :meth:`dose`) or a one-subject
            :class:`~twinsim.simulators.DosingEvents`; steady-state (``SS=1``) records
            are accepted (the fit then runs on the model's steady-state engine).
        observations
            :class:`Observation` s (any order).
        target
            Therapeutic target (default: :func:`default_target` of a library drug).

        Returns
        -------
        PatientTwin

        Raises
        ------
        PatientTwinError
            Unknown drug (lists the known ones), missing covariates, an untested genotype
            without a known ``ancestry``, an observation of an output the model cannot
            observe, or a drug level before any dose.

        Examples
        --------
        >>> twin = PatientTwin.create("vancomycin", {"weight": 80.0, "crcl": 60.0, "dialysis": 0})
        >>> twin = twin.with_doses(twin.dose(0.0, 1000.0, infusion_h=1.0))
        >>> twin.with_observations(Observation(11.5, 9.0)).observations[0].time
        11.5
        """
        model, name = _resolve_model(drug)
        row = cls._covariate_row(model, covariates)
        twin = cls(model, name, row, (), (), target)
        twin = twin.with_doses(doses) if _has_doses(doses) else twin
        if target is None and name is not None:
            twin = replace(twin, target=default_target(name))
        if target is not None and target.output not in model.structural.output_names:
            raise PatientTwinError(
                f"`target.output` {target.output!r} is not an output of model {model.name!r}; "
                f"outputs: {list(model.structural.output_names)}"
            )
        return twin.with_observations(*observations) if observations else twin

    @classmethod
    def recommend_cohort(
        cls,
        drug: str | PopulationModel,
        covariates: Mapping[str, Sequence[Any]],
        **options: Any,
    ) -> list[list[Recommendation]]:
        """Recommendations for every patient of a covariate table, in one call.

        Each row becomes a twin without levels (the population prior for its covariates,
        ``fit(method="prior")``) and gets :meth:`TwinPosterior.recommend` with ``options``.
        The twins of one drug share the compiled engine, so only the first row compiles.

        Parameters
        ----------
        drug
            Library name or population model.
        covariates
            ``{column: values per patient}`` (e.g. ``generate_population(...).covariates``).
        **options
            Passed to :meth:`TwinPosterior.recommend` (``top``, ``n_draws``, ...).

        Returns
        -------
        list[list[Recommendation]]
            One list per patient, best first.

        Raises
        ------
        PatientTwinError
            Naming the row whose covariates or recommendation failed.
        """
        lengths = {k: len(np.atleast_1d(v)) for k, v in covariates.items()}
        if len(set(lengths.values())) != 1:
            raise PatientTwinError(
                f"`covariates` columns must have one value per patient, got lengths {lengths}"
            )
        n = next(iter(lengths.values()))
        out = []
        for i in range(n):
            row = {k: np.atleast_1d(v)[i] for k, v in covariates.items()}
            try:
                twin = cls.create(drug, row)
                out.append(twin.fit(method="prior").recommend(**options))
            except PatientTwinError as error:
                raise PatientTwinError(f"patient row {i}: {error}") from None
        return out

    @staticmethod
    def _covariate_row(model: PopulationModel, covariates: Mapping[str, Any]) -> dict:
        if not isinstance(covariates, Mapping):
            raise PatientTwinError(
                f"`covariates` must be a mapping of column name to value, got "
                f"{type(covariates).__name__}"
            )
        row = {}
        for name, value in covariates.items():
            arr = np.atleast_1d(np.asarray(value))
            if arr.shape != (1,):
                raise PatientTwinError(
                    f"covariate `{name}` must be one value for the patient, got shape {arr.shape}"
                )
            row[str(name)] = arr
        for name, sources in _DERIVED.items():
            if any(c.name == name for c in model.covariates) and name not in row:
                given = [row[src] for src in sources if src in row]
                if given:
                    row[name] = np.asarray([float(max(float(v[0]) for v in given))])
        untested = []
        for c in model.covariates:
            if c.categorical and c.name in row and c.name.upper() in GENES:
                if is_not_tested(row[c.name][0]):
                    row[c.name] = np.asarray([NOT_TESTED])
                    untested.append(c.name)
                else:
                    row[c.name] = _canonical_genotype(c.name, row[c.name][0])
        if untested:
            ancestry_of(row, untested)  # a clear error now, not at the first prediction
        missing = [c.name for c in model.covariates if c.name not in row and c.default is None]
        if missing:
            raise PatientTwinError(
                f"drug model {model.name!r} needs covariates {missing}; got {sorted(row)} "
                "(standard column names, e.g. from PatientSpec.covariates())"
            )
        for c in model.covariates:
            if c.name not in row:
                continue
            value = row[c.name]
            if not c.categorical and not np.all(np.isfinite(value.astype(np.float64))):
                if not (c.name == "smoking_quit_time" and np.isinf(value).all()):
                    raise PatientTwinError(
                        f"covariate `{c.name}` must be a finite number ({c.unit}), got {value[0]!r}"
                    )
        check = dict(row)
        for c in model.covariates:
            if c.name in untested:
                check[c.name] = np.asarray([c.levels[0]])
        try:
            model.encode_covariates(check)
        except ValueError as error:
            raise PatientTwinError(str(error)) from None
        return row

    def with_doses(self, *doses: Dose | DosingEvents | Sequence[Dose]) -> PatientTwin:
        """A new twin with these doses added to those given."""
        added: list[Dose] = []
        for item in doses:
            if isinstance(item, DosingEvents):
                if item.n_subjects != 1:
                    raise PatientTwinError(
                        f"`doses` must be a one-subject DosingEvents, got {item.n_subjects} subjects"
                    )
                added.extend(item.to_doses()[0])
            elif isinstance(item, Dose):
                added.append(item)
            else:
                added.extend(as_dose(d, "doses[]") for d in item)
        n_states = len(self.model.structural.states)
        for i, d in enumerate(added):
            if not 0 <= int(d.compartment) < n_states:
                raise PatientTwinError(
                    f"`doses[{i}].compartment` must be a 0-based state index < {n_states} "
                    f"({list(self.model.structural.states)}), got {d.compartment!r}; use "
                    "twin.dose(time, amount, route=...)"
                )
        # expands ADDL and checks every record (EventError names the field)
        table = DosingEvents.from_doses([[*self.doses, *added]])
        return replace(self, doses=tuple(table.to_doses()[0]))

    def with_observations(self, *observations: Observation) -> PatientTwin:
        """A new twin with these observations added."""
        names = self.model.structural.output_names
        for obs in observations:
            if not isinstance(obs, Observation):
                raise PatientTwinError(
                    f"observations must be Observation(time, value, ...), got {obs!r}"
                )
            if obs.output not in self.model.residual:
                raise PatientTwinError(
                    f"`Observation.output` {obs.output!r} cannot be observed with model "
                    f"{self.model.name!r}; observable outputs: {list(self.model.residual)} "
                    f"(all outputs: {list(names)})"
                )
        merged = tuple(sorted((*self.observations, *observations), key=lambda o: o.time))
        twin = replace(self, observations=merged)
        twin._check_observation_times()
        return twin

    def with_target(self, target: Target) -> PatientTwin:
        """A new twin with another therapeutic target."""
        return PatientTwin.create(
            self.model, self.covariates, self.doses, self.observations, target
        )

    def _check_observation_times(self) -> None:
        drug_free = self._zero_without_drug()
        first_dose = min((d.time for d in self.doses if d.amount > 0), default=math.inf)
        for obs in self.observations:
            if obs.output in drug_free and obs.time <= first_dose:
                when = (
                    "no dose is recorded"
                    if math.isinf(first_dose)
                    else (f"the first dose is at {first_dose:g} h")
                )
                raise PatientTwinError(
                    f"observation of {obs.output!r} at {obs.time:g} h is before any dose "
                    f"({when}); a drug level needs a dose before it — add the doses given "
                    "(with_doses) or check the times (h on the doses' clock)"
                )

    def _zero_without_drug(self) -> frozenset[str]:
        """Outputs that are 0 without drug (levels), as opposed to baselines (INR)."""
        return _engine(self.model).zero_without_drug(self._structural_row)

    # ---- dosing helpers
    @property
    def route(self) -> str:
        """Default route: the drug's, else the model's first."""
        routes = dict(self.model.structural.routes)
        if self.drug is not None:
            route = drug_metadata(self.drug)["dosing"].get("route")
            if route in routes:
                return str(route)
        if not routes:
            return ""
        return next(iter(routes))

    def _compartment(self, route: str | None) -> int:
        structural = self.model.structural
        routes = dict(structural.routes)
        route = route or self.route
        if route == "":
            return 0
        if route not in routes:
            raise PatientTwinError(
                f"`route` {route!r} is not a route of model {self.model.name!r}; routes: "
                f"{list(routes)}"
            )
        return structural.states.index(routes[route])

    def _infusion_h(self, amount: float, route: str | None, infusion_h: float | None) -> float:
        if infusion_h is not None:
            return float(infusion_h)
        route = route or self.route
        practical = _PRACTICAL.get(self.drug or "")
        if route != "iv" or practical is None or practical.infusion_mg_per_h is None:
            return 0.0
        return max(practical.min_infusion_h, amount / practical.infusion_mg_per_h)

    def dose(
        self,
        time: float,
        amount: float,
        *,
        route: str | None = None,
        infusion_h: float | None = None,
    ) -> Dose:
        """A dose record on a named route (default: the drug's route; IV vancomycin is
        infused at 1 g/h, at least 1 h, unless ``infusion_h`` is given).

        Examples
        --------
        >>> twin = PatientTwin.create("vancomycin", {"weight": 80.0, "crcl": 60.0, "dialysis": 0})
        >>> twin.dose(0.0, 1500.0)
        Dose(time=0.0, amount=1500.0, compartment=0, rate=0.0, duration=1.5, steady_state=False, interval=0.0, additional=0)
        """
        return Dose(
            float(time),
            float(amount),
            compartment=self._compartment(route),
            rate=0.0,
            duration=self._infusion_h(float(amount), route, infusion_h),
        )

    @property
    def now(self) -> float:
        """The latest dose or observation time, h."""
        times = [d.time for d in self.doses] + [o.time for o in self.observations]
        return max(times, default=0.0)

    @property
    def next_dose_time(self) -> float:
        """When the next dose is due: the last dose plus the last interval between doses
        (if that is after every observation), else :attr:`now`; 0 without doses."""
        times = sorted({d.time for d in self.doses})
        if not times:
            return 0.0
        if len(times) >= 2:
            due = times[-1] + (times[-1] - times[-2])
            if due >= self.now:
                return due
        return self.now

    # ---- data as padded arrays
    def _batch(self, prior_weight: float) -> dict[str, Any]:
        model = self.model
        n_obs = len(self.observations)
        width = bucket_size(n_obs)
        names = model.structural.output_names
        times = np.zeros(width)
        observed = np.ones(width)  # padding: a harmless positive value
        lloq = np.ones(width)
        output = np.zeros(width, np.int64)
        mask = np.zeros(width, bool)
        censored = np.zeros(width, bool)
        for i, o in enumerate(self.observations):
            times[i] = o.time
            output[i] = names.index(o.output)
            mask[i] = True
            censored[i] = o.censored
            observed[i] = 1.0 if o.censored else o.value
            lloq[i] = o.lloq if o.lloq is not None else 1.0
        if n_obs:
            times[n_obs:] = times[n_obs - 1]
        events = DosingEvents.from_doses(
            [list(self.doses) or [Dose(0.0, 0.0, compartment=0)]],
            pad_to=bucket_size(max(len(self.doses), 1)),
        )
        if self.untested_genes:
            raise PatientTwinError(
                f"{self.untested_genes} not tested: fit the twin (it averages over the "
                "genotypes), or give each genotype"
            )
        engine = _engine(model, steady_state=self._has_steady_state)
        return {
            "typical": model.typical_parameters(self.covariates)[0],
            "events": events,
            "times": jnp.asarray(times),
            "grid": engine.grid(events, times),
            "sample_grid": engine.grid(events, times, max_step=_SAMPLE_MAX_STEP),
            "observed": jnp.asarray(observed),
            "lloq": jnp.asarray(lloq),
            "output": jnp.asarray(output),
            "mask": jnp.asarray(mask),
            "censored": jnp.asarray(censored),
            "prior_weight": jnp.asarray(float(prior_weight)),
        }

    @staticmethod
    def compilations(drug: str | PopulationModel) -> dict[str, int]:
        """How many times each compiled function of a drug's engine was compiled (a cache
        size per function), to check that new data reuse compilations."""
        model, _ = _resolve_model(drug)
        engine = _engine(model)
        counts = {
            name: getattr(engine, name)._cache_size()
            for name in ("map", "value_and_grad", "predict", "prior_draws")
        }
        counts["nuts"] = sum(f._cache_size() for f in engine._nuts.values())
        return counts

    # ---- fitting
    def fit(
        self,
        method: str = "map",
        *,
        prior_weight: float = 1.0,
        num_warmup: int = 1000,
        num_samples: int = 1000,
        num_chains: int = 4,
        seed: int = 0,
    ) -> TwinPosterior:
        """The posterior of this patient's random effects given the observations.

        Parameters
        ----------
        method
            ``"map"`` or ``"laplace"`` (mode and Laplace covariance; fast),
            ``"importance"`` (the Laplace posterior corrected by importance sampling,
            see :mod:`~twinsim.twin._importance`: ``num_samples`` draws; 0.04 s for
            vancomycin, tens of seconds for an ODE model),
            ``"nuts"`` (full posterior by NUTS), ``"prior"`` (ignore the data:
            population-only).
        prior_weight
            Weight of the population prior's log density (> 0; 1: Bayes).
        num_warmup, num_samples, num_chains
            NUTS settings (per chain; chains vectorised in one program for linear models
            and the semilinear engine, one after another on the ODE engine);
            ``num_samples`` is also the number of importance draws.
        seed
            NUTS, importance and prior-draw seed.

        Returns
        -------
        TwinPosterior

        Raises
        ------
        PatientTwinError
            Unknown method, a prior weight ≤ 0, or NUTS settings < 1.

        Examples
        --------
        >>> twin = PatientTwin.create("vancomycin", {"weight": 80.0, "crcl": 60.0, "dialysis": 0})
        >>> twin = twin.with_doses(twin.dose(0.0, 1000.0)).with_observations(Observation(11.5, 9.0))
        >>> post = twin.fit("map")
        >>> post.eta_mode.shape
        (3,)
        """
        if method not in FIT_METHODS:
            raise PatientTwinError(
                f"`method` must be one of {', '.join(map(repr, FIT_METHODS))}, got {method!r}"
            )
        if not (
            isinstance(prior_weight, int | float) and np.isfinite(prior_weight) and prior_weight > 0
        ):
            raise PatientTwinError(
                f"`prior_weight` must be a finite number > 0 (1 = Bayes' rule; < 1 trusts the "
                f"data more), got {prior_weight!r}"
            )
        # the sampler settings the method uses, checked before any work
        settings = {"importance": ("num_samples",),
                    "nuts": ("num_warmup", "num_samples", "num_chains")}.get(method, ())  # fmt: skip
        given = {"num_warmup": num_warmup, "num_samples": num_samples, "num_chains": num_chains}
        for name in settings:
            if int(given[name]) < 1:
                raise PatientTwinError(
                    f"`{name}` must be an integer ≥ 1 for fit({method!r}), got {given[name]!r}"
                )
        if self.untested_genes:
            return self._fit_mixture(
                method, prior_weight=prior_weight, num_warmup=num_warmup,
                num_samples=num_samples, num_chains=num_chains, seed=seed,
            )  # fmt: skip
        engine = _engine(self.model, steady_state=self._has_steady_state)
        r = engine.n_effects
        start = _time.perf_counter()
        if method == "prior" or (not self.observations and method != "nuts"):
            cov = np.asarray(self.model.omega) / prior_weight
            return TwinPosterior(
                self, "prior", prior_weight, np.zeros(r), cov, None,
                {"seconds": _time.perf_counter() - start, "observations": 0},
            )  # fmt: skip
        batch = self._batch(prior_weight)
        eta, hess, value, ok, steps = engine.mode(batch)
        cov, pd = _inverse_pd(hess)
        diagnostics: dict[str, Any] = {
            "converged": bool(ok),
            "optimizer_steps": int(steps),
            "neg_log_posterior": float(value),
            "hessian_positive_definite": pd,
            "observations": len(self.observations),
        }
        draws = None
        if method == "importance":
            draws, extra = importance_draws(engine, batch, eta, cov, int(num_samples), seed)
            diagnostics.update(extra)
        if method == "nuts":
            ((draws, extra),) = _sample_nuts(
                engine, [batch], [eta], [jax.random.PRNGKey(seed)], prior_weight,
                num_warmup, num_samples, num_chains,
            )  # fmt: skip
            diagnostics.update(extra)
        diagnostics["seconds"] = _time.perf_counter() - start
        return TwinPosterior(self, method, prior_weight, eta, cov, draws, diagnostics)

    def _fit_mixture(self, method: str, **options: Any) -> TwinPosterior:
        """Fit every genotype group and weigh them (see :mod:`~twinsim.twin._genotype`)."""
        start = _time.perf_counter()
        groups, dropped = self._genotype_prior
        components = tuple(self._component(g).fit(method, **options) for g in groups)
        with_data = method != "prior" and bool(self.observations)
        prior = np.array([g.prior for g in groups])
        weights, log_evidence = mixture_weights(prior, components, with_data)
        mixture = GenotypeMixture(
            ancestry=self.ancestry or "",
            genes=self.untested_genes,
            groups=groups,
            prior=prior / prior.sum(),
            weights=weights,
            log_evidence=log_evidence,
            components=components,
            dropped=dropped,
            observations=len(self.observations) if with_data else 0,
        )
        best = components[mixture.most_probable]
        diagnostics = {
            "converged": all(p.diagnostics.get("converged", True) for p in components),
            "observations": best.diagnostics.get("observations", 0),
            "genotype_weights": {g.label: float(w) for g, w in zip(groups, weights, strict=True)},
            "seconds": _time.perf_counter() - start,
        }
        return TwinPosterior(
            self, best.method, best.prior_weight, best.eta_mode, best.covariance, None,
            diagnostics, mixture=mixture,
        )  # fmt: skip


def _has_doses(doses: Any) -> bool:
    if isinstance(doses, DosingEvents):
        return True
    return len(doses) > 0
