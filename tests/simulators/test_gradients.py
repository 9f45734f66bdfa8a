"""Reverse-mode gradients of simulated outputs against central finite differences.

Loss: a weighted sum of squared differences between the concentrations of a 3-subject
cohort and fixed targets, differentiated with ``jax.grad`` with respect to every
parameter of every subject (clearances, volumes, ka, F and the lag time). Reference:
central differences ``(L(θ + h e_k) - L(θ - h e_k)) / 2h`` with ``h = 1e-6 |θ_k|`` for every
parameter of the exact linear engine (truncation ~h², rounding ~1e-16/h: both far below
the tolerance). The ODE engine (rtol 1e-10) is slower per call, so it is checked along 4
random directions ``v`` (scaled by |θ|, every parameter of every subject moving at once):
``∇L · v`` against ``(L(θ + h v) - L(θ - h v)) / 2h`` with ``h = 1e-4`` (solver noise / h
stays ~1e-6). Tolerance of every comparison: rtol 1e-5, with an atol of 1e-8 × the
largest entry for entries that are ~0.

Regimens avoid output times at which a derivative jumps (an output exactly at a lagged
dose time or at an infusion end that moves with a parameter).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from twinsim.priors import ODEModel
from twinsim.simulators import simulate

RTOL = 1e-5
LAGS = (0.6, 0.3, 1.1)  # h; no output time of the grid equals a lagged dose time
ODE_TOL = dict(rtol=1e-10, atol=1e-12)


@functools.cache
def _loss_and_grad(model: ODEModel, options: tuple):
    """The loss and its jitted gradient, built once per (model, engine options)."""

    def loss(params, events, times, target):
        conc = simulate(model, params, events, times, **dict(options)).outputs[..., 0]
        return 0.5 * jnp.sum((conc - target) ** 2 / (1.0 + times))

    return loss, jax.jit(jax.grad(loss))


def _finite_differences(loss, params, relative_step, directions=None):
    """Central differences along each parameter (``directions=None``) or along each of
    ``directions`` (then ``h = relative_step`` on the direction scaled by |θ|)."""
    if directions is None:
        directions = [np.zeros_like(params) for _ in range(params.size)]
        for d, index in zip(directions, np.ndindex(params.shape), strict=True):
            d[index] = abs(params[index])
    out = []
    for d in directions:
        h = relative_step
        out.append((float(loss(params + h * d)) - float(loss(params - h * d))) / (2.0 * h))
    return np.array(out), np.array(directions)


def _check(
    model, params, events, times, relative_step, n_directions=None, grad_rtol=RTOL, **options
):
    loss, grad = _loss_and_grad(model, tuple(sorted(options.items())))
    params = np.asarray(params, dtype=float)
    conc = np.asarray(simulate(model, params, events, times, **options).outputs[..., 0])
    target = 0.8 * conc + 0.05  # a loss with non-zero residuals everywhere
    got = np.asarray(grad(jnp.asarray(params), events, jnp.asarray(times), jnp.asarray(target)))
    assert np.all(np.isfinite(got))
    directions = None
    if n_directions is not None:
        rng = np.random.default_rng(11)
        directions = [
            rng.standard_normal(params.shape) * np.abs(params) for _ in range(n_directions)
        ]
    expected, used = _finite_differences(
        lambda p: loss(p, events, times, target), params, relative_step, directions
    )
    projected = np.einsum("kij,ij->k", used, got)
    np.testing.assert_allclose(
        projected, expected, rtol=grad_rtol, atol=1e-8 * np.abs(expected).max()
    )


LINEAR_CASES = [
    "oral_lag_f",
    "depot_infusion_rate_lag_f",
    "repeated",
    "ss_bolus",
    "ss_infusion",
    "ss_oral",
]


@pytest.mark.parametrize("case", LINEAR_CASES)
def test_linear_engine_gradient(case, linear_models, grid):
    """Linear engine, 2-compartment model: d loss / d θ by jax.grad = central differences
    (rtol 1e-5) for oral doses with lag and F, zero-order input into the depot given by
    rate (its end moves with F), repeated doses and SS bolus, infusion and oral doses."""
    regimen = dataclasses.replace(grid["regimens"][case], tlag=LAGS)  # no parameter at 0
    _check(
        linear_models[2], regimen.params(2), regimen.events(), grid["times"], 1e-6, method="linear"
    )


def test_ode_engine_gradient_linear_model(linear_models, grid):
    """ODE engine (tsit5, rtol 1e-10), 2-compartment model, oral q12h with lag and F, iv
    bolus q8h and a 1-h iv infusion q12h: ∇L · v = central differences along 4 random
    directions (rtol 1e-5), and the whole gradient = the exact linear engine's gradient
    (rtol 1e-6 of its largest entry).

    Regression: integrating a segment in time, the adaptive steps' positions moved with the
    segment's ends, so the derivative with respect to a lag time (an event time) picked up
    the discretisation's own sensitivity (1e-3 relative at rtol 1e-10). Segments are now
    integrated on a normalised time s ∈ [0, 1]."""
    regimen = dataclasses.replace(grid["regimens"]["repeated"], tlag=LAGS)
    params, events, times = regimen.params(2), regimen.events(), grid["times"]
    _check(linear_models[2], params, events, times, 1e-4, n_directions=4, method="ode", **ODE_TOL)
    target = jnp.asarray(
        0.8 * np.asarray(simulate(linear_models[2], params, events, times).outputs[..., 0]) + 0.05
    )
    grads = {}
    for method, options in (("linear", {}), ("ode", ODE_TOL)):
        _, grad = _loss_and_grad(
            linear_models[2], tuple(sorted(dict(method=method, **options).items()))
        )
        grads[method] = np.asarray(grad(jnp.asarray(params), events, jnp.asarray(times), target))
    scale = np.abs(grads["linear"]).max()
    np.testing.assert_allclose(grads["ode"], grads["linear"], rtol=0, atol=1e-6 * scale)


def _mm_rhs(t, y, p):
    conc = y.central / p.v
    return {"depot": -p.ka * y.depot, "central": p.ka * y.depot - p.vmax * conc / (p.km + conc)}


MICHAELIS_MENTEN = ODEModel(
    name="test_mm_oral",
    states=("depot", "central"),
    parameters=("vmax", "km", "v", "ka", "f"),
    rhs=_mm_rhs,
    outputs={"conc": lambda y, p: y.central / p.v},
    bioavailability={"depot": "f"},
)


def test_ode_engine_gradient_michaelis_menten(grid):
    """ODE engine (tsit5, rtol 1e-10), oral model with Michaelis-Menten elimination (doses
    that saturate it: C >> Km for subject 1), repeated oral and iv doses: jax.grad =
    central differences along 4 random directions (rtol 1e-5)."""
    regimen = grid["regimens"]["repeated"]
    params = np.array(
        [
            [20.0, 2.0, 30.0, 1.2, 0.8],  # vmax mg/h, km mg/L, v L, ka 1/h, f
            [15.0, 0.5, 25.0, 0.7, 0.9],
            [40.0, 5.0, 15.0, 2.0, 0.6],
        ]
    )
    # iv doses go to "central" (index 1), oral ones to "depot" (index 0), as in the grid
    _check(
        MICHAELIS_MENTEN,
        params,
        regimen.events(),
        grid["times"],
        1e-4,
        n_directions=4,
        method="ode",
        **ODE_TOL,
    )


@pytest.mark.parametrize("case", ["ss_infusion", "ss_oral"])
def test_ode_engine_gradient_at_steady_state(case, linear_models, grid):
    """ODE engine (tsit5, rtol 1e-10), 2-compartment model, SS=1 infusions (rate- and
    duration-defined) and SS oral doses with F: the gradient through the Newton steady
    state (implicit function theorem) = the exact linear engine's gradient (closed-form
    steady state, lag times before the SS dose included), rtol 1e-6 of its largest entry — in reverse mode (``jax.grad``) and in
    forward mode (``jax.jacfwd`` with ``sensitivity="forward"``, what the ODE twins use)."""
    regimen = dataclasses.replace(grid["regimens"][case], tlag=LAGS)  # no parameter at 0
    params, events, times = regimen.params(2), regimen.events(), jnp.asarray(grid["times"])
    target = jnp.asarray(
        0.8 * np.asarray(simulate(linear_models[2], params, events, times).outputs[..., 0]) + 0.05
    )
    _, linear_grad = _loss_and_grad(linear_models[2], (("method", "linear"),))
    expected = np.asarray(linear_grad(jnp.asarray(params), events, times, target))
    scale = np.abs(expected).max()
    for sensitivity in ("reverse", "forward"):
        loss, grad = _loss_and_grad(
            linear_models[2],
            tuple(sorted(dict(method="ode", sensitivity=sensitivity, **ODE_TOL).items())),
        )
        if sensitivity == "forward":
            grad = jax.jit(jax.jacfwd(loss))
        got = np.asarray(grad(jnp.asarray(params), events, times, target))
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6 * scale, err_msg=sensitivity)


def test_derivative_of_a_steady_state_that_does_not_exist_is_reported_not_raised(
    linear_models, grid
):
    """Regression: a subject whose clearances are 0 has no steady state (the dosing-interval
    map has eigenvalue 1, its Newton Jacobian is singular). Differentiating through it used
    to abort the compiled program (the root's implicit derivative ran a linear solve that
    raises on a singular matrix — the crash of NUTS on the ODE drug models, whose extreme
    proposals underflow a rate constant to 0). Now that subject's status says
    STEADY_STATE_FAILED and only its derivatives are non-finite; the others' are the exact
    linear engine's."""
    from twinsim.simulators import SolveStatus

    regimen = grid["regimens"]["ss_infusion"]
    params = np.array(regimen.params(2), dtype=float)
    names = linear_models[2].parameters
    for name in ("cl", "q"):
        params[1, names.index(name)] = 0.0
    events, times = regimen.events(), jnp.asarray(grid["times"])
    model = linear_models[2]

    # one reverse pass of a weighted sum of every output (jacrev ran one per output: 70 s)
    weights = jnp.asarray(np.random.default_rng(7).uniform(0.5, 1.5, (3, len(grid["times"]))))

    def loss(method, **options):
        def f(p):
            out = simulate(model, p, events, times, method=method, **options).outputs[..., 0]
            return jnp.sum(jnp.where(jnp.isfinite(out), out, 0.0) * weights)

        return f

    result = simulate(model, jnp.asarray(params), events, times, method="ode", **ODE_TOL)
    assert [int(s) for s in np.asarray(result.status)] == [
        0,
        int(SolveStatus.STEADY_STATE_FAILED),
        0,
    ]
    grad = np.asarray(jax.grad(loss("ode", **ODE_TOL))(jnp.asarray(params)))  # [subject, p]
    exact = np.asarray(jax.grad(loss("linear"))(jnp.asarray(params)))
    for i in (0, 2):
        assert np.all(np.isfinite(grad[i]))
        np.testing.assert_allclose(grad[i], exact[i], rtol=1e-6, atol=1e-9 * np.abs(exact[i]).max())
