"""Cohorts of any size: per-subject randomness and chunked simulation with bounded memory.

Randomness is keyed by subject, not by batch: subject ``i`` always gets the key
``fold_in(key(seed), i)``, so its parameters, and therefore its trajectory, are the same
whatever the chunk size, the order the chunks run in, or which worker runs them.
:func:`simulate_cohort` walks the cohort in chunks of a fixed size; the last chunk is
padded to that size so that every chunk reuses one compilation, and the padding is
dropped before the chunk is handed on. A chunk that is already written can be skipped,
which is how an interrupted run resumes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._engine import SimulationError, Solution, map_in_blocks, padded_size, simulate
from ._events import DosingEvents
from ._model import ODEModel

__all__ = [
    "CohortReport",
    "lognormal_parameters",
    "omega_from_cv",
    "simulate_cohort",
    "subject_keys",
]

_MAX_SUBJECT_ID = 2**32 - 1  # fold_in takes the subject id as a uint32


def _subject_ids(
    subject_ids: Sequence[int] | np.ndarray | Array, field: str = "subject_ids"
) -> np.ndarray:
    ids = np.asarray(subject_ids)
    if ids.ndim != 1:
        raise SimulationError(
            f"`{field}` must be a 1-d sequence of subject numbers, got shape {ids.shape}"
        )
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        if not np.all(np.equal(np.mod(ids, 1), 0)):
            raise SimulationError(
                f"`{field}` must hold whole numbers, got {ids[:5].tolist()}…; give integer ids"
            )
    ids = ids.astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() > _MAX_SUBJECT_ID):
        bad = int(ids.min() if ids.min() < 0 else ids.max())
        raise SimulationError(
            f"`{field}` must lie in 0..{_MAX_SUBJECT_ID} (a uint32 folded into the seed), got {bad}; "
            "number subjects from 0"
        )
    return ids


def subject_keys(seed: int, subject_ids: Sequence[int] | np.ndarray | Array) -> Array:
    """One PRNG key per subject, ``fold_in(key(seed), id)``.

    Subject ``i``'s key depends only on ``seed`` and ``i``, never on which other subjects
    are drawn with it, so draws are identical for any chunking or order of execution.

    Parameters
    ----------
    seed
        The run's root seed.
    subject_ids
        Subject numbers (whole numbers 0 … 2³² − 1), shape ``[n]``.

    Returns
    -------
    Array
        Typed PRNG keys, shape ``[n]``.

    Raises
    ------
    SimulationError
        If the ids are not a 1-d sequence of whole numbers in range.

    Examples
    --------
    >>> import jax
    >>> keys = subject_keys(7, [0, 1, 2])
    >>> later = subject_keys(7, [2])
    >>> bool((jax.random.key_data(keys[2]) == jax.random.key_data(later[0])).all())
    True
    """
    ids = _subject_ids(subject_ids)
    root = jax.random.key(int(seed))
    return jax.vmap(lambda i: jax.random.fold_in(root, i))(jnp.asarray(ids, dtype=jnp.uint32))


def omega_from_cv(cv: float | Sequence[float] | np.ndarray) -> np.ndarray:
    """Log-scale variance ω² giving a log-normal parameter the coefficient of variation ``cv``.

    For ``θ = θ_typ · exp(η)``, ``η ~ N(0, ω²)``, the CV of θ is ``sqrt(exp(ω²) − 1)``, so
    ``ω² = log(1 + CV²)``; a CV of 30 % (``cv=0.3``) is ``ω² = 0.0862`` (ω = 0.294). The
    common shortcut ``ω ≈ CV`` is close only for small CVs.

    Parameters
    ----------
    cv
        Coefficient(s) of variation as fractions (0.3 for 30 %), ≥ 0.

    Returns
    -------
    numpy.ndarray
        ω², the variance(s) on the log scale, same shape as ``cv``.

    Raises
    ------
    SimulationError
        If a CV is negative or not finite.

    Examples
    --------
    >>> round(float(omega_from_cv(0.3)), 5)
    0.08618
    """
    cv = np.asarray(cv, dtype=np.float64)
    if not np.all(np.isfinite(cv)) or np.any(cv < 0):
        raise SimulationError(
            f"`cv` must be finite fractions ≥ 0 (0.3 for 30 %), got {cv.tolist()}; give the CV as a fraction"
        )
    return np.log1p(cv**2)


def _cholesky_factor(omega: np.ndarray, n_parameters: int) -> np.ndarray:
    """Lower factor ``L`` with ``L Lᵀ = Ω``; zero-variance parameters get zero rows."""
    omega = np.asarray(omega, dtype=np.float64)
    if omega.shape == (n_parameters,):
        if not np.all(np.isfinite(omega)) or np.any(omega < 0):
            raise SimulationError(
                f"`omega` (log-scale variances ω²) must be finite and ≥ 0, got {omega.tolist()}; "
                "use omega_from_cv(cv) for a CV"
            )
        return np.diag(np.sqrt(omega))
    if omega.shape != (n_parameters, n_parameters):
        raise SimulationError(
            f"`omega` must have shape ({n_parameters},) (variances) or ({n_parameters}, {n_parameters}) "
            f"(covariance), matching `typical`, got {omega.shape}"
        )
    if not np.all(np.isfinite(omega)) or not np.allclose(omega, omega.T, rtol=1e-12, atol=1e-15):
        raise SimulationError(
            "`omega` (log-scale covariance Ω) must be finite and symmetric; give Ω = Ωᵀ"
        )
    variances = np.diag(omega)
    scale = max(float(variances.max(initial=0.0)), 1e-300)
    if np.any(variances < 0) or np.linalg.eigvalsh(omega).min() < -1e-12 * scale:
        raise SimulationError(
            f"`omega` (log-scale covariance Ω) must be positive semi-definite, got eigenvalues "
            f"{np.round(np.linalg.eigvalsh(omega), 6).tolist()}; check the correlations (|ρ| ≤ 1)"
        )
    free = variances > 0
    factor = np.zeros_like(omega)
    if free.any():
        block = omega[np.ix_(free, free)]
        try:
            factor[np.ix_(free, free)] = np.linalg.cholesky(block)
        except np.linalg.LinAlgError:
            # singular but PSD (a correlation of exactly ±1): factor through the eigenbasis
            w, v = np.linalg.eigh(block)
            factor[np.ix_(free, free)] = v * np.sqrt(np.clip(w, 0.0, None))
    return factor


def lognormal_parameters(
    seed: int,
    subject_ids: Sequence[int] | np.ndarray | Array,
    typical: Float[Array, " param"] | Sequence[float],
    omega: Float[Array, " param"] | Float[Array, "param param"] | Sequence[float],
) -> Float[Array, "subject param"]:
    """Individual parameters ``θ_i = θ_typ · exp(η_i)``, ``η_i ~ N(0, Ω)``, per subject key.

    Subject ``i``'s draw uses :func:`subject_keys` ``(seed, [i])`` alone, so the same
    ``(seed, i)`` gives the same parameters in any chunk.

    Parameters
    ----------
    seed
        The run's root seed.
    subject_ids
        Subject numbers, shape ``[n]``.
    typical
        Typical values θ_typ, shape ``[P]``, in the model's parameter order and units.
    omega
        Between-subject variability on the log scale, NONMEM ``$OMEGA`` style: either the
        variances ω² ``[P]`` (independent η) or the covariance Ω ``[P, P]``. A variance of 0
        fixes the parameter at its typical value. For a coefficient of variation use
        :func:`omega_from_cv`: CV 30 % is ω² = log(1 + 0.3²) = 0.0862.

    Returns
    -------
    Array
        ``[n, P]`` individual parameters (float64).

    Raises
    ------
    SimulationError
        If the shapes disagree, a variance is negative or Ω is not symmetric positive
        semi-definite, or the ids are invalid.

    Examples
    --------
    >>> theta = lognormal_parameters(1, range(4), [5.0, 50.0], omega_from_cv([0.3, 0.0]))
    >>> theta.shape, bool((theta[:, 1] == 50.0).all())
    ((4, 2), True)
    """
    ids = _subject_ids(subject_ids)
    typical = np.asarray(typical, dtype=np.float64)
    if typical.ndim != 1:
        raise SimulationError(f"`typical` must be a 1-d vector [P], got shape {typical.shape}")
    factor = _cholesky_factor(omega, typical.shape[0])
    n_parameters = typical.shape[0]
    if ids.size == 0:
        return jnp.zeros((0, n_parameters), jnp.float64)
    n = ids.size
    padded = np.concatenate([ids, np.full(padded_size(n) - n, ids[-1])]).astype(np.uint32)
    return _lognormal_draws(int(seed), padded, typical, factor)[:n]


@jax.jit
def _lognormal_draws(seed, ids, typical, factor):
    """θ_typ · exp(L z) per subject key (:func:`subject_keys`), compiled; computed in blocks
    of one shape (as the engine's subjects), so a subject's draw is bitwise the same in any
    batch."""
    root = jax.random.key(seed)
    keys = jax.vmap(lambda i: jax.random.fold_in(root, i))(ids)

    def one(key):
        z = jax.random.normal(key, typical.shape, dtype=jnp.float64)
        # η = L z as an explicit sum in a fixed order: a matmul's blocking may depend on
        # the batch size, and chunk-size invariance must hold bit for bit
        eta = factor[:, 0] * z[0]
        for j in range(1, typical.shape[0]):
            eta = eta + factor[:, j] * z[j]
        return typical * jnp.exp(eta)

    return map_in_blocks(jax.vmap(one), keys)


class CohortReport(NamedTuple):
    """What :func:`simulate_cohort` did."""

    n_subjects: int  #: subjects in the cohort
    chunk_size: int  #: subjects per chunk (the compiled batch size)
    chunks_run: int  #: chunks simulated in this call
    chunks_skipped: int  #: chunks ``skip_chunk`` said were already done
    n_failed: int  #: simulated subjects with ``status != 0`` (see ``Solution.failures``)


def _host_rows(a: Array, n_real: int) -> Array:
    """The first ``n_real`` rows, cut on the host: an eager slice (or ``jnp.asarray``, which
    stages the value) would compile for the last chunk's shape; ``device_put`` does not."""
    return jax.device_put(np.asarray(a)[:n_real])


def _chunk_events(events: DosingEvents, chunk_size: int, where: str) -> DosingEvents:
    if not isinstance(events, DosingEvents):
        raise SimulationError(
            f"`events_fn` must return a DosingEvents table, got {type(events).__name__} {where}"
        )
    if events.n_subjects == 1:  # shared by the chunk: the engine broadcasts it when compiled
        return events
    if events.n_subjects != chunk_size:
        raise SimulationError(
            f"`events_fn` returned {events.n_subjects} subjects {where}, expected {chunk_size} "
            "(one row per subject id) or 1 (shared)"
        )
    return events


def simulate_cohort(
    model: ODEModel,
    n_subjects: int,
    params_fn: Callable[[np.ndarray], Float[Array, "subject param"]],
    events_fn: Callable[[np.ndarray], DosingEvents],
    times: Float[Array, " time"] | Float[Array, "subject time"],
    *,
    chunk_size: int,
    on_chunk: Callable[[int, int, Solution], None],
    skip_chunk: Callable[[int, int], bool] | None = None,
    method: Literal["auto", "linear", "ode"] = "auto",
    progress: Callable[[int], None] | None = None,
    **simulate_options,
) -> CohortReport:
    """Simulate subjects ``0 … n_subjects − 1`` in chunks, handing each chunk to ``on_chunk``.

    Every chunk is simulated at exactly ``chunk_size`` subjects (the last one is padded by
    repeating its last subject, and the padding is dropped on the host), so one
    compilation serves the whole cohort and nothing compiles after the first chunk. Only one chunk is alive at a time: memory is bounded by ``chunk_size``,
    not by ``n_subjects``. With per-subject randomness (:func:`lognormal_parameters`,
    :func:`subject_keys`) the results do not depend on ``chunk_size``: bit for bit with the
    linear engine and with the ODE engine's per-subject strategies — the default
    (``"lockstep"`` for these concrete inputs) and ``"vmap"`` — each subject its own steps,
    as in :func:`simulate`. ``ode_strategy="batch"`` (opt-in) integrates a
    chunk whose subjects share their dose and output times as one system with one step
    size, so a subject's result then depends on its chunk-mates at the level of
    ``rtol``/``atol``; keep the default when bitwise reproducibility across chunkings
    matters.

    Parameters
    ----------
    model
        The model to simulate.
    n_subjects
        Cohort size; subjects are numbered ``0 … n_subjects − 1``.
    params_fn
        ``params_fn(subject_ids) -> [len(subject_ids), P]`` (in ``model.parameters``
        order, or by name: a mapping of one array per parameter): the parameters of those
        subjects (ids as a numpy int64 array of length ``chunk_size``; in the last chunk
        the last id is repeated to fill it, and those rows are dropped). It must depend
        only on the ids, e.g. ``lambda ids: lognormal_parameters(seed, ids, typical, omega)``.
    events_fn
        ``events_fn(subject_ids) -> DosingEvents`` with one row per id (the same ids as
        ``params_fn``) or one shared row.
        Return the same event width (``pad_to``) for every chunk, or a chunk whose width
        differs compiles again.
    times
        Output times in h, shared ``[time]`` or per subject ``[n_subjects, time]``.
    chunk_size
        Subjects per chunk (≥ 1). Larger chunks amortise dispatch; memory grows with it.
    on_chunk
        ``on_chunk(start, stop, solution)`` receives subjects ``start … stop − 1``
        (``solution`` has ``stop − start`` rows); write them out here.
    skip_chunk
        ``skip_chunk(start, stop) -> bool``: ``True`` skips a chunk already written (resume).
    method
        Engine, as in :func:`~twinsim.simulators.simulate`.
    progress
        ``progress(n)`` is called after each chunk, run or skipped, with its number of
        subjects (e.g. ``lambda n: bar.update(task, advance=n)``).
    **simulate_options
        Passed to :func:`~twinsim.simulators.simulate` (``rtol``, ``atol``, ``max_steps``,
        ``solver``, ``at_dose``, ``ode_strategy``).

    Returns
    -------
    CohortReport
        Chunks run and skipped, and the number of failed subjects among those run.

    Raises
    ------
    SimulationError
        If ``n_subjects`` or ``chunk_size`` is not a positive whole number, ``times`` has the
        wrong shape, or ``params_fn``/``events_fn`` return the wrong number of rows.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from twinsim.priors import one_compartment
    >>> model = one_compartment()
    >>> peaks = {}
    >>> report = simulate_cohort(
    ...     model, 5,
    ...     lambda ids: lognormal_parameters(0, ids, [5.0, 50.0], omega_from_cv([0.3, 0.3])),
    ...     lambda ids: DosingEvents.repeated(100.0, 12.0, 2, compartment=0),
    ...     jnp.array([0.5, 12.0, 24.0]), chunk_size=2,
    ...     on_chunk=lambda start, stop, sol: peaks.update({start: sol.outputs.shape}),
    ... )
    >>> report.chunks_run, peaks[4]
    (3, (1, 3, 1))
    """
    if int(n_subjects) != n_subjects or n_subjects < 1:
        raise SimulationError(f"`n_subjects` must be a whole number ≥ 1, got {n_subjects!r}")
    if int(chunk_size) != chunk_size or chunk_size < 1:
        raise SimulationError(
            f"`chunk_size` must be a whole number ≥ 1, got {chunk_size!r}; e.g. 10_000 for large cohorts"
        )
    n_subjects, chunk_size = int(n_subjects), int(min(chunk_size, n_subjects))
    times = jnp.asarray(times, dtype=jnp.float64)
    if times.ndim == 2 and times.shape[0] != n_subjects:
        raise SimulationError(
            f"`times` must have shape (time,) or ({n_subjects}, time) for {n_subjects} subjects, "
            f"got {tuple(times.shape)}"
        )
    if times.ndim not in (1, 2):
        raise SimulationError(
            f"`times` must have shape (time,) or (subject, time), got {tuple(times.shape)}"
        )

    host_times = np.asarray(times)
    chunks_run = chunks_skipped = n_failed = 0
    for start in range(0, n_subjects, chunk_size):
        stop = min(start + chunk_size, n_subjects)
        n_real = stop - start
        where = f"for subjects {start}..{stop - 1}"
        if skip_chunk is not None and skip_chunk(start, stop):
            chunks_skipped += 1
            if progress is not None:
                progress(n_real)
            continue
        # the last chunk repeats its last subject: every chunk, and every call of
        # params_fn/events_fn, has one shape, so nothing compiles again
        ids = np.minimum(np.arange(start, start + chunk_size, dtype=np.int64), stop - 1)
        params = model.parameter_array(params_fn(ids), where="params_fn(ids)")
        if params.ndim != 2 or params.shape[0] != chunk_size:
            raise SimulationError(
                f"`params_fn` returned shape {tuple(params.shape)} {where}, expected ({chunk_size}, "
                f"{model.n_parameters}): one row per subject id"
            )
        events = _chunk_events(events_fn(ids), chunk_size, where)
        chunk_times = jax.device_put(host_times[ids]) if host_times.ndim == 2 else times
        solution = simulate(model, params, events, chunk_times, method=method, **simulate_options)
        if n_real < chunk_size:
            solution = jax.tree_util.tree_map(lambda a, k=n_real: _host_rows(a, k), solution)
        # counted on the host: an eager reduction would compile for the last chunk's shape
        n_failed += int(np.count_nonzero(np.asarray(solution.status)))
        on_chunk(start, stop, solution)
        chunks_run += 1
        if progress is not None:
            progress(n_real)
    return CohortReport(
        n_subjects=n_subjects,
        chunk_size=chunk_size,
        chunks_run=chunks_run,
        chunks_skipped=chunks_skipped,
        n_failed=n_failed,
    )
