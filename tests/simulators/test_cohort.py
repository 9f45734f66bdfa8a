"""Per-subject randomness and the chunked cohort driver (twinsim.simulators, _cohort.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from twinsim.priors import ODEModel, one_compartment, two_compartment
from twinsim.simulators import (
    CohortReport,
    Dose,
    DosingEvents,
    SimulationError,
    lognormal_parameters,
    omega_from_cv,
    simulate,
    simulate_cohort,
    subject_keys,
)
from twinsim.simulators._compilations import recorded_compilations

SEED = 20240601
TYPICAL = np.array([5.0, 50.0])  # one_compartment: cl (L/h), v (L)
OMEGA = omega_from_cv([0.3, 0.3])
TIMES = jnp.array([0.0, 0.5, 2.0, 12.0, 13.0, 24.0, 30.0])


def _params_fn(ids):
    return lognormal_parameters(SEED, ids, TYPICAL, OMEGA)


def _events_fn(ids):
    """Different regimens per subject, so padding and slicing of events is exercised."""
    return DosingEvents.from_doses(
        [
            [Dose(0.0, 100.0 + 10.0 * int(i), compartment=0, interval=12.0, additional=int(i) % 3)]
            for i in ids
        ],
        pad_to=4,
    )


def _collect(n_subjects, chunk_size, method="linear", events_fn=_events_fn, **kwargs):
    """Run the cohort and stitch the chunks back together on the host."""
    outputs, status, seen = {}, {}, []

    def on_chunk(start, stop, sol):
        assert sol.outputs.shape[0] == stop - start
        outputs[start] = np.asarray(sol.outputs)
        status[start] = np.asarray(sol.status)
        seen.append((start, stop))

    report = simulate_cohort(
        one_compartment(), n_subjects, _params_fn, events_fn, TIMES,
        chunk_size=chunk_size, on_chunk=on_chunk, method=method, **kwargs,
    )  # fmt: skip
    stitched = np.concatenate([outputs[k] for k in sorted(outputs)]) if outputs else None
    return stitched, report, seen


# --------------------------------------------------------------------------- randomness


def test_subject_keys_depend_only_on_seed_and_id():
    """Subject i's key is fold_in(key(seed), i): the same in any batch, different across ids/seeds."""
    data = lambda k: np.asarray(jax.random.key_data(k))  # noqa: E731
    all_keys = data(subject_keys(SEED, np.arange(10)))
    np.testing.assert_array_equal(all_keys[[7, 3]], data(subject_keys(SEED, [7, 3])))
    expected = data(jax.random.fold_in(jax.random.key(SEED), 5))
    np.testing.assert_array_equal(all_keys[5], expected)
    assert len({tuple(row) for row in all_keys}) == 10
    assert not np.array_equal(all_keys, data(subject_keys(SEED + 1, np.arange(10))))


@pytest.mark.parametrize(
    ("ids", "match"),
    [
        ([[0, 1]], r"`subject_ids` must be a 1-d sequence"),
        ([-1, 2], r"`subject_ids` must lie in 0\.\.4294967295 .*got -1"),
        ([0.5], r"`subject_ids` must hold whole numbers"),
    ],
)
def test_subject_keys_reject_bad_ids(ids, match):
    with pytest.raises(SimulationError, match=match):
        subject_keys(SEED, ids)


def test_omega_from_cv_matches_lognormal_cv():
    """ω² = log(1 + CV²) (log-normal moments); CV 30 % → 0.0861777 (exact to 1e-12)."""
    np.testing.assert_allclose(omega_from_cv(0.3), np.log(1.09), rtol=1e-12)
    # back to the CV: sqrt(exp(ω²) − 1)
    np.testing.assert_allclose(np.sqrt(np.expm1(omega_from_cv([0.1, 0.5]))), [0.1, 0.5], rtol=1e-12)
    with pytest.raises(SimulationError, match=r"`cv` must be finite fractions ≥ 0 .*-0\.2"):
        omega_from_cv(-0.2)


def test_lognormal_parameters_moments():
    """4,000 subjects, CV 30 % on cl and ρ = 0.6 between log cl and log v.

    Tolerances: the sample SD of η has standard error ω/sqrt(2N) ≈ 0.0033 and the sample
    correlation ≈ (1 − ρ²)/sqrt(N) ≈ 0.010; we allow 4 standard errors (a two-sided
    false-failure rate below 1e-4 per check). The median of θ is θ_typ (log-normal):
    SE of the log median ≈ 1.25 ω/sqrt(N) ≈ 0.0058, allowed 0.025. The CV back-computed
    as sqrt(exp(s²) − 1) moves by ≈ 1.05 × the SD error, so 0.02 covers the 4-SE band.
    """
    n = 4000
    variances = omega_from_cv([0.3, 0.2])
    rho = 0.6
    cov = np.array(
        [
            [variances[0], rho * np.sqrt(variances[0] * variances[1])],
            [rho * np.sqrt(variances[0] * variances[1]), variances[1]],
        ]
    )
    theta = np.asarray(lognormal_parameters(SEED, np.arange(n), TYPICAL, cov))
    eta = np.log(theta / TYPICAL)
    sd = eta.std(axis=0, ddof=1)
    assert np.all(np.abs(sd - np.sqrt(variances)) < 4 * np.sqrt(variances) / np.sqrt(2 * n)), sd
    assert abs(np.corrcoef(eta.T)[0, 1] - rho) < 4 * (1 - rho**2) / np.sqrt(n)
    np.testing.assert_allclose(np.log(np.median(theta, axis=0) / TYPICAL), 0.0, atol=0.025)
    cv = np.sqrt(np.expm1(eta.var(axis=0, ddof=1)))
    np.testing.assert_allclose(cv, [0.3, 0.2], atol=0.02)


def test_lognormal_parameters_zero_variance_is_fixed_and_chunk_invariant():
    """A zero variance fixes the parameter exactly; draws per subject are bitwise chunk-invariant."""
    omega = np.diag([omega_from_cv(0.3), 0.0])
    theta = np.asarray(lognormal_parameters(SEED, np.arange(10), TYPICAL, omega))
    assert np.all(theta[:, 1] == TYPICAL[1])
    assert theta[:, 0].std() > 0
    pieces = [
        lognormal_parameters(SEED, np.arange(a, min(a + 3, 10)), TYPICAL, omega)
        for a in (0, 3, 6, 9)
    ]
    np.testing.assert_array_equal(np.concatenate([np.asarray(p) for p in pieces]), theta)
    reversed_order = np.asarray(lognormal_parameters(SEED, np.arange(10)[::-1], TYPICAL, omega))
    np.testing.assert_array_equal(reversed_order[::-1], theta)


@pytest.mark.parametrize(
    ("typical", "omega", "match"),
    [
        ([5.0, 50.0], [0.1], r"`omega` must have shape \(2,\) \(variances\) or \(2, 2\)"),
        ([5.0, 50.0], [0.1, -0.1], r"`omega` \(log-scale variances ω²\) must be finite and ≥ 0"),
        ([5.0, 50.0], [[0.1, 0.2], [0.2, 0.1]], r"must be positive semi-definite, got eigenvalues"),
        ([5.0, 50.0], [[0.1, 0.0], [0.01, 0.1]], r"must be finite and symmetric"),
        ([[5.0, 50.0]], [0.1, 0.1], r"`typical` must be a 1-d vector"),
    ],
)
def test_lognormal_parameters_reject_bad_omega(typical, omega, match):
    with pytest.raises(SimulationError, match=match):
        lognormal_parameters(SEED, [0, 1], typical, omega)


# --------------------------------------------------------------------------- chunked driver


def test_chunk_size_invariance_linear_is_bitwise():
    """Chunk sizes 3, 4 and 10 on 10 subjects give bit-identical outputs (tolerance 0).

    Each subject's parameters come from its own key and the engine is per-subject, so the
    padding of ragged chunks and the batch size must not change a single bit. Chunk 10 is
    also the plain one-call ``simulate`` of the whole cohort.
    """
    ids = np.arange(10)
    direct = np.asarray(
        simulate(
            one_compartment(), _params_fn(ids), _events_fn(ids), TIMES, method="linear"
        ).outputs
    )
    assert np.all(np.isfinite(direct)) and direct.max() > 0
    for chunk in (3, 4, 10):
        stitched, report, seen = _collect(10, chunk)
        np.testing.assert_array_equal(stitched, direct, err_msg=f"chunk_size={chunk}")
        assert report == CohortReport(10, chunk, -(-10 // chunk), 0, 0)
        assert seen == [(a, min(a + chunk, 10)) for a in range(0, 10, chunk)]


def test_chunk_size_invariance_linear_large_chunk_multistate_is_bitwise():
    """A 3-state model, one chunk of 1,030 subjects vs chunks of 16 (tolerance 0).

    Large batches are where XLA changes how it vectorises reductions over the state axis;
    the per-subject result must not change with them.
    """
    model = two_compartment(absorption="first_order")
    omega = omega_from_cv([0.3, 0.3, 0.0, 0.0, 0.3, 0.0])
    typical = [5.0, 50.0, 10.0, 100.0, 1.0, 1.0]  # cl, v1, q, v2, ka, f_oral

    def run(chunk):
        parts = {}
        simulate_cohort(
            model, 1030, lambda ids: lognormal_parameters(SEED, ids, typical, omega),
            lambda ids: DosingEvents.repeated(100.0, 12.0, 4, compartment=0), TIMES, chunk_size=chunk,
            on_chunk=lambda start, stop, sol: parts.update({start: np.asarray(sol.outputs)}),
        )  # fmt: skip
        return np.concatenate([parts[k] for k in sorted(parts)])

    np.testing.assert_array_equal(run(1030), run(16))


def test_chunk_size_invariance_ode_vmap_is_bitwise():
    """The diffrax engine with ``ode_strategy="vmap"``: each subject has its own adaptive steps,
    so chunk 4 (padded last chunk of 2) and chunk 10 agree bit for bit (tolerance 0), for
    per-subject regimens and for a regimen shared by the cohort."""
    for events_fn in (_events_fn, lambda ids: DosingEvents.repeated(100.0, 12.0, 3, compartment=0)):
        a, _, _ = _collect(10, 4, method="ode", ode_strategy="vmap", events_fn=events_fn)
        b, _, _ = _collect(10, 10, method="ode", ode_strategy="vmap", events_fn=events_fn)
        np.testing.assert_array_equal(a, b)


def test_chunk_size_ode_batch_strategy_agrees_within_tolerance():
    """The default batched-state ODE strategy shares one step size per chunk, so chunkings
    differ only at solver-tolerance level: rtol 1e-8/atol 1e-10 per step, compared at
    rtol 1e-6 and atol 1e-9 mg/L (100× margin for error accumulated over a few steps)."""
    shared = lambda ids: DosingEvents.repeated(100.0, 12.0, 3, compartment=0)  # noqa: E731
    a, _, _ = _collect(10, 4, method="ode", events_fn=shared)
    b, _, _ = _collect(10, 10, method="ode", events_fn=shared)
    exact, _, _ = _collect(10, 10, method="linear", events_fn=shared)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(a, exact, rtol=1e-6, atol=1e-9)


def test_skip_chunk_resumes_an_interrupted_run():
    """A run that dies after two chunks resumes: only missing chunks run, the result is bitwise
    the uninterrupted one, and progress still adds up to the cohort size."""
    full, _, _ = _collect(10, 3)
    written = {}

    class Crash(RuntimeError):
        pass

    def on_chunk_then_crash(start, stop, sol):
        if len(written) == 2:
            raise Crash("killed")
        written[start] = np.asarray(sol.outputs)

    with pytest.raises(Crash):
        simulate_cohort(
            one_compartment(), 10, _params_fn, _events_fn, TIMES,
            chunk_size=3, on_chunk=on_chunk_then_crash, method="linear",
        )  # fmt: skip
    assert sorted(written) == [0, 3]

    ran, advanced = [], []

    def on_chunk(start, stop, sol):
        ran.append(start)
        written[start] = np.asarray(sol.outputs)

    report = simulate_cohort(
        one_compartment(), 10, _params_fn, _events_fn, TIMES, chunk_size=3, on_chunk=on_chunk,
        skip_chunk=lambda start, stop: start in written, method="linear", progress=advanced.append,
    )  # fmt: skip
    assert ran == [6, 9]
    assert report == CohortReport(
        n_subjects=10, chunk_size=3, chunks_run=2, chunks_skipped=2, n_failed=0
    )
    assert advanced == [3, 3, 3, 1]
    np.testing.assert_array_equal(np.concatenate([written[k] for k in sorted(written)]), full)


def test_nothing_compiles_after_the_first_chunk():
    """Padding the ragged last chunk means one compilation for the whole cohort.

    JAX reports every XLA compilation to ``jax.monitoring`` listeners
    (``/jax/core/compile/backend_compile_duration``), whatever the engine's internals; the
    second chunk and the ragged third must compile nothing at all. The check is not
    vacuous: the first chunk compiles, and a direct call at a new batch size compiles again.
    """
    # a model of its own, so nothing is in the compilation caches yet
    model = ODEModel(
        name="fresh_iv1", states=("central",), parameters=("cl", "v"),
        rhs=lambda t, y, p: {"central": -p.cl / p.v * y.central},
        outputs={"conc": lambda y, p: y.central / p.v}, linear=True,
    )  # fmt: skip
    events_fn = lambda ids: DosingEvents.repeated(100.0, 12.0, 3, compartment=0)  # noqa: E731
    per_chunk = []

    def on_chunk(start, stop, sol):
        per_chunk.append(list(compiled))
        compiled.clear()

    with recorded_compilations() as compiled:
        simulate_cohort(model, 11, _params_fn, events_fn, TIMES, chunk_size=4, on_chunk=on_chunk)
        # 40 subjects pad to 64, a shape the chunks of 4 (padded to 32) never used
        simulate(model, _params_fn(np.arange(40)), events_fn(None), TIMES)
    assert len(per_chunk) == 3
    assert per_chunk[0], "the first chunk should have compiled (is the listener blind?)"
    assert per_chunk[1:] == [[], []], f"compiled again after the first chunk: {per_chunk[1:]}"
    assert compiled, "a direct call at a new batch size should have compiled"


def test_per_subject_times_are_sliced_with_their_chunk():
    """``times[n_subjects, time]`` rows follow their subjects; equals one direct call bitwise."""
    ids = np.arange(5)
    times = jnp.asarray(np.linspace(0.0, 30.0, 6)[None, :] + ids[:, None] * 0.25)
    outputs = {}
    simulate_cohort(
        one_compartment(), 5, _params_fn, _events_fn, times, chunk_size=2,
        on_chunk=lambda start, stop, sol: outputs.update({start: (np.asarray(sol.outputs), np.asarray(sol.times))}),
    )  # fmt: skip
    direct = simulate(one_compartment(), _params_fn(ids), _events_fn(ids), times)
    np.testing.assert_array_equal(
        np.concatenate([outputs[k][0] for k in (0, 2, 4)]), np.asarray(direct.outputs)
    )
    np.testing.assert_array_equal(
        np.concatenate([outputs[k][1] for k in (0, 2, 4)]), np.asarray(times)
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(n_subjects=0), r"`n_subjects` must be a whole number ≥ 1, got 0"),
        (dict(chunk_size=0), r"`chunk_size` must be a whole number ≥ 1, got 0"),
        (
            dict(times=jnp.zeros((3, 4))),
            r"`times` must have shape \(time,\) or \(5, time\) .*got \(3, 4\)",
        ),
        (
            dict(params_fn=lambda ids: _params_fn(ids)[:1]),
            r"`params_fn` returned shape \(1, 2\) for subjects 0\.\.1, expected \(2, 2\)",
        ),
        (
            dict(
                events_fn=lambda ids: DosingEvents.repeated(
                    100.0, 12.0, 2, n_subjects=3, compartment=0
                )
            ),
            r"`events_fn` returned 3 subjects for subjects 0\.\.1, expected 2",
        ),
        (
            dict(events_fn=lambda ids: [Dose(0.0, 1.0, compartment=0)]),
            r"`events_fn` must return a DosingEvents table",
        ),
    ],
)
def test_simulate_cohort_rejects_bad_requests(kwargs, match):
    args = dict(
        model=one_compartment(), n_subjects=5, params_fn=_params_fn, events_fn=_events_fn, times=TIMES,
        chunk_size=2, on_chunk=lambda *a: None,
    )  # fmt: skip
    args.update(kwargs)
    with pytest.raises(SimulationError, match=match):
        simulate_cohort(**args)
