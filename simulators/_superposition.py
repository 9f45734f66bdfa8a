"""Exact, differentiable predictions of LINEAR models at arbitrary per-subject times.

For a linear time-invariant model ``dx/dt = A x`` every dose acts independently, so the
state at time ``t`` is the sum of each dose's response:

- a bolus ``a`` (after bioavailability) into compartment ``c`` at ``t_d`` (after the lag
  time) contributes ``e^{A (t − t_d)} a e_c`` for ``t > t_d`` (the pre-dose convention of
  the engines: an output at the dose time does not yet see the dose);
- an infusion at rate ``r`` from ``t_s`` for ``d`` hours contributes
  ``e^{A h₂} Ψ(h₁) r e_c`` with ``h₁ = clip(t − t_s, 0, d)``, ``h₂ = t − t_s − h₁`` and
  ``Ψ(h) = ∫₀ʰ e^{A u} du``, read off one exponential of ``[[A, e_c], [0, 0]]``;
- a non-zero initial state contributes ``e^{A t} x₀``.

There is no event walk and no sorting, so the cost is one small matrix exponential per
(dose, output time) and the path traces to a compact, fast gradient — what a NUTS
sampler needs from the likelihood of a population fit. It covers the doses the engines
cover except steady-state (``SS=1``) records; :func:`predict_outputs` sends those, and
nonlinear models, to :func:`~twinsim.simulators.simulate`.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._engine import SimulationError, _effective_doses, simulate
from ._events import DosingEvents
from ._model import ODEModel

__all__ = ["expm_small", "predict_linear", "predict_outputs"]


def _is_concrete(*trees) -> bool:
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(trees))


def _has_infusions(events: DosingEvents) -> bool:
    """Whether an infusion path must be traced (always, when the table is traced)."""
    if not _is_concrete(events.rate, events.duration, events.mask):
        return True
    mask = np.asarray(events.mask)
    return bool(np.any(mask & ((np.asarray(events.rate) > 0) | (np.asarray(events.duration) > 0))))


# Padé [13/13] coefficients (Higham 2005, "The scaling and squaring method for the matrix
# exponential revisited", Table 2.3); θ₁₃ is the 1-norm up to which [13/13] is accurate to
# double precision without scaling
_PADE13 = (
    64764752532480000.0, 32382376266240000.0, 7771770303897600.0, 1187353796428800.0,
    129060195264000.0, 10559470521600.0, 670442572800.0, 33522128640.0, 1323241920.0,
    40840800.0, 960960.0, 16380.0, 182.0, 1.0,
)  # fmt: skip
_THETA13 = 5.371920351148152
_MAX_SQUARINGS = 16


def expm_small(a: Float[Array, "n n"]) -> Float[Array, "n n"]:
    """Matrix exponential of a small matrix: closed forms for 1 × 1 and 2 × 2 (one- and
    two-state linear models, the common PK shapes), otherwise Padé [13/13] with scaling
    and squaring.

    The same method as :func:`jax.scipy.linalg.expm` (Higham 2005) without its choice
    among five Padé degrees: under ``vmap`` that choice evaluates every degree, and the
    exponentials of a superposition are many small, batched ones. Accurate to double
    precision for ``‖a‖₁ ≤ θ₁₃ · 2¹⁶``.
    """
    n = a.shape[-1]
    if n == 1:
        return jnp.exp(a)
    if n == 2:
        return _expm_2x2(a)
    eye = jnp.eye(n, dtype=a.dtype)
    norm = jnp.max(jnp.sum(jnp.abs(a), axis=-2))
    squarings = jnp.clip(
        jnp.ceil(jnp.log2(jnp.maximum(norm, 1e-300) / _THETA13)), 0, _MAX_SQUARINGS
    )
    a = a / jnp.exp2(squarings)
    a2 = a @ a
    a4 = a2 @ a2
    a6 = a4 @ a2
    b = _PADE13
    u = a @ (
        a6 @ (b[13] * a6 + b[11] * a4 + b[9] * a2) + b[7] * a6 + b[5] * a4 + b[3] * a2 + b[1] * eye
    )
    v = a6 @ (b[12] * a6 + b[10] * a4 + b[8] * a2) + b[6] * a6 + b[4] * a4 + b[2] * a2 + b[0] * eye
    r = jnp.linalg.solve(v - u, v + u)
    return jax.lax.fori_loop(0, _MAX_SQUARINGS, lambda i, m: jnp.where(i < squarings, m @ m, m), r)


def _expm_2x2(a: Float[Array, "2 2"]) -> Float[Array, "2 2"]:
    """Closed form of a 2 × 2 exponential (Cayley–Hamilton), ≈ 40× faster than Padé here.

    With ``s = tr(a)/2`` and ``d = s² − det(a)`` (the eigenvalues are ``s ± √d``),
    ``e^a = e^s [c(d) I + q(d) (a − s I)]`` where ``c = cosh √d, q = sinh √d / √d`` for
    ``d > 0``, ``cos √−d`` and ``sin √−d / √−d`` for ``d < 0``, and the Taylor series in ``d``
    near 0 (repeated eigenvalues, e.g. ka = k). For ``d > 0`` the two exponentials
    ``e^{s ± √d}`` are formed directly so that nothing overflows before it cancels.
    """
    s = 0.5 * (a[0, 0] + a[1, 1])
    d = (0.5 * (a[0, 0] - a[1, 1])) ** 2 + a[0, 1] * a[1, 0]
    small = jnp.abs(d) < 1e-6
    root = jnp.sqrt(jnp.where(small, 1.0, jnp.abs(d)))
    up, down = jnp.exp(s + root), jnp.exp(s - root)
    es = jnp.exp(s)
    c = jnp.where(
        small,
        es * (1.0 + d / 2.0 + d**2 / 24.0),
        jnp.where(d > 0, 0.5 * (up + down), es * jnp.cos(root)),
    )
    q = jnp.where(
        small,
        es * (1.0 + d / 6.0 + d**2 / 120.0),
        jnp.where(d > 0, 0.5 * (up - down) / root, es * jnp.sin(root) / root),
    )
    eye = jnp.eye(2, dtype=a.dtype)
    return c * eye + q * (a - s * eye)


def _trim_padding(events: DosingEvents) -> DosingEvents:
    """Drop trailing all-padding columns: every column costs one exponential per time."""
    if not _is_concrete(events.mask):
        return events
    mask = np.asarray(events.mask)
    width = int(mask.sum(axis=1).max(initial=0))
    if width == mask.shape[1] or np.any(mask[:, width:]):
        return events
    keep = max(width, 1)
    # sliced on the host: a jnp slice inside a trace would stage the table and hide that
    # it is concrete
    return DosingEvents(
        **{f: np.asarray(getattr(events, f))[:, :keep] for f in events.__dataclass_fields__}
    )


def predict_linear(
    model: ODEModel,
    params: Float[Array, "subject param"],
    events: DosingEvents,
    times: Float[Array, " time"] | Float[Array, "subject time"],
    *,
    return_states: bool = False,
) -> Float[Array, "subject time output"]:
    """Outputs of a linear model by superposition of per-dose responses.

    Parameters
    ----------
    model
        A linear :class:`~twinsim.priors.ODEModel` (``linear=True``).
    params
        ``[subject, P]`` parameters in ``model.parameters`` order (one row per subject), or
        by name: ``{"cl": ..., "v": ...}`` (see :meth:`ODEModel.parameter_array`).
    events
        Dosing table with one row per subject (or one shared row); no steady-state records.
    times
        Output times in h, ``[time]`` or ``[subject, time]``, in any order.
    return_states
        Return the states ``[subject, time, state]`` instead of the outputs.

    Returns
    -------
    Array
        ``[subject, time, output]``, equal to ``simulate(...).outputs`` (pre-dose convention).

    Raises
    ------
    SimulationError
        For a nonlinear model, steady-state records or mismatched shapes.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from twinsim.priors import one_compartment
    >>> from twinsim.simulators import DosingEvents, predict_linear
    >>> model = one_compartment(absorption=True)
    >>> out = predict_linear(model, jnp.array([[2.8, 31.5, 1.5, 1.0]]),
    ...                      DosingEvents.repeated(320.0, 24.0, 1, compartment=0), jnp.array([0.0, 1.0, 24.0]))
    >>> [round(float(c), 4) for c in out[0, :, 0]]
    [0.0, 7.4707, 1.279]
    """
    if not model.linear:
        raise SimulationError(
            f"`predict_linear` needs a linear model, but model {model.name!r} has linear=False; "
            "use simulate(..., method='ode') or predict_outputs"
        )
    params = jnp.atleast_2d(model.parameter_array(params))
    n = params.shape[0]
    if events.n_subjects == 1 and n > 1:
        events = events.broadcast(n)
    if events.n_subjects != n:
        raise SimulationError(
            f"`events` has {events.n_subjects} subjects, `params` {n}; give one row per subject"
        )
    times = jnp.asarray(times, jnp.float64)
    if times.ndim == 1:
        times = jnp.broadcast_to(times, (n, times.shape[0]))
    if times.ndim != 2 or times.shape[0] != n:
        raise SimulationError(
            f"`times` must have shape (time,) or ({n}, time), got {tuple(times.shape)}"
        )
    if _is_concrete(events.steady_state) and bool(
        np.any(np.asarray(events.steady_state) & np.asarray(events.mask))
    ):
        raise SimulationError(
            "`predict_linear` does not handle steady-state (SS=1) doses; use simulate() "
            "(or predict_outputs, which does so automatically)"
        )
    infusions = _has_infusions(events)
    events = _trim_padding(events)
    doses = _effective_doses(model, params, events)
    n_states = model.n_states

    def one(p, d, t):
        a = model.system_matrix(p)
        unit = jax.nn.one_hot(d.compartment, n_states, dtype=jnp.float64)  # [E, S]
        since = t[:, None] - d.time[None, :]  # [T, E]; +inf/-inf for padded rows
        bolus = d.bolus[None, :] & (since > 0)
        h = jnp.where(bolus, since, 0.0)
        phi = jax.vmap(jax.vmap(lambda hh: expm_small(a * hh)))(h)  # [T, E, S, S]
        x = jnp.einsum("tesk,ek,e,te->ts", phi, unit, d.amount, bolus.astype(jnp.float64))
        if infusions:
            running = (d.rate > 0)[None, :] & (since > 0)
            h1 = jnp.where(running, jnp.clip(since, 0.0, d.duration[None, :]), 0.0)
            h2 = jnp.where(running, since - h1, 0.0)

            def infused(c, hh1, hh2):
                big = jnp.zeros((n_states + 1, n_states + 1), jnp.float64)
                big = big.at[:n_states, :n_states].set(a).at[:n_states, n_states].set(c)
                psi = expm_small(big * hh1)[:n_states, n_states]
                return expm_small(a * hh2) @ psi

            per = jax.vmap(jax.vmap(infused, in_axes=(0, 0, 0)), in_axes=(None, 0, 0))(
                unit, h1, h2
            )  # [T, E, S]
            x = x + jnp.einsum("tes,e,te->ts", per, d.rate, running.astype(jnp.float64))
        if model.initial is not None:
            x0 = model.initial_state(p)
            x = x + jax.vmap(lambda tt: expm_small(a * tt) @ x0)(t)
        return x if return_states else model.observe(x, p)

    return jax.vmap(one)(params, doses, times)


def predict_outputs(
    model: ODEModel,
    params: Float[Array, "subject param"],
    events: DosingEvents,
    times: Float[Array, " time"] | Float[Array, "subject time"],
    *,
    method: Literal["auto", "superposition", "linear", "ode", "split", "semilinear"] = "auto",
    rtol: float = 1e-8,
    atol: float = 1e-10,
    sensitivity: Literal["reverse", "forward"] = "reverse",
    grid: tuple[float, int] | None = None,
) -> Float[Array, "subject time output"]:
    """Outputs ``[subject, time, output]`` by the fastest exact path available.

    ``"auto"``: :func:`predict_linear` for a linear model without steady-state doses,
    otherwise :func:`~twinsim.simulators.simulate`; ``"superposition"`` forces the former,
    ``"linear"``/``"ode"``/``"split"``/``"semilinear"`` the engine. Times may be per subject and
    must be sorted for the engine. ``rtol``, ``atol`` and ``sensitivity`` are the ODE
    engine's, ``grid`` the semilinear engine's (see :func:`~twinsim.simulators.simulate`).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from twinsim.priors import one_compartment
    >>> from twinsim.simulators import DosingEvents, predict_outputs
    >>> out = predict_outputs(one_compartment(), jnp.array([[5.0, 50.0]]),
    ...                       DosingEvents.repeated(100.0, 12.0, 1, compartment=0), jnp.array([1.0]))
    >>> round(float(out[0, 0, 0]), 4)
    1.8097
    """
    if method not in ("auto", "superposition", "linear", "ode", "split", "semilinear"):
        raise SimulationError(
            "`method` must be 'auto', 'superposition', 'linear', 'ode', 'split' or 'semilinear', "
            f"got {method!r}"
        )
    params = jnp.atleast_2d(model.parameter_array(params))
    use_superposition = method == "superposition" or (
        method == "auto"
        and model.linear
        and _is_concrete(events.steady_state)
        and not bool(np.any(np.asarray(events.steady_state) & np.asarray(events.mask)))
    )
    if use_superposition:
        return predict_linear(model, params, events, times)
    engine = "auto" if method == "auto" else method
    if events.n_subjects == 1 and params.shape[0] > 1:
        events = events.broadcast(params.shape[0])
    return simulate(
        model, params, events, times, method=engine, rtol=rtol, atol=atol,
        sensitivity=sensitivity, keep_states=False, grid=grid,
    ).outputs  # fmt: skip
