"""The semilinear engine: a linear part solved exactly, driving a part linear in itself.

Many PK/PD models split in two (warfarin: oral depot → 2-compartment S-warfarin PK →
inhibition of clotting-factor synthesis → two transit chains → INR):

- a *linear part* ``L`` — ``dy_L/dt = A(p) y_L`` with constant coefficients, the
  pharmacokinetics, receiving the doses;
- a *driven part* ``D`` — ``dy_D/dt = K(p) y_D + g(y_L, p)``, linear with constant
  coefficients in its own states, driven by any (nonlinear) function of the linear part:
  an effect compartment, transit chains, an indirect response of type I or II.

Then on a uniform grid of step ``h`` with every dose and output time on it, both parts
have an exact update from node to node (variation of constants),

    ``y_L(t + h) = e^{A h} y_L(t)``,
    ``y_D(t + h) = e^{K h} y_D(t) + ∫₀ʰ e^{K (h − s)} g(e^{A s} y_L(t), p) ds``,

and only the integral is approximated — by Gauss–Legendre quadrature with
:data:`NODES` nodes, order ``2·NODES`` in ``h``, on an integrand that is smooth inside each
step (doses fall on nodes). No adaptive step, no error estimate, no event walk: a scan
of small matrix products, one per node, the same for every subject, cheap inside
``jit``, ``vmap`` and ``grad``. The matrices are ``expm`` of the model's own Jacobian
blocks, so a model needs no extra declaration; :func:`semilinear_partition` finds the
parts from the right-hand side.

What the engine takes: boluses (after bioavailability) at times on the grid, no lag
time, no infusion, no ``SS=1`` record; outputs on the grid. :func:`semilinear_grid` finds the
grid of a concrete dosing table and output times (or says there is none).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._events import DosingEvents
from ._model import ODEModel
from ._split import probe

__all__ = []

#: Gauss–Legendre nodes per step. With the grid's largest step :data:`MAX_STEP` the
#: warfarin INR agrees with a tolerance-1e-10 adaptive solve to < 1e-9 relative
#: (tests/simulators/test_semilinear.py)
NODES = 6

#: the largest step (h) the grid takes: a step that the dose and output times allow but
#: that is longer is divided
MAX_STEP = 0.5

#: the most grid steps the engine takes for one horizon (beyond, the other engines serve)
MAX_GRID_STEPS = 40_000

#: times are on the grid when within this many hours of a node
_ON_GRID = 1e-9

_PROBE_SEED = 20261205


class Partition(NamedTuple):
    """The parts of a semilinear model, as state indices."""

    linear: tuple[int, ...]  #: ``L``: ``dy_L/dt = A y_L``
    driven: tuple[int, ...]  #: ``D``: ``dy_D/dt = K y_D + g(y_L)``
    inputs: tuple[int, ...]  #: positions in ``D`` of the rows where ``g`` is not 0
    feeds: tuple[int, ...]  #: positions in ``L`` of the states ``g`` depends on


@functools.lru_cache(maxsize=64)
def semilinear_partition(model: ODEModel) -> Partition | None:
    """The linear and the driven part of ``model`` (:class:`Partition`), or ``None``.

    Found from the right-hand side at random points (two parameter sets, two states, two
    times): ``L`` is the largest set of states whose derivatives are a constant linear map
    of ``L`` alone (no other state, no time, no constant term); the rest, ``D``, must have a
    Jacobian in ``D`` that is constant in the states and time, and no explicit time. A
    linear model (``D`` empty) or one with no linear part has no partition here.
    """
    if model.linear:
        return None
    n = model.n_states
    jac, val, states = probe(model, _PROBE_SEED)
    if not all(np.all(np.isfinite(v)) for v in (*jac.values(), *val.values())):
        return None

    def constant(rows, cols) -> bool:
        # the block is the same at every state and time (it may depend on the parameters)
        for i in range(2):
            ref = jac[i, 0, 0][np.ix_(rows, cols)]
            for j in range(2):
                for k in range(2):
                    if not np.allclose(jac[i, j, k][np.ix_(rows, cols)], ref, rtol=1e-12, atol=0):
                        return False
        return True

    def homogeneous(row, cols) -> bool:
        # f_row(y) = J[row, cols] · y[cols]: no constant term, nothing else
        return all(
            np.isclose(val[key][row], jac[key][row, cols] @ states[key[1]][cols], rtol=1e-12,
                       atol=1e-300)
            for key in jac
        )  # fmt: skip

    autonomous = all(
        np.allclose(val[i, j, 0], val[i, j, 1], rtol=1e-12, atol=0)
        for i in range(2)
        for j in range(2)
    )
    if not autonomous:
        return None
    everything = list(range(n))
    linear = [s for s in everything if constant([s], everything) and homogeneous(s, everything)]
    while True:  # drop states fed by a state outside the set
        outside = [c for c in everything if c not in linear]
        keep = [s for s in linear if all(np.all(jac[key][s, outside] == 0) for key in jac)]
        if keep == linear:
            break
        linear = keep
    driven = [s for s in everything if s not in linear]
    if not linear or not driven or not constant(driven, driven):
        return None
    inputs = tuple(
        i for i, d in enumerate(driven)
        if not (all(np.all(jac[key][d, linear] == 0) for key in jac) and homogeneous(d, driven))
    )  # fmt: skip
    feeds = tuple(
        i for i, s in enumerate(linear) if any(np.any(jac[key][driven, s] != 0) for key in jac)
    )
    if not inputs:
        return None  # nothing drives D: the model is linear after all
    return Partition(tuple(linear), tuple(driven), inputs, feeds)


def semilinear_grid(
    model: ODEModel, events: DosingEvents, times, *, max_step: float = MAX_STEP
) -> tuple[float, int] | None:
    """``(h, n_steps)`` of a uniform grid from 0 that holds every (concrete) dose and output
    time, with ``h ≤ max_step``; ``None`` when the engine cannot serve them (no partition,
    a lag time, an infusion or ``SS=1`` record, or a grid finer than 1/3600 h or longer than
    :data:`MAX_GRID_STEPS` steps). Doses after the last output time change no output and
    are left out."""
    if semilinear_partition(model) is None or model.lag_time:
        return None
    last = np.max(np.asarray(times, float), initial=-np.inf)
    mask = np.asarray(events.mask) & ~(np.asarray(events.time, float) > last + _ON_GRID)
    if (np.asarray(events.rate)[mask] > 0).any() or (np.asarray(events.duration)[mask] > 0).any():
        return None
    if np.asarray(events.steady_state)[mask].any():
        return None
    t = np.concatenate(
        [np.asarray(events.time, float)[mask].ravel(), np.asarray(times, float).ravel()]
    )
    if t.size == 0 or not np.all(np.isfinite(t)) or t.min() < 0:
        return None
    # the greatest common divisor of the times in whole seconds
    seconds = np.round(t * 3600.0)
    if np.max(np.abs(seconds / 3600.0 - t)) > _ON_GRID:
        return None
    g = int(np.gcd.reduce(seconds.astype(np.int64)))
    horizon = float(t.max())
    if g == 0:  # every time is 0
        return max_step, 1
    step = g / 3600.0
    step /= math.ceil(step / max_step - 1e-12)
    n_steps = max(1, round(horizon / step))
    if n_steps > MAX_GRID_STEPS:
        return None
    return step, n_steps


#: nodes cluster at the start of a step as ``s = h·u^q``: a step that starts from no drug
#: has an input like ``s^γ`` (an Emax model with Hill exponent γ < 1 at C → 0), which
#: Gauss nodes in ``s`` integrate to O(h^{1+γ}) only; in ``u`` it is ``u^{q(1+γ)−1}``
GRADING = 3


def _quadrature(step: float) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of ``∫₀ʰ F(s) ds ≈ Σ w_i F(s_i)``: Gauss–Legendre in ``u``,
    ``s = h·u^q``, ``ds = h q u^{q−1} du``."""
    x, w = np.polynomial.legendre.leggauss(NODES)
    u = (x + 1.0) / 2.0
    return step * u**GRADING, w / 2.0 * step * GRADING * u ** (GRADING - 1)


def _take(x, index: tuple[int, ...]):
    """``x[..., index]`` for static indices, as slices (a gather is element by element on
    the CPU)."""
    if index == tuple(range(index[0], index[0] + len(index))):
        return x[..., index[0] : index[0] + len(index)]
    return jnp.stack([x[..., i] for i in index], axis=-1)


def _place(parts, n_states: int):
    """The full state ``[..., n_states]`` from ``(values [..., k], indices)`` pairs; states
    in no part are 0."""
    shape = parts[0][0].shape[:-1]
    columns = [None] * n_states
    for values, index in parts:
        for j, i in enumerate(index):
            columns[i] = values[..., j]
    zero = jnp.zeros(shape, parts[0][0].dtype)
    return jnp.stack([zero if c is None else c for c in columns], axis=-1)


#: Taylor terms of :func:`_expm` after scaling to a norm ≤ 1/2: the remainder is below
#: 0.5^19 / 19! ≈ 2e-23
_TAYLOR_TERMS = 18
#: squarings :func:`_expm` can undo: norms up to 2^40 / 2 (a rate of 10^11 per step)
_MAX_SQUARINGS = 40


def _matmul(a, b):
    """``a @ b`` for small matrices as a broadcast and a sum, not a dot: XLA's CPU dot runs
    on Eigen's thread pool, which deadlocked when two of these programs ran at once."""
    return jnp.sum(a[..., :, :, None] * b[..., None, :, :], axis=-2)


def _expm(a, *, forward_only: bool = False):
    """``e^a`` of a small matrix by scaling and squaring a Taylor series (no dot, no solve;
    tests/simulators/test_semilinear.py checks it against scipy).

    The squarings are a fixed loop of :data:`_MAX_SQUARINGS`, each taken or not (reverse
    mode differentiates it); ``forward_only``: a ``while`` loop takes only those the norm
    needs (the PK/PD matrices of one grid step need 0–4; the fixed loop was most of the
    cost of a twin's gradient), differentiable in forward mode only (``jvp``, ``jacfwd``).
    (Paterson–Stockmeyer evaluation, 7 products instead of 18, broke a subject's bitwise
    equality alone and in a batch: XLA contracts its sums differently by batch shape.)"""
    norm = jnp.max(jnp.sum(jnp.abs(a), axis=-1))  # ∞-norm
    squarings = jnp.clip(jnp.ceil(jnp.log2(jnp.maximum(norm, 1e-300) / 0.5)), 0, _MAX_SQUARINGS)
    scaled = a / 2.0**squarings
    eye = jnp.eye(a.shape[-1], dtype=a.dtype)
    total, term = eye, eye
    for k in range(1, _TAYLOR_TERMS + 1):
        term = _matmul(term, scaled) / k
        total = total + term
    if forward_only:
        _, result = jax.lax.while_loop(
            lambda c: c[0] < squarings, lambda c: (c[0] + 1, _matmul(c[1], c[1])), (0, total)
        )
        return result

    def square(i, x):
        return jnp.where(i < squarings, _matmul(x, x), x)

    return jax.lax.fori_loop(0, _MAX_SQUARINGS, square, total)


def _propagators(model: ODEModel, p, step: float, forward_only: bool = False):
    """Per subject: ``e^{A h}``; the feeding rows of ``e^{A s_i}``; ``e^{K h}``; the input
    columns of ``w_i e^{K (h − s_i)}`` (``forward_only``: see :func:`_expm`)."""
    expm = functools.partial(_expm, forward_only=forward_only)
    part = semilinear_partition(model)
    s, w = _quadrature(step)
    jac = jax.jacfwd(lambda y: model.vector_field(jnp.zeros((), p.dtype), y, p))(
        jnp.zeros(model.n_states, p.dtype)
    )
    a = _take(_take(jac, part.linear).T, part.linear).T
    k = _take(_take(jac, part.driven).T, part.driven).T
    node_a = jax.vmap(lambda si: _take(expm(a * si).T, part.feeds).T)(jnp.asarray(s))
    node_k = jax.vmap(lambda si, wi: _take(wi * expm(k * (step - si)), part.inputs))(
        jnp.asarray(s), jnp.asarray(w)
    )
    return expm(a * step), node_a, expm(k * step), node_k


class SemilinearState(NamedTuple):
    """The state of a run stopped at a grid node, before that node's doses: where the
    next run of the same subjects (same parameters, same step) starts
    (:func:`solve_semilinear`'s ``start``)."""

    node: jax.Array  #: the node index (``time / step``), per subject ``[subject]``
    linear: jax.Array  #: ``y_L`` ``[subject, L]``
    driven: jax.Array  #: ``y_D`` ``[subject, D]``
    #: the subjects' propagators for the step (:func:`_propagators`, ``node_k`` in the
    #: layout the steps read): computed by the first piece, reused by the next (their
    #: matrix exponentials cost as much as a few hundred steps)
    propagators: tuple[jax.Array, ...]


def solve_semilinear(model: ODEModel, params, doses, times, *, step: float,
                     n_steps: int | None, at_dose: str, keep_states: bool,
                     start: SemilinearState | None = None, stop=None):  # fmt: skip
    """Outputs ``[subject, time, output]``, states ``[subject, time, state]`` (``None``
    unless ``keep_states``) and the status code per subject; with ``stop``, also the
    :class:`SemilinearState` state at node ``stop``.

    ``doses`` are the engines' effective doses (after bioavailability); ``times``
    ``[subject, time]`` on the grid ``k·step``, ``k = 0..n_steps``; ``step`` a number or a
    traced scalar. ``n_steps=None``: the run goes node by node to the last output time
    (a ``while`` loop, however many steps that is: one program for every horizon) and
    keeps only the outputs — for a few output times, as a twin's observations; it is
    differentiable in forward mode only. Otherwise a ``scan`` of ``n_steps`` records
    every node, differentiable in both modes. A subject with a dose the
    engine does not take (an infusion, ``SS=1``, a time off the grid) before its last
    output is marked 5 (``UNSUPPORTED_DOSE``); a non-finite state, 3.

    A long run whose doses are decided along the way (a titrated trial) goes in pieces
    (``n_steps=None``, ``at_dose="pre"``): ``stop`` (node indices ``[subject]``) ends a
    piece at that node before its doses — outputs are recorded at nodes up to ``stop``
    only, and the state there comes back as :class:`SemilinearState` — and ``start``
    resumes from it. The pieces take the same steps as one run from 0: doses before a
    piece's start are not read again, and changing doses from ``start`` on changes nothing
    before it.
    """
    part = semilinear_partition(model)
    lin, drv = part.linear, part.driven
    feeds = tuple(lin[i] for i in part.feeds)
    inputs = tuple(drv[i] for i in part.inputs)
    n, n_states = params.shape[0], model.n_states
    forward_only = n_steps is None
    pieces = start is not None or stop is not None
    if start is None:
        phi_a, node_a, phi_k, node_k = jax.vmap(
            lambda p: _propagators(model, p, step, forward_only)
        )(params)
        # [subject, D, node × input]: one contraction per step, in the layout it reads
        node_k = node_k.transpose(0, 2, 1, 3).reshape(n, len(drv), -1)
        x0 = jax.vmap(model.initial_state)(params)
        first, state = jnp.zeros(n, jnp.int32), (_take(x0, lin), _take(x0, drv))
    else:
        phi_a, node_a, phi_k, node_k = start.propagators
        first, state = start.node.astype(jnp.int32), (start.linear, start.driven)

    # doses on the grid (doses elsewhere, off the grid or beyond the horizon: none)
    position = doses.time / step
    index = jnp.round(jnp.where(jnp.isfinite(position), position, -1.0))
    on_grid = jnp.abs(index * step - doses.time) <= _ON_GRID
    into_linear = jnp.any(doses.compartment[..., None] == jnp.asarray(lin), axis=-1)
    taken = doses.mask & doses.bolus & ~doses.steady_state & on_grid & into_linear
    # a dose after a subject's last output changes none of them, whatever it is
    after_outputs = doses.time > jnp.max(times, axis=-1, keepdims=True) + _ON_GRID
    unsupported = jnp.any(doses.mask & ~taken & ~after_outputs, axis=-1)
    column = jnp.argmax(doses.compartment[..., None] == jnp.asarray(lin), axis=-1)
    amount = jnp.where(taken, doses.amount, 0.0)
    out_index = jnp.round(times / step)

    def source(p, y_feed):
        # g's input rows: y_D = 0, and the linear states g does not read are 0 too
        y = _place([(y_feed, feeds)], n_states)
        return _take(model.vector_field(jnp.zeros((), p.dtype), y, p), inputs)

    # every subject × node at once
    sources = jax.vmap(jax.vmap(source, in_axes=(None, 0)))
    post_dose = at_dose == "post"

    def advance(y_lin, y_drv, add):
        """The state seen at a node (before or after its doses) and the next node's."""
        after = y_lin + add
        seen = _place([(after if post_dose else y_lin, lin), (y_drv, drv)], n_states)
        at_nodes = jnp.einsum("nmij,nj->nmi", node_a, after)  # the feeding states [n, m, F]
        forced = jnp.einsum("nik,nk->ni", node_k, sources(params, at_nodes).reshape(n, -1))
        y_drv = jnp.einsum("nij,nj->ni", phi_k, y_drv) + forced
        y_lin = jnp.einsum("nij,nj->ni", phi_a, after)
        return seen, (y_lin, y_drv)

    if pieces and (n_steps is not None or post_dose):
        raise ValueError(
            "`start` and `stop` need `n_steps=None` and `at_dose='pre'` (a piece ends "
            f"before its last node's doses), got n_steps={n_steps!r}, at_dose={at_dose!r}"
        )
    carried = None
    if n_steps is None:
        if keep_states:
            raise ValueError(
                "`keep_states` must be False with `n_steps=None` (the run to the last output "
                "keeps no states), got True; give `n_steps` to keep them"
            )
        out_node = out_index.astype(jnp.int32)
        # [subject, dose, L]: each dose's amount into its linear state
        into = (column[..., None] == jnp.arange(len(lin))) * amount[..., None]
        # a subject's nodes first … end (outputs at nodes not in them stay NaN)
        end = jnp.max(out_node, axis=-1) if stop is None else jnp.asarray(stop, jnp.int32)

        def body(carry):
            k, (y_lin, y_drv), kept = carry
            add = jnp.einsum("ne,nel->nl", (index == k).astype(params.dtype), into)
            seen, state = advance(y_lin, y_drv, add)
            observed = jax.vmap(model.observe)(seen, params)
            record = out_node == k
            if pieces:  # a subject's own nodes only, and no step past its stop
                record = record & ((k >= first) & (k <= end))[:, None]
                moving = ((k >= first) & (k < end))[:, None]
                state = tuple(
                    jnp.where(moving, a, b) for a, b in zip(state, (y_lin, y_drv), strict=True)
                )
            kept = jnp.where(record[..., None], observed[:, None, :], kept)
            return k + 1, state, kept

        kept = jnp.full((n, times.shape[-1], len(model.output_names)), jnp.nan, params.dtype)
        last = jnp.max(end)
        _, state, outputs = jax.lax.while_loop(
            lambda c: c[0] <= last, body, (jnp.min(first), state, kept)
        )
        if stop is not None:
            carried = SemilinearState(end, *state, (phi_a, node_a, phi_k, node_k))
        states = None
    else:
        # the amount into each linear state at each node, one scatter [node, subject, L]
        node = jnp.where(taken & (index <= n_steps), index, n_steps + 1).astype(jnp.int32)
        subject = jnp.broadcast_to(jnp.arange(n)[:, None], node.shape)
        added = jnp.zeros((n_steps + 2, n, len(lin)), params.dtype)  # n_steps + 1: not taken
        added = added.at[node, subject, column].add(amount)

        def scan_step(carry, add):
            seen, state = advance(*carry, add)
            return state, (seen if keep_states else None, jax.vmap(model.observe)(seen, params))

        # nodes 0 … n_steps (the last step's result is the state at node n_steps)
        _, (seen, observed) = jax.lax.scan(scan_step, state, added[: n_steps + 1])
        out_node = jnp.clip(out_index.astype(jnp.int32), 0, n_steps)

        def at_outputs(history):  # [node, subject, k] → [subject, time, k], whole rows
            return jnp.take_along_axis(history.transpose(1, 0, 2), out_node[..., None], axis=1)

        outputs = at_outputs(observed)
        states = at_outputs(seen) if keep_states else None
    off_grid = jnp.any(jnp.abs(out_node * step - times) > _ON_GRID, axis=-1)
    finite = jnp.isfinite(outputs)
    if pieces:  # a piece: the outputs it recorded
        outside = (out_node < first[:, None]) | (out_node > end[:, None])
        finite = finite | outside[..., None]
    if carried is not None:  # and the state it carries
        finite = finite & jnp.all(jnp.isfinite(carried.linear), axis=-1)[:, None, None]
        finite = finite & jnp.all(jnp.isfinite(carried.driven), axis=-1)[:, None, None]
    finite = jnp.all(finite, axis=(-1, -2))
    status = jnp.where(unsupported | off_grid, 5, jnp.where(finite, 0, 3)).astype(jnp.int32)
    if stop is not None:
        return outputs, states, status, carried
    return outputs, states, status
