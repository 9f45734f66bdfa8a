"""The posterior of a twin's random effects (:class:`TwinPosterior`): summaries,
draws, :meth:`~TwinPosterior.predict` and :meth:`~TwinPosterior.recommend`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from ..simulators import DosingEvents
from ..simulators._events import as_dose
from ._clinical import _PRACTICAL, PatientTwinError, Regimen, default_safety, label_limits
from ._intervals import draw_quantiles
from ._prediction import _predict
from ._recommend import Recommendation, _named_regimens, _nearest, _positive_grid, _shortlist, _why

if TYPE_CHECKING:
    from ._clinical import Safety, Target
    from ._genotype import GenotypeMixture
    from ._patient import PatientTwin
    from ._prediction import Prediction

__all__ = ["TwinPosterior"]


@dataclass(frozen=True, eq=False)
class TwinPosterior:
    """The posterior of a twin's random effects η (see :meth:`PatientTwin.fit`).

    Attributes
    ----------
    twin
        The twin that was fitted.
    method
        ``"map"``, ``"laplace"``, ``"importance"``, ``"nuts"`` or ``"prior"``.
    prior_weight
        Weight of the population prior.
    eta_mode
        Posterior mode of η ``[R]`` (0 for ``"prior"``).
    covariance
        Laplace covariance of η ``[R, R]`` (Ω / w for ``"prior"``).
    samples
        NUTS draws of η ``[draw, R]`` (chains concatenated) or the importance-resampled
        draws, ``None`` otherwise.
    diagnostics
        Optimiser convergence, NUTS divergences, R-hat and ESS, the importance weights'
        Pareto k and ESS, timings.
    mixture
        For a twin with untested genes (:attr:`PatientTwin.untested_genes`): the posterior
        over their genotypes (:class:`~twinsim.twin._genotype.GenotypeMixture`, weights
        and one posterior per genotype group). ``eta_mode``, ``covariance`` and
        :meth:`individual_parameters` are then those of the most probable genotype;
        draws, predictions and recommendations are of the mixture.
    """

    twin: PatientTwin
    method: str
    prior_weight: float
    eta_mode: np.ndarray
    covariance: np.ndarray
    samples: np.ndarray | None
    diagnostics: dict[str, Any] = field(default_factory=dict)
    mixture: GenotypeMixture | None = None

    @property
    def random_effects(self) -> tuple[str, ...]:
        return self.twin.model.random_effects

    def eta_draws(self, n: int | None = None, seed: int = 0) -> np.ndarray:
        """``n`` draws of η ``[n, R]``: NUTS samples (thinned evenly) or Gaussian draws;
        with untested genes, the mixture's (each genotype's draws in turn, see
        :meth:`~twinsim.twin._genotype.GenotypeMixture.draws`)."""
        if self.mixture is not None:
            return self._draws(1000 if n is None else int(n), seed)[0]
        if self.samples is not None:
            if n is None or n >= self.samples.shape[0]:
                return self.samples
            index = np.linspace(0, self.samples.shape[0] - 1, n).round().astype(int)
            return self.samples[index]
        n = 1000 if n is None else int(n)
        z = np.asarray(jax.random.normal(jax.random.PRNGKey(seed), (n, self.eta_mode.size)))
        chol = np.linalg.cholesky(self.covariance + 1e-300 * np.eye(self.eta_mode.size))
        return self.eta_mode[None] + z @ chol.T

    def _draws(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """η draws ``[n, R]`` and the typical parameters each draw belongs to ``[n, P]``."""
        model = self.twin.model
        if self.mixture is None:
            eta = self.eta_draws(n, seed)
            typical = np.asarray(model.typical_parameters(self.twin.covariates), np.float64)
            return eta, np.broadcast_to(typical, (eta.shape[0], typical.shape[-1]))
        etas, typicals = [], []
        for k, eta in self.mixture.draws(n, seed):
            twin = self.mixture.components[k].twin
            typical = np.asarray(model.typical_parameters(twin.covariates), np.float64)
            etas.append(eta)
            typicals.append(np.broadcast_to(typical, (eta.shape[0], typical.shape[-1])))
        return np.concatenate(etas), np.concatenate(typicals)

    def _modes(self, n: int = 40) -> tuple[np.ndarray, np.ndarray]:
        """The posterior mode as draws ``(η [m, R], typical [m, P])``: one row, or with
        untested genes each genotype's mode repeated in proportion to its weight over
        ``n`` rows (a weighted set whose median is the weighted median)."""
        model = self.twin.model
        if self.mixture is None:
            typical = np.asarray(model.typical_parameters(self.twin.covariates), np.float64)
            return self.eta_mode[None], typical
        etas, typicals = [], []
        for k, count in enumerate(self.mixture.allocate(n)):
            if count:
                post = self.mixture.components[k]
                typical = np.asarray(model.typical_parameters(post.twin.covariates), np.float64)
                etas.append(np.repeat(post.eta_mode[None], count, axis=0))
                typicals.append(np.repeat(typical, count, axis=0))
        return np.concatenate(etas), np.concatenate(typicals)

    def eta_summary(self) -> dict[str, dict[str, float]]:
        """Per random effect: mode (or median), SD, 5 % and 95 % quantiles of η."""
        draws = self.eta_draws(4000)
        out = {}
        for j, name in enumerate(self.random_effects):
            q05, q50, q95 = draw_quantiles(draws[:, j], [0.05, 0.5, 0.95])
            centre = float(q50) if self.samples is not None else float(self.eta_mode[j])
            out[name] = {
                "estimate": centre,
                "sd": float(draws[:, j].std()),
                "q05": float(q05),
                "q95": float(q95),
            }
        return out

    def individual_parameters(self) -> dict[str, float]:
        """The structural parameters at the posterior mode (NUTS: posterior median of η;
        untested genes: the most probable genotype's)."""
        if self.mixture is not None:
            return self.mixture.components[self.mixture.most_probable].individual_parameters()
        eta = np.median(self.samples, axis=0) if self.samples is not None else self.eta_mode
        params = np.asarray(self.twin.model.individual_parameters(self.twin.covariates, eta[None]))[
            0
        ]
        return dict(zip(self.twin.model.structural.parameters, params.tolist(), strict=True))

    # ---- prediction
    def predict(
        self,
        regimens: Mapping[str, Any] | Sequence[Any] | Regimen,
        *,
        horizon_h: float | None = None,
        times: Sequence[float] | None = None,
        n_draws: int = 500,
        seed: int = 0,
        target: Target | None = None,
        resolution_h: float = 0.5,
        eta: np.ndarray | None = None,
        safety: Safety | None = None,
    ) -> Prediction:
        """Predict candidate regimens after the doses already given.

        Parameters
        ----------
        regimens
            ``{name: Regimen | list[Dose] | DosingEvents}`` or a list (named by their
            description) or one :class:`Regimen`. Dose lists are absolute times (h) and
            are added to the doses given.
        horizon_h
            Hours predicted after the regimen's start (default: the drug's practical
            horizon, 72 h; warfarin 168 h).
        times
            Output times (h, absolute) instead of the regular grid.
        n_draws
            Posterior draws (NUTS draws are thinned to this number).
        seed
            Seed of the Gaussian draws.
        target
            Target for the metrics and PTA (default: the twin's).
        resolution_h
            Spacing of the time grid.
        eta
            Predict for these random effects ``[draw, R]`` instead of posterior draws
            (e.g. ``post.eta_mode``: the MAP prediction, without its uncertainty). With
            untested genes, ``eta`` belongs to the most probable genotype.
        safety
            Safety threshold for :attr:`Prediction.p_unsafe` (default: the drug's,
            :func:`~twinsim.twin.default_safety`).

        Returns
        -------
        Prediction

        Examples
        --------
        >>> from twinsim.twin import Observation, PatientTwin, Regimen
        >>> twin = PatientTwin.create("vancomycin", {"weight": 80.0, "crcl": 60.0, "dialysis": 0})
        >>> twin = twin.with_doses(twin.dose(0.0, 1000.0)).with_observations(Observation(11.5, 9.0))
        >>> pred = twin.fit().predict({"q12h": Regimen(1000.0, 12.0)}, n_draws=100)
        >>> bool(0.0 <= pred.pta[0] <= 1.0)
        True
        """
        if eta is None:
            eta, typical = self._draws(int(n_draws), seed)
        else:
            eta = np.atleast_2d(eta)
            best = (
                self
                if self.mixture is None
                else self.mixture.components[self.mixture.most_probable]
            )
            typical = np.asarray(
                best.twin.model.typical_parameters(best.twin.covariates), np.float64
            )
            typical = np.broadcast_to(typical, (eta.shape[0], typical.shape[-1]))
        return self._forecast(
            regimens, horizon_h=horizon_h, times=times, eta=eta, typical=typical,
            target=target, resolution_h=resolution_h, safety=safety,
        )  # fmt: skip

    def _forecast(
        self, regimens, *, horizon_h, times, eta, typical, target, resolution_h, safety
    ) -> Prediction:
        """:meth:`predict` for given draws of η and their typical parameters."""
        twin = self.twin
        target = target or twin.target
        named = _named_regimens(regimens)
        horizon = self._horizon(horizon_h)
        start = twin.next_dose_time
        dose_lists, starts = [], []
        for name, reg in named.items():
            if isinstance(reg, Regimen):
                reg_start = start if reg.start_h is None else float(reg.start_h)
                dose_lists.append(reg.doses(twin, horizon_h=horizon))
            elif isinstance(reg, DosingEvents):
                dose_lists.append(reg.to_doses()[0])
                reg_start = min((d.time for d in dose_lists[-1]), default=start)
            else:
                dose_lists.append([as_dose(d, "regimen[]") for d in reg])
                reg_start = min((d.time for d in dose_lists[-1]), default=start)
            if not dose_lists[-1] and not twin.doses:
                raise PatientTwinError(f"regimen {name!r} has no doses and none were given")
            starts.append(reg_start)
        window = target.window_h if target is not None else 24.0
        descriptions = [r.describe() if isinstance(r, Regimen) else n for n, r in named.items()]
        safety = safety if safety is not None else default_safety(twin.drug or "")
        daily = [
            r.amount_mg * 24.0 / r.interval_h if isinstance(r, Regimen) else None
            for r in named.values()
        ]
        return _predict(
            self,
            list(named),
            descriptions,
            dose_lists,
            starts,
            horizon,
            times,
            eta,
            target,
            window,
            resolution_h,
            safety=safety,
            daily_doses=daily,
            typical=typical,
            notes=(self.mixture.describe(),) if self.mixture is not None else (),
        )

    def _horizon(self, horizon_h: float | None) -> float:
        if horizon_h is None:
            practical = _PRACTICAL.get(self.twin.drug or "")
            return practical.horizon_h if practical else 72.0
        if not (np.isfinite(horizon_h) and horizon_h > 0):
            raise PatientTwinError(f"`horizon_h` must be > 0 h, got {horizon_h!r}")
        return float(horizon_h)

    def recommend(
        self,
        *,
        target: Target | None = None,
        strengths_mg: Sequence[float] | None = None,
        intervals_h: Sequence[float] | None = None,
        loading: bool = True,
        horizon_h: float | None = None,
        top: int = 3,
        n_draws: int = 200,
        seed: int = 0,
        start_h: float | None = None,
        shortlist: int | None = 16,
    ) -> list[Recommendation]:
        """Search practical regimens and return the ``top`` ones by PTA.

        Every candidate is first predicted at the posterior mode; the ``shortlist`` whose
        key metric (the window's average for a time-in-range target) lies nearest the
        middle of the target range — at least the nearest two of each interval, with and
        without a loading dose — are then scored on ``n_draws`` posterior draws. A PTA
        peaks where the predicted metric sits mid-range, so the best regimens are among
        them (the tests check the choice against scoring every candidate,
        ``shortlist=None``), at a fraction of the cost.

        Parameters
        ----------
        target
            Target (default: the twin's; required for a model outside the library).
        strengths_mg
            The doses that can be given (vials, tablets and their sums), mg; default per
            drug (vancomycin 500–3000 mg in 250 mg steps, warfarin tablet strengths,
            theophylline 100–800 mg in 50 mg steps).
        intervals_h
            Dosing intervals to try (default per drug: 8, 12, 24 h; warfarin 24 h).
        loading
            Also try a loading dose (1.5× and 2× the maintenance dose, on the grid).
        horizon_h
            Prediction horizon after the first new dose.
        top
            How many recommendations.
        n_draws
            Posterior draws per candidate.
        seed
            Seed of the draws (the same draws for every candidate).
        start_h
            First new dose (default: :attr:`PatientTwin.next_dose_time`).
        shortlist
            How many candidates are scored on the posterior draws (``None``: all).

        Returns
        -------
        list[Recommendation]
            Best first: highest PTA; ties broken by the median metric closest to the middle
            of the target range, then the smaller daily dose, then the longer interval.

        Raises
        ------
        PatientTwinError
            Without a target, or with empty or non-positive strengths or intervals.

        Examples
        --------
        >>> from twinsim.twin import Observation, PatientTwin, Regimen
        >>> twin = PatientTwin.create("vancomycin", {"weight": 80.0, "crcl": 60.0, "dialysis": 0})
        >>> twin = twin.with_doses(twin.dose(0.0, 1000.0)).with_observations(Observation(11.5, 9.0))
        >>> best = twin.fit().recommend(top=1, n_draws=50)[0]
        >>> best.regimen.amount_mg % 250 == 0
        True
        """
        twin = self.twin
        target = target or twin.target
        if target is None:
            raise PatientTwinError(
                "`target` is needed to recommend a regimen for a model outside the library; "
                "give Target(output, low, high, metric=...)"
            )
        practical = _PRACTICAL.get(twin.drug or "")
        strengths = _positive_grid(
            strengths_mg
            if strengths_mg is not None
            else (practical.strengths_mg if practical else None),
            "strengths_mg",
        )
        intervals = _positive_grid(
            intervals_h
            if intervals_h is not None
            else (practical.intervals_h if practical else (8.0, 12.0, 24.0)),
            "intervals_h",
        )
        limits = label_limits(twin.drug)
        safety = default_safety(twin.drug or "")
        candidates: list[Regimen] = []
        excluded: list[tuple[str, str]] = []
        for tau in intervals:
            for amount in strengths:
                options = [Regimen(amount, tau, start_h=start_h)]
                if loading:
                    loads = {_nearest(strengths, f * amount) for f in (1.5, 2.0)} - {amount}
                    options += [
                        Regimen(amount, tau, start_h=start_h, loading_mg=load)
                        for load in sorted(loads)
                        if load > amount
                    ]
                for option in options:
                    reason = limits.violation(option)
                    if reason is None:
                        candidates.append(option)
                    else:
                        excluded.append((option.describe(), f"excluded by the label: {reason}"))
        if not candidates:
            raise PatientTwinError(
                "every candidate regimen breaks the drug's label limits "
                f"({excluded[0][1]}); give smaller `strengths_mg`"
            )
        # the evaluation window finely, the rest of the horizon coarsely (for the peak)
        first = twin.next_dose_time if start_h is None else float(start_h)
        end = first + self._horizon(horizon_h)
        window = min(max(target.window_h, 24.0), end - first)
        fine = np.linspace(end - window, end, round(window / 0.5) + 1)
        coarse = np.linspace(first, end, max(2, round((end - first) / 2.0)) + 1)
        settings = dict(
            horizon_h=horizon_h,
            times=np.union1d(coarse[coarse < end - window], fine),
            target=target,
            safety=safety,
        )
        searched = len(candidates) + len(excluded)
        if shortlist is not None and len(candidates) > max(int(shortlist), 1):
            eta_mode, typical_mode = self._modes()
            at_mode = self._forecast(
                {c.describe(): c for c in candidates}, eta=eta_mode, typical=typical_mode,
                resolution_h=0.5, **settings,
            )  # fmt: skip
            candidates = _shortlist(candidates, at_mode, target, max(int(shortlist), 1))
        prediction = self.predict(
            {c.describe(): c for c in candidates}, n_draws=n_draws, seed=seed, **settings
        )
        key = target.key_metric
        middle = 1.0 if target.uses_time_in_range else 0.5 * (target.low + target.high)
        scale = 1.0 if target.uses_time_in_range else target.high - target.low
        objective = prediction.objective if prediction.objective is not None else prediction.pta
        safe = [
            safety is None or prediction.p_unsafe[i] <= safety.limit for i in range(len(candidates))
        ]
        for i, ok in enumerate(safe):
            if not ok:
                excluded.append(
                    (
                        candidates[i].describe(),
                        f"excluded for safety: probability {100 * prediction.p_unsafe[i]:.0f} % "
                        f"of {safety.describe()}",
                    )
                )

        def rank(i: int):
            c = candidates[i]
            daily = c.amount_mg * 24.0 / c.interval_h
            off = abs(prediction.metrics[i][key]["median"] - middle) / scale
            return (-round(objective[i], 3), round(off, 3), daily, -c.interval_h)

        order = sorted((i for i in range(len(candidates)) if safe[i]), key=rank)
        if not order:
            lowest = min(range(len(candidates)), key=lambda i: prediction.p_unsafe[i])
            raise PatientTwinError(
                f"no candidate regimen keeps the probability of {safety.describe()}: the "
                f"lowest is {100 * prediction.p_unsafe[lowest]:.0f} % "
                f"({candidates[lowest].describe()}); measure a level and refit, or give "
                "smaller `strengths_mg`"
            )
        chosen = order[: max(1, int(top))]
        return [
            Recommendation(
                regimen=candidates[i],
                description=candidates[i].describe(),
                doses=tuple(candidates[i].doses(twin, horizon_h=prediction.horizon_h)),
                pta=float(prediction.pta[i]),
                metrics=prediction.metrics[i],
                why=_why(self, prediction, i, order, candidates, target),
                searched=searched,
                scored=len(candidates),
                p_unsafe=float(prediction.p_unsafe[i]),
                objective=float(objective[i]),
                objective_text=prediction.objective_text,
                safety=safety.describe() if safety is not None else "",
                excluded=tuple(excluded),
                notes=prediction.notes,
            )
            for i in chosen
        ]
