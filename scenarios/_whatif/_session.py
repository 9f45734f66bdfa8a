"""What-ifs in stages, for interactive use: fit once, search once, forecast on every change.

:func:`~twinsim.scenarios.run_whatif` answers a what-if in one go: fit the patient's twin,
search practical regimens, forecast every regimen. In an interactive tool most changes
touch only the candidate regimens, and the fit depends only on the patient, the doses
given and the levels measured; the search of practical regimens depends on the fit and
the target. :class:`WhatIfSession` keeps both in small least-recently-used caches keyed
by a hash of exactly the inputs they depend on, so a regimen change only forecasts.

The stages are public functions too: :func:`fit_whatif` (the twin's posterior),
:func:`search_whatif` (the recommended regimens) and :func:`forecast_whatif` (the
:class:`~twinsim.scenarios.WhatIfResult`); composed they give what ``run_whatif`` gives.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ._report import FORECAST_STEP_H, WhatIfResult, _fit_summary, _forecast
from ._spec import WhatIfSpec

if TYPE_CHECKING:
    from ...twin import Recommendation, TwinPosterior

__all__ = [
    "WhatIfFit",
    "WhatIfSession",
    "fit_key",
    "fit_whatif",
    "forecast_whatif",
    "run_whatif",
    "search_key",
    "search_whatif",
]


def _digest(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, default=_plain, ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):  # Dose
        return dataclasses.asdict(value)
    if hasattr(value, "_asdict"):  # named tuples
        return value._asdict()
    return str(value)


def fit_key(spec: WhatIfSpec) -> str:
    """Hash of what the twin's fit depends on: drug and model, covariates, doses given,
    levels, fit options.

    The patient's identifier, the candidates, the target and the horizon are not part of
    it (a change there does not refit).

    Examples
    --------
    >>> a = WhatIfSpec(drug="vancomycin", patient={"age": 70, "sex": "M", "weight": 80, "scr": 1.2},
    ...                history="1 g over 1 h q12h x 2 doses", candidates=["1 g over 1 h q12h"])
    >>> b = a.model_copy(update={"candidates": a.candidates * 2, "horizon": 48.0})
    >>> fit_key(a) == fit_key(b)
    True
    """
    options = spec.fit
    trained = spec.trained_model()
    return _digest(
        {
            "drug": spec.drug,
            # a retrained folder is another model: its parameters' hash is part of the key
            "model": None if trained is None else [str(trained.folder), trained.params_sha256],
            "covariates": spec.covariates(),
            "doses": spec.history_doses(),
            "observations": spec.observation_records(),
            "fit": options.model_dump(exclude={"n_draws"}),
        }
    )


def search_key(spec: WhatIfSpec) -> str:
    """Hash of what the search of practical regimens depends on (the fit, target, window)."""
    return _digest(
        {
            "fit": fit_key(spec),
            "target": spec.resolved_target(),
            "start": spec.candidate_start,
            "horizon": spec.horizon,
            "recommend": spec.recommend.model_dump(),
            "draws": (spec.fit.n_draws, spec.fit.seed),
        }
    )


@dataclass(frozen=True)
class WhatIfFit:
    """A fitted patient twin for a what-if: the posterior, how long it took, its summary."""

    posterior: TwinPosterior
    seconds: float
    summary: Mapping[str, Any]

    @property
    def method(self) -> str:
        """The fit method (``map``, ``laplace``, ``importance``, ``nuts``)."""
        return self.posterior.method


def fit_whatif(spec: WhatIfSpec) -> WhatIfFit:
    """Fit the patient's twin of ``spec`` (its doses given and levels measured).

    Raises
    ------
    twinsim.twin.PatientTwinError
        Inputs the twin cannot use (e.g. a drug level before any dose), with the reason.
    """
    from ...twin import Observation, PatientTwin

    twin = PatientTwin.create(
        spec.twin_model(),
        spec.covariates(),
        doses=spec.history_doses(),
        observations=[
            Observation(
                o.time,
                math.nan if o.value is None else o.value,
                output=o.output,
                below_lloq=o.below_lloq,
                lloq=o.lloq,
            )
            for o in spec.observations
        ],
        target=spec.resolved_target(),
    )
    options = spec.fit
    started = time.perf_counter()
    posterior = twin.fit(
        options.method,
        prior_weight=options.prior_weight,
        num_warmup=options.num_warmup,
        num_samples=options.num_samples,
        num_chains=options.num_chains,
        seed=options.seed,
    )
    seconds = time.perf_counter() - started
    return WhatIfFit(posterior, seconds, _fit_summary(posterior))


def search_whatif(spec: WhatIfSpec, fitted: WhatIfFit) -> tuple[Recommendation, ...]:
    """The practical regimens the twin recommends for ``spec`` (empty when turned off)."""
    if not spec.recommend.enabled:
        return ()
    return tuple(
        fitted.posterior.recommend(
            target=spec.resolved_target(),
            strengths_mg=spec.recommend.strengths_mg,
            intervals_h=spec.recommend.intervals_h,
            loading=spec.recommend.loading,
            horizon_h=spec.horizon,
            start_h=spec.candidate_start,
            top=spec.recommend.top,
            n_draws=spec.fit.n_draws,
            seed=spec.fit.seed,
        )
    )


def forecast_times(spec: WhatIfSpec) -> np.ndarray:
    """The forecast grid, h: ``0`` to :attr:`WhatIfSpec.end` every :data:`FORECAST_STEP_H` at most."""
    return np.linspace(0.0, spec.end, math.ceil(spec.end / FORECAST_STEP_H) + 1)


def forecast_whatif(
    spec: WhatIfSpec,
    fitted: WhatIfFit,
    found: Sequence[Recommendation] = (),
    *,
    command: str | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> WhatIfResult:
    """Forecast the candidates of ``spec`` and the recommended regimens ``found``.

    Parameters
    ----------
    spec
        The what-if.
    fitted
        From :func:`fit_whatif` for the same patient, doses and levels.
    found
        From :func:`search_whatif`: forecast after the candidates (a candidate the search
        also found keeps its row, marked ``"candidate, recommended"``).
    command, provenance
        For the provenance record.

    Returns
    -------
    WhatIfResult
    """
    from .._provenance import provenance_record

    target = spec.resolved_target()
    regimens = spec.candidate_doses()
    sources = dict.fromkeys(regimens, "candidate")
    why: dict[str, str] = {}
    risk: dict[str, float] = {}
    for item in found:
        name = item.description
        if name in regimens:
            sources[name] = "candidate, recommended"
        else:
            regimens[name] = list(item.doses)
            sources[name] = "recommended"
        why[name] = item.why
        risk[name] = item.p_unsafe
    prediction = fitted.posterior.predict(
        regimens,
        horizon_h=spec.horizon,
        times=forecast_times(spec),
        n_draws=spec.fit.n_draws,
        seed=spec.fit.seed,
        target=target,
    )
    model = spec.population_model()
    units = dict(model.structural.output_units)
    forecasts = tuple(
        _forecast(
            prediction, i, sources[name], regimens[name], why.get(name, ""), units, risk.get(name)
        )
        for i, name in enumerate(prediction.names)
    )
    method = spec.fit.method
    trained = spec.trained_model()
    record = provenance_record(
        spec,
        command=command,
        outputs={"regimens": list(regimens), "target": target.describe()},
        extra={
            "kind": "whatif",
            "fit": {"method": method, "seconds": fitted.seconds},
            **({} if trained is None else {"trained_model": trained.record()}),
            **dict(provenance or {}),
        },
    )
    return WhatIfResult(
        spec=spec,
        target=target,
        forecasts=forecasts,
        fit={"method": method, "seconds": fitted.seconds, **fitted.summary},
        output_units=units,
        provenance=record,
        objective_text=found[0].objective_text if found else prediction.objective_text,
        safety_text=(
            found[0].safety
            if found
            else (prediction.safety.describe() if prediction.safety is not None else "")
        ),
        excluded=found[0].excluded if found else (),
        notes=tuple(dict.fromkeys([*prediction.notes, *(n for r in found for n in r.notes)])),
    )


class _LRU:
    """A small least-recently-used map."""

    def __init__(self, size: int):
        self.size = max(1, int(size))
        self._items: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable) -> Any:
        if key not in self._items:
            return None
        self._items.move_to_end(key)
        return self._items[key]

    def put(self, key: Hashable, value: Any) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class WhatIfSession:
    """Answers what-ifs one after another, reusing fits and searches (thread-safe).

    Parameters
    ----------
    max_fits
        Fitted twins kept (least recently used dropped first).
    max_searches
        Regimen searches kept.

    Attributes
    ----------
    last
        Timings of the last :meth:`run`: ``wait_s`` (behind another what-if), ``fit_s``,
        ``search_s``, ``forecast_s`` (≈ 0 when reused) and ``fit_cached``, ``search_cached``.

    Examples
    --------
    >>> from twinsim.scenarios import load_whatif, whatif_examples
    >>> spec = load_whatif(whatif_examples()["whatif_vancomycin_renal"])
    >>> session = WhatIfSession()
    >>> first = session.run(spec)
    >>> fewer = session.run(spec.model_copy(update={"candidates": spec.candidates[:2]}))
    >>> session.last["fit_cached"], session.last["search_cached"], fewer.forecasts[1].name
    (True, True, '750 mg over 1 h q12h')
    """

    max_fits: int = 8
    max_searches: int = 16
    last: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._fits = _LRU(self.max_fits)
        self._searches = _LRU(self.max_searches)
        # one what-if at a time: two threads fitting the same twin would compile twice
        self._lock = threading.RLock()

    def _cached(self, cache: _LRU, key: str, make: Callable[[], Any], name: str) -> Any:
        value = cache.get(key)
        self.last[f"{name}_cached"] = value is not None
        started = time.perf_counter()
        if value is None:
            value = make()
            cache.put(key, value)
        self.last[f"{name}_s"] = time.perf_counter() - started
        return value

    def fit(self, spec: WhatIfSpec) -> WhatIfFit:
        """The fitted twin of ``spec`` (fitted now, or reused)."""
        with self._lock:
            return self._cached(self._fits, fit_key(spec), lambda: fit_whatif(spec), "fit")

    def search(self, spec: WhatIfSpec) -> tuple[Recommendation, ...]:
        """The recommended regimens of ``spec`` (searched now, or reused)."""
        with self._lock:
            return self._search(spec, self.fit(spec))

    def _search(self, spec: WhatIfSpec, fitted: WhatIfFit) -> tuple[Recommendation, ...]:
        return self._cached(
            self._searches, search_key(spec), lambda: search_whatif(spec, fitted), "search"
        )

    def run(
        self,
        spec: WhatIfSpec,
        *,
        command: str | None = None,
        provenance: Mapping[str, Any] | None = None,
    ) -> WhatIfResult:
        """Answer ``spec``: what :func:`~twinsim.scenarios.run_whatif` gives, reusing work."""
        asked = time.perf_counter()
        with self._lock:
            # time spent behind another what-if (e.g. the dashboard's warm-up)
            self.last = {"wait_s": time.perf_counter() - asked}
            fitted = self.fit(spec)
            found = self._search(spec, fitted)
            started = time.perf_counter()
            result = forecast_whatif(spec, fitted, found, command=command, provenance=provenance)
            self.last["forecast_s"] = time.perf_counter() - started
            return result

    @property
    def sizes(self) -> dict[str, int]:
        """How many fits and searches are kept."""
        return {"fits": len(self._fits), "searches": len(self._searches)}


def run_whatif(
    spec: WhatIfSpec,
    *,
    command: str | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> WhatIfResult:
    """Answer a what-if: fit the patient's twin, forecast each regimen, recommend one.

    Steps: the drug's population model (or the trained latent model of ``spec.model``)
    and the patient's covariates make a :class:`~twinsim.twin.PatientTwin` with the doses given and the levels measured;
    it is fitted with ``spec.fit``; each candidate regimen (after the history) is
    forecast from ``t = 0`` to the end of the horizon (medians and 90 % bands, metrics,
    PTA); with ``spec.recommend`` the twin searches practical regimens and the best
    ones are forecast the same way.

    Parameters
    ----------
    spec
        The what-if.
    command
        The command line, for the provenance record.
    provenance
        More keys for the provenance record (e.g. ``spec_file``).

    Returns
    -------
    WhatIfResult
    """
    # the stages an interactive session caches (fit, search, forecast), run in one go
    fitted = fit_whatif(spec)
    found = search_whatif(spec, fitted)
    return forecast_whatif(spec, fitted, found, command=command, provenance=provenance)
