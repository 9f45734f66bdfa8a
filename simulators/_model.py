"""The model definition both engines accept.

A model is a set of named states, named parameters, a right-hand side, named outputs,
and the dosing facts NONMEM keeps per compartment (bioavailability ``F`` and lag time
``ALAG``). Linear time-invariant models are flagged ``linear=True``; the exact linear
engine then takes the system matrix as the Jacobian of the right-hand side, so one
definition serves both engines.

Pattern: equinox "abstract or final" (``docs/pattern.md``); the model is an immutable
pytree whose callables and names are static.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = ["ModelDefinitionError", "Named", "ODEModel", "ParameterError"]


class ModelDefinitionError(ValueError):
    """A model was defined inconsistently (unknown name, wrong shape, ...)."""


class ParameterError(ValueError):
    """Parameter values do not match the model's parameters (unknown, missing, wrong shape)."""


def _named_fields(values: Any) -> list[str] | None:
    """The names of a mapping-like set of parameter values, or ``None`` for a plain array.

    A mapping (``{"cl": 5.0, ...}``), a pandas Series or DataFrame (its index or columns)
    and a numpy structured array (its field names) are named; anything else is an array in
    ``model.parameters`` order.
    """
    if isinstance(values, Mapping):
        return list(values.keys())
    names = getattr(getattr(values, "dtype", None), "names", None)
    if names:  # numpy structured array
        return list(names)
    if hasattr(values, "columns") and hasattr(values, "to_numpy"):  # pandas DataFrame
        return [str(c) for c in values.columns]
    if hasattr(values, "index") and hasattr(values, "to_numpy") and hasattr(values, "items"):
        return [str(k) for k in values.index]  # pandas Series
    return None


def _column(values: Any, name: str) -> Any:
    column = values[name]
    return column.to_numpy() if hasattr(column, "to_numpy") else column


class Named:
    """Read-only view of a vector by name: ``y.central`` is ``y_array[index("central")]``.

    Works on traced arrays, so right-hand sides read like the equations they implement.
    """

    __slots__ = ("_array", "_index")

    def __init__(self, names: Sequence[str], array: Array):
        object.__setattr__(self, "_index", {name: i for i, name in enumerate(names)})
        object.__setattr__(self, "_array", array)

    def __getattr__(self, name: str) -> Array:
        index = self._index
        if name not in index:
            raise AttributeError(f"no state or parameter named {name!r}; known: {', '.join(index)}")
        return self._array[..., index[name]]

    __getitem__ = __getattr__

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Named views are read-only")

    def __repr__(self) -> str:
        return f"Named({list(self._index)})"


RHS = Callable[[Float[Array, ""], Named, Named], Mapping[str, Array] | Sequence[Array]]
OutputFn = Callable[[Named, Named], Array]


class ODEModel(eqx.Module):
    """A PK/PD model: states, parameters, right-hand side, outputs.

    Parameters
    ----------
    name
        Short identifier, e.g. ``"pk_2cmt_oral"``.
    states
        State names in order; dosing compartment ``CMT=k`` (1-based) is ``states[k-1]``.
    parameters
        Parameter names in order; parameter vectors follow this order.
    rhs
        ``rhs(t, y, p) -> {state: dy/dt}`` (or a sequence in state order), with ``y`` and
        ``p`` :class:`Named` views. Dosing inputs are added by the engine: do not model
        them here.
    outputs
        ``{name: fn(y, p)}``: observed quantities, e.g. ``{"conc": lambda y, p: y.central / p.v}``.
    output_units
        Unit of each output, e.g. ``{"conc": "mg/L"}``.
    parameter_units
        Unit of each parameter (documentation and provenance).
    linear
        ``True`` when ``rhs`` is linear in ``y`` with no constant term and no explicit
        dependence on ``t``; the exact linear engine is then used by ``method="auto"``.
    initial
        ``initial(p) -> {state: value}`` for states that do not start at 0 (e.g. a PD
        baseline); missing states start at 0.
    bioavailability, lag_time
        ``{state: parameter name}``: NONMEM's ``F`` and ``ALAG`` of doses into that state.
    routes
        ``{"oral": state, "iv": state}``: where a route's doses go by default.
    citation
        Source of the model structure and parameter values.

    Examples
    --------
    A one-compartment model with Michaelis–Menten elimination, in a few lines:

    >>> mm = ODEModel(
    ...     name="mm_1cmt",
    ...     states=("central",),
    ...     parameters=("vmax", "km", "v"),
    ...     rhs=lambda t, y, p: {
    ...         "central": -p.vmax * (y.central / p.v) / (p.km + y.central / p.v)
    ...     },
    ...     outputs={"conc": lambda y, p: y.central / p.v},
    ...     output_units={"conc": "mg/L"},
    ... )
    >>> mm.n_states, mm.parameter_index("km")
    (1, 1)
    """

    name: str = eqx.field(static=True)
    states: tuple[str, ...] = eqx.field(static=True)
    parameters: tuple[str, ...] = eqx.field(static=True)
    rhs: RHS = eqx.field(static=True)
    outputs: tuple[tuple[str, OutputFn], ...] = eqx.field(static=True)
    output_units: tuple[tuple[str, str], ...] = eqx.field(static=True)
    parameter_units: tuple[tuple[str, str], ...] = eqx.field(static=True)
    linear: bool = eqx.field(static=True)
    initial: Callable[[Named], Mapping[str, Array]] | None = eqx.field(static=True)
    bioavailability: tuple[tuple[str, str], ...] = eqx.field(static=True)
    lag_time: tuple[tuple[str, str], ...] = eqx.field(static=True)
    routes: tuple[tuple[str, str], ...] = eqx.field(static=True)
    citation: str = eqx.field(static=True)

    def __init__(
        self,
        *,
        name: str,
        states: Sequence[str],
        parameters: Sequence[str],
        rhs: RHS,
        outputs: Mapping[str, OutputFn],
        output_units: Mapping[str, str] | None = None,
        parameter_units: Mapping[str, str] | None = None,
        linear: bool = False,
        initial: Callable[[Named], Mapping[str, Array]] | None = None,
        bioavailability: Mapping[str, str] | None = None,
        lag_time: Mapping[str, str] | None = None,
        routes: Mapping[str, str] | None = None,
        citation: str = "",
    ):
        self.name = name
        self.states = tuple(states)
        self.parameters = tuple(parameters)
        self.rhs = rhs
        self.outputs = tuple(dict(outputs).items())
        self.output_units = tuple((output_units or {}).items())
        self.parameter_units = tuple((parameter_units or {}).items())
        self.linear = bool(linear)
        self.initial = initial
        self.bioavailability = tuple((bioavailability or {}).items())
        self.lag_time = tuple((lag_time or {}).items())
        self.routes = tuple((routes or {}).items())
        self.citation = citation
        self._check()

    # ------------------------------------------------------------------ validation
    def _check(self) -> None:
        where = f"model {self.name!r}"
        if not self.states:
            raise ModelDefinitionError(f"{where}: `states` is empty; name at least one state")
        for field, names in (("states", self.states), ("parameters", self.parameters)):
            if len(set(names)) != len(names):
                dup = sorted({n for n in names if names.count(n) > 1})
                raise ModelDefinitionError(
                    f"{where}: `{field}` repeats {dup}; names must be unique"
                )
            for n in names:
                if not n.isidentifier():
                    raise ModelDefinitionError(
                        f"{where}: `{field}` entry {n!r} is not a valid Python identifier; "
                        "use letters, digits and underscores"
                    )
        if not self.outputs:
            raise ModelDefinitionError(f"{where}: `outputs` is empty; name at least one output")
        for field, mapping in (
            ("bioavailability", self.bioavailability),
            ("lag_time", self.lag_time),
        ):
            for state, param in mapping:
                if state not in self.states:
                    raise ModelDefinitionError(
                        f"{where}: `{field}` names state {state!r}; known states: {list(self.states)}"
                    )
                if param not in self.parameters:
                    raise ModelDefinitionError(
                        f"{where}: `{field}[{state!r}]` names parameter {param!r}; "
                        f"known parameters: {list(self.parameters)}"
                    )
        for route, state in self.routes:
            if state not in self.states:
                raise ModelDefinitionError(
                    f"{where}: route {route!r} goes to unknown state {state!r}; known states: {list(self.states)}"
                )

    # ------------------------------------------------------------------ names
    @property
    def n_states(self) -> int:
        return len(self.states)

    @property
    def n_parameters(self) -> int:
        return len(self.parameters)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.outputs)

    def parameter_index(self, name: str) -> int:
        """Position of parameter ``name`` in parameter vectors."""
        try:
            return self.parameters.index(name)
        except ValueError:
            raise ModelDefinitionError(
                f"model {self.name!r} has no parameter {name!r}; known: {list(self.parameters)}"
            ) from None

    def parameter_array(self, values: Any, *, where: str = "params") -> Array:
        """Parameter values as an array ``[..., parameter]`` in ``self.parameters`` order.

        Parameters
        ----------
        values
            By name: a mapping ``{"cl": 5.0, "v": 50.0}`` (scalars, or one value per
            subject), a pandas Series or DataFrame, or a numpy structured array; every
            name of the model must be given and no other. Or an array whose last axis is in
            ``self.parameters`` order (checked where it is used).
        where
            The argument's name, for the error message.

        Returns
        -------
        jax.Array
            float64, ``[parameter]`` for scalars, ``[subject, parameter]`` otherwise.

        Raises
        ------
        ParameterError
            For names the model does not have (listing them and the model's names), for
            names it needs that are missing, or for values of different lengths.

        Examples
        --------
        >>> model = ODEModel(name="iv1", states=("central",), parameters=("cl", "v"),
        ...                  rhs=lambda t, y, p: {"central": -p.cl / p.v * y.central},
        ...                  outputs={"conc": lambda y, p: y.central / p.v})
        >>> model.parameter_array({"v": 50.0, "cl": 5.0}).tolist()
        [5.0, 50.0]
        >>> model.parameter_array({"cl": 5.0, "vd": 50.0})
        Traceback (most recent call last):
        twinsim.simulators._model.ParameterError: `params` has a name model 'iv1' does not have: ['vd'], and lacks ['v']; the model's parameters are ['cl', 'v'] (in this order)
        """
        names = _named_fields(values)
        if names is None:
            return jnp.asarray(values, dtype=jnp.float64)
        unknown = [n for n in names if n not in self.parameters]
        missing = [n for n in self.parameters if n not in names]
        if unknown or missing:
            parts = []
            if unknown:
                parts.append(
                    f"has {'a name' if len(unknown) == 1 else 'names'} model {self.name!r} does "
                    f"not have: {unknown}"
                )
            if missing:
                parts.append(f"lacks {missing}")
            raise ParameterError(
                f"`{where}` {', and '.join(parts)}; the model's parameters are "
                f"{list(self.parameters)} (in this order)"
            )
        columns = [jnp.asarray(_column(values, n), dtype=jnp.float64) for n in self.parameters]
        shapes = {tuple(c.shape) for c in columns}
        if any(c.ndim > 1 for c in columns) or len(shapes - {()}) > 1:
            detail = {n: tuple(c.shape) for n, c in zip(self.parameters, columns, strict=True)}
            raise ParameterError(
                f"`{where}` values must be scalars or one value per subject (1-D, all of one "
                f"length), got shapes {detail}; give each parameter one number or one array "
                "of the subjects' values"
            )
        return jnp.stack(jnp.broadcast_arrays(*columns), axis=-1)

    def state_index(self, name: str) -> int:
        """Position of state ``name`` (0-based; NONMEM's CMT is this + 1)."""
        try:
            return self.states.index(name)
        except ValueError:
            raise ModelDefinitionError(
                f"model {self.name!r} has no state (compartment) {name!r}; known: {list(self.states)}"
            ) from None

    def route_compartment(self, route: str) -> int:
        """0-based compartment that doses of ``route`` (``"oral"``, ``"iv"``, ...) enter."""
        routes = dict(self.routes)
        if route not in routes:
            raise ModelDefinitionError(
                f"model {self.name!r} has no route {route!r}; known routes: {list(routes)} "
                "(or give the compartment explicitly)"
            )
        return self.state_index(routes[route])

    # ------------------------------------------------------------------ numerics
    def vector_field(
        self, t: Float[Array, ""], y: Float[Array, " state"], p: Float[Array, " param"]
    ) -> Float[Array, " state"]:
        """``dy/dt`` as an array in state order (without dosing inputs)."""
        out = self.rhs(t, Named(self.states, y), Named(self.parameters, p))
        if isinstance(out, Mapping):
            unknown = set(out) - set(self.states)
            if unknown:
                raise ModelDefinitionError(
                    f"model {self.name!r}: rhs returned derivatives for unknown states {sorted(unknown)}; "
                    f"known: {list(self.states)}"
                )
            zero = jnp.zeros_like(y[..., 0])
            out = [jnp.asarray(out.get(s, zero), dtype=y.dtype) for s in self.states]
        elif len(out) != self.n_states:
            raise ModelDefinitionError(
                f"model {self.name!r}: rhs returned {len(out)} derivatives, expected {self.n_states} "
                f"(one per state: {list(self.states)})"
            )
        return jnp.stack(
            [jnp.broadcast_to(jnp.asarray(v, dtype=y.dtype), y.shape[:-1]) for v in out], axis=-1
        )

    def system_matrix(self, p: Float[Array, " param"]) -> Float[Array, "state state"]:
        """``A`` with ``dy/dt = A y`` for a linear model (Jacobian of the right-hand side)."""
        zero_state = jnp.zeros(self.n_states, dtype=p.dtype)
        return jax.jacfwd(lambda y: self.vector_field(jnp.zeros((), p.dtype), y, p))(zero_state)

    def initial_state(self, p: Float[Array, " param"]) -> Float[Array, " state"]:
        y0 = jnp.zeros(self.n_states, dtype=p.dtype)
        if self.initial is None:
            return y0
        values = self.initial(Named(self.parameters, p))
        for state, value in values.items():
            y0 = y0.at[self.state_index(state)].set(value)
        return y0

    def observe(
        self, y: Float[Array, "... state"], p: Float[Array, " param"]
    ) -> Float[Array, "... output"]:
        """Outputs in ``output_names`` order for states ``y`` (any leading shape)."""
        ny, np_ = Named(self.states, y), Named(self.parameters, p)
        return jnp.stack(
            [jnp.broadcast_to(fn(ny, np_), y.shape[:-1]).astype(y.dtype) for _, fn in self.outputs],
            axis=-1,
        )

    def dosing_factors(
        self, p: Float[Array, " param"]
    ) -> tuple[Float[Array, " state"], Float[Array, " state"]]:
        """Bioavailability and lag time of doses into each state."""
        f = jnp.ones(self.n_states, dtype=p.dtype)
        lag = jnp.zeros(self.n_states, dtype=p.dtype)
        for state, param in self.bioavailability:
            f = f.at[self.state_index(state)].set(p[self.parameter_index(param)])
        for state, param in self.lag_time:
            lag = lag.at[self.state_index(state)].set(p[self.parameter_index(param)])
        return f, lag
