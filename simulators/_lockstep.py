"""Per-subject adaptive Runge–Kutta steps, every subject of a batch advanced together.

The walking ODE engine's ``ode_strategy="lockstep"``: between two entries of the event walk
each subject integrates from its ``t0`` to its ``t1`` with its own step sizes, as a
``jax.vmap`` of :func:`diffrax.diffeqsolve` does, but in one loop whose every operation is
elementwise over the subjects (the stages of one explicit Runge–Kutta step for all rows,
each row's error norm over its own states, its own accept/reject and next step). No
subject's arithmetic involves another's, so a subject's numbers are the same bit for bit
alone or in any batch; a subject that has arrived only waits for the others.

The method is the solver's own Butcher tableau from diffrax (``Tsit5``, ``Dopri8``: first
same as last), the error control diffrax's :class:`~diffrax.PIDController` with its defaults
(integral control, safety 0.9, factors 0.2–10, RMS norm of the error scaled by
``atol + rtol·max(|y₀|, |y₁|)``). Forward-mode derivatives only (a ``while`` loop): the
engine takes this strategy only for concrete inputs, which no ``jax.grad`` can reach.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["lockstep_segment"]

_SAFETY, _FACTOR_MIN, _FACTOR_MAX = 0.9, 0.2, 10.0
#: :class:`~twinsim.simulators.SolveStatus` codes (that enum lives in ``_engine``, which
#: imports this module)
_MAX_STEPS, _NONFINITE, _SOLVER_FAILED = 1, 2, 3


class _State(NamedTuple):
    t: jax.Array  #: [subject] time reached
    y: jax.Array  #: [subject, state] state at t
    h: jax.Array  #: [subject] next step size to try
    k: jax.Array  #: [subject, state] right-hand side at (t, y): first same as last
    steps: jax.Array  #: [subject] steps tried
    done: jax.Array  #: [subject] arrived at t1, or failed
    status: jax.Array  #: [subject] 0, or a failure code


class _Tableau(NamedTuple):
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    e: tuple[float, ...]
    error_order: float


def tableau_of(solver) -> _Tableau:
    """The explicit solver's tableau as Python floats (constants of the compiled program)."""
    tab = type(solver).tableau
    if not tab.fsal:
        raise ValueError(f"{type(solver).__name__}: the lockstep strategy needs an FSAL tableau")
    return _Tableau(
        c=tuple(float(v) for v in np.asarray(tab.c)),
        a=tuple(tuple(float(v) for v in np.asarray(row)) for row in tab.a_lower),
        b=tuple(float(v) for v in np.asarray(tab.b_sol)),
        e=tuple(float(v) for v in np.asarray(tab.b_error)),
        error_order=float(solver.error_order(None)),
    )


def _combine(weights, ks):
    """``Σ w_j k_j`` over the nonzero weights (Python floats), in a fixed order."""
    total = None
    for w, k in zip(weights, ks, strict=True):
        if w != 0.0:
            total = w * k if total is None else total + w * k
    return total


def lockstep_segment(
    vector_field: Callable,
    tableau: _Tableau,
    x,
    r,
    t0,
    t1,
    p,
    dt0,
    *,
    rtol: float,
    atol: float,
    max_steps: int,
):
    """Every subject from ``t0[i]`` to ``t1[i]`` (``x``, ``r`` ``[subject, state]``).

    ``vector_field(t, y, p)`` is one subject's right-hand side; ``r`` a constant input added
    to it (an infusion). Returns the states at ``t1``, the status per subject (0, or
    ``1`` max steps, ``2`` non-finite state, ``3`` step size collapsed) and the step size to
    start the next segment with.
    """
    f = jax.vmap(lambda t, y, q, u: vector_field(t, y, q) + u)
    s = len(tableau.b)
    moving = t1 > t0

    def body(state: _State) -> _State:
        t, y, h, k, steps, done, status = state
        remaining = t1 - t
        last = h >= remaining
        dt = jnp.where(done, 0.0, jnp.where(last, remaining, h))
        dtc = dt[:, None]
        ks = [k]
        for i in range(1, s):
            yi = y + dtc * _combine(tableau.a[i - 1], ks)
            ks.append(f(t + tableau.c[i - 1] * dt, yi, p, r))
        y_new = y + dtc * _combine(tableau.b, ks)  # == the last stage's state (FSAL)
        err = dtc * _combine(tableau.e, ks)
        finite = jnp.all(jnp.isfinite(y_new), axis=1)
        scale = atol + rtol * jnp.maximum(
            jnp.abs(y), jnp.abs(jnp.where(jnp.isfinite(y_new), y_new, y))
        )
        ratio = jnp.sqrt(jnp.mean((err / scale) ** 2, axis=1))
        ratio = jnp.where(finite, ratio, jnp.inf)
        accept = ~done & (ratio < 1.0)
        factor = jnp.clip(
            _SAFETY * (1.0 / ratio) ** (1.0 / tableau.error_order),
            jnp.where(accept, 1.0, _FACTOR_MIN),
            jnp.where(accept, _FACTOR_MAX, _SAFETY),
        )
        arrived = accept & last
        # a step shortened to land on t1 says little of the step the solution allows
        h_new = jnp.where(arrived & (dt < h), h, dt * factor)
        steps = steps + (~done).astype(jnp.int32)
        collapsed = ~done & ~accept & (h_new <= 1e-14 * jnp.maximum(1.0, jnp.abs(t)))
        out_of_steps = ~done & ~arrived & (steps >= max_steps)
        status = jnp.where(
            collapsed,
            jnp.where(finite, _SOLVER_FAILED, _NONFINITE),
            jnp.where(out_of_steps, _MAX_STEPS, status),
        )
        return _State(
            t=jnp.where(accept, jnp.where(last, t1, t + dt), t),
            y=jnp.where(accept[:, None], y_new, y),
            h=jnp.where(done, h, h_new),
            k=jnp.where(accept[:, None], ks[-1], k),
            steps=steps,
            done=done | arrived | (status != 0),
            status=status,
        )

    n = x.shape[0]
    start = _State(
        t=t0,
        y=x,
        h=jnp.where(moving, jnp.minimum(dt0, t1 - t0), 0.0),
        k=f(t0, x, p, r),
        steps=jnp.zeros(n, jnp.int32),
        done=~moving,
        status=jnp.zeros(n, jnp.int32),
    )
    end = jax.lax.while_loop(lambda state: jnp.any(~state.done), body, start)
    y, h, status = end.y, end.h, end.status
    dt_next = jax.lax.stop_gradient(jnp.where(moving & (h > 0), h, dt0))
    return y, status, dt_next
