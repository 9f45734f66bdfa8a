"""Patients as the padded arrays the latent model trains and encodes on.

Every subject's doses, observations and covariate features are padded to one shape per
data set (observations to a power-of-two bucket), so that every mini-batch has the same
shape and the training step compiles once.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np

from ...simulators import Dose, DosingEvents, bucket_size, predict_outputs
from ._features import LatentModelError

__all__ = ["LatentData"]

_ARRAYS = ("x", "typical", "times", "observed", "output", "mask", "censored", "lloq",
           "typical_prediction")  # fmt: skip


@dataclass(frozen=True)
class LatentData:
    """Subjects as padded host arrays (``[subject, ...]``); see :meth:`build`.

    ``events`` holds the doses (:class:`~twinsim.simulators.DosingEvents`), ``x`` the
    covariate features, ``typical`` the published typical parameters,
    ``typical_prediction`` the typical patient's prediction at each observation (what the
    encoder compares a level with), and the observation arrays follow
    :class:`~twinsim.priors.ObservationData` (padded rows: ``mask`` False, time = the
    subject's last time).
    """

    ids: tuple
    events: DosingEvents
    x: np.ndarray
    typical: np.ndarray
    times: np.ndarray
    observed: np.ndarray
    output: np.ndarray
    mask: np.ndarray
    censored: np.ndarray
    lloq: np.ndarray
    typical_prediction: np.ndarray
    covariates: Mapping[str, np.ndarray]

    @property
    def n_subjects(self) -> int:
        return len(self.ids)

    @classmethod
    def build(
        cls,
        model: Any,
        covariates: Mapping[str, Sequence[Any]],
        doses: Sequence[Sequence[Dose]] | DosingEvents,
        observations: Sequence[Sequence[tuple[float, float]]],
        *,
        outputs: Sequence[Sequence[int]] | None = None,
        lloq: float | None = None,
        ids: Sequence[Any] | None = None,
        n_observations: int | None = None,
        n_events: int | None = None,
    ) -> LatentData:
        """Pad subjects for a :class:`~twinsim.twin.LatentModel`.

        Parameters
        ----------
        model
            The latent model (its covariate transform and population model).
        covariates
            ``{column: values per subject}`` (standard covariate columns).
        doses
            One list of :class:`~twinsim.simulators.Dose` per subject, or their
            :class:`~twinsim.simulators.DosingEvents`.
        observations
            One list of ``(time h, value)`` per subject (sorted by time; may be empty).
        outputs
            Output index of each observation (default 0, the model's first output).
        lloq
            Limit of quantification: values below it are censored (M3). Default the
            residual error's own limit.
        ids
            Subject identifiers (default 0, 1, ...).
        n_observations, n_events
            Pad to at least these sizes (to share a compiled shape with other data).
        """
        n = doses.n_subjects if isinstance(doses, DosingEvents) else len(doses)
        if len(observations) != n:
            raise LatentModelError(
                f"`observations` has {len(observations)} subjects but `doses` has {n}; give one "
                "(possibly empty) list of observations per subject"
            )
        ids = tuple(range(n)) if ids is None else tuple(ids)
        cov = {k: np.asarray(v) for k, v in covariates.items()}
        for k, v in cov.items():
            if len(v) != n:
                raise LatentModelError(f"covariate `{k}` has {len(v)} values for {n} subjects")
        longest = max((len(o) for o in observations), default=0)
        n_obs = bucket_size(max(longest, n_observations or 0, 1), minimum=1)
        times = np.zeros((n, n_obs))
        observed = np.zeros((n, n_obs))
        output = np.zeros((n, n_obs), np.int64)
        mask = np.zeros((n, n_obs), bool)
        for i, rows in enumerate(observations):
            rows = [(float(t), float(v)) for t, v in rows]
            t_i = [t for t, _ in rows]
            if any(b < a for a, b in itertools.pairwise(t_i)) or any(t < 0 for t in t_i):
                raise LatentModelError(
                    f"`observations[{i}]` times must be ≥ 0 h and sorted, got {t_i}"
                )
            k = len(rows)
            times[i, :k] = t_i
            observed[i, :k] = [v for _, v in rows]
            times[i, k:] = t_i[-1] if k else 0.0
            mask[i, :k] = True
            if outputs is not None:
                output[i, :k] = outputs[i]
        limit = lloq
        if limit is None:
            limits = [e.lloq for _, e in model.errors if e.lloq is not None]
            limit = limits[0] if limits else None
        censored = mask & (observed < limit) if limit is not None else np.zeros_like(mask)
        lloq_arr = np.full((n, n_obs), np.nan if limit is None else float(limit))
        if isinstance(doses, DosingEvents):
            events = doses
        else:
            events = DosingEvents.from_doses([list(d) for d in doses], pad_to=n_events)
        typical = model.typical(cov)
        pred = np.asarray(predict_outputs(model.population.structural, jnp.asarray(typical),
                                          events, jnp.asarray(times)))  # fmt: skip
        typical_prediction = np.take_along_axis(pred, output[..., None], axis=-1)[..., 0]
        return cls(
            ids=ids, events=events, x=model.features.transform(cov), typical=typical,
            times=times, observed=observed, output=output, mask=mask, censored=censored,
            lloq=lloq_arr, typical_prediction=typical_prediction, covariates=cov,
        )  # fmt: skip

    @classmethod
    def from_observation_data(cls, model: Any, data: Any, **options: Any) -> LatentData:
        """From :class:`~twinsim.priors.ObservationData` (e.g. ``scenarios.fit_data``)."""
        mask = np.asarray(data.mask)
        t, v, o = (np.asarray(a) for a in (data.times, data.observed, data.output))
        observations = [list(zip(t[i][mask[i]], v[i][mask[i]], strict=True)) for i in range(len(t))]
        outputs = [o[i][mask[i]] for i in range(len(t))]
        lloq = np.asarray(data.lloq)
        limits = lloq[np.isfinite(lloq)]
        if limits.size and "lloq" not in options:
            options["lloq"] = float(limits.min())
        return cls.build(model, dict(data.covariates), data.events, observations, outputs=outputs,
                         ids=data.ids, **options)  # fmt: skip

    def batch(self, index: np.ndarray) -> dict[str, Any]:
        """The arrays of subjects ``index`` (device arrays, as the compiled step takes them)."""
        out = {k: jnp.asarray(getattr(self, k)[index]) for k in _ARRAYS}
        out["events"] = DosingEvents(
            **{
                f: jnp.asarray(getattr(self.events, f))[index]
                for f in self.events.__dataclass_fields__
            }
        )
        return out

    def subset(self, index: np.ndarray) -> LatentData:
        index = np.asarray(index)
        events = DosingEvents(
            **{
                f: np.asarray(getattr(self.events, f))[index]
                for f in self.events.__dataclass_fields__
            }
        )
        return LatentData(
            ids=tuple(self.ids[i] for i in index), events=events,
            **{k: getattr(self, k)[index] for k in _ARRAYS},
            covariates={k: v[index] for k, v in self.covariates.items()},
        )  # fmt: skip
