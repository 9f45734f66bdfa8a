"""Pharmacodynamic building blocks, composed onto any PK model.

Each helper takes an :class:`~twinsim.priors.ODEModel` and returns a new one with extra
states, parameters and outputs appended; the original model is unchanged. The drug signal
is one of the model's outputs (``driver``, by default the plasma concentration
``"conc"``; ``"ce"`` after :func:`with_effect_compartment`), so the helpers compose:

>>> from twinsim.priors import one_compartment, with_effect_compartment, with_emax
>>> model = with_emax(with_effect_compartment(one_compartment(absorption=True)), driver="ce")
>>> model.output_names, model.linear
(('conc', 'ce', 'effect'), True)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
from jaxtyping import Array

from ..simulators._model import ModelDefinitionError, Named, ODEModel

__all__ = [
    "extend_model",
    "with_effect_compartment",
    "with_emax",
    "with_indirect_response",
]

EFFECT_COMPARTMENT_CITATION = (
    "Sheiner LB, Stanski DR, Vozeh S, Miller RD, Ham J. Simultaneous modeling of "
    "pharmacokinetics and pharmacodynamics: application to d-tubocurarine. Clin Pharmacol "
    "Ther. 1979;25(3):358-371"
)
EMAX_CITATION = (
    "Holford NHG, Sheiner LB. Understanding the dose-effect relationship: clinical application "
    "of pharmacokinetic-pharmacodynamic models. Clin Pharmacokinet. 1981;6(6):429-453 "
    "(sigmoid Emax after Hill AV. J Physiol. 1910;40:iv-vii)"
)
INDIRECT_RESPONSE_CITATION = (
    "Dayneka NL, Garg V, Jusko WJ. Comparison of four basic models of indirect "
    "pharmacodynamic responses. J Pharmacokinet Biopharm. 1993;21(4):457-478"
)

_KINDS = {1: 1, 2: 2, 3: 3, 4: 4, "I": 1, "II": 2, "III": 3, "IV": 4}


def extend_model(
    model: ODEModel,
    *,
    name: str,
    states: Sequence[str] = (),
    parameters: Sequence[str] = (),
    rhs: Callable[[Array, Named, Named], Mapping[str, Array]] | None = None,
    outputs: Mapping[str, Callable[[Named, Named], Array]] | None = None,
    output_units: Mapping[str, str] | None = None,
    parameter_units: Mapping[str, str] | None = None,
    initial: Callable[[Named], Mapping[str, Array]] | None = None,
    linear: bool | None = None,
    citation: str = "",
) -> ODEModel:
    """A new model: ``model`` with states, parameters, equations and outputs appended.

    The right-hand side, outputs and initial state of ``model`` are reused unchanged (they
    read states and parameters by name), so every helper in this module is a few lines on
    top of this function.

    Parameters
    ----------
    model
        The model to extend.
    name
        Name of the new model.
    states, parameters
        Names appended after those of ``model``.
    rhs
        ``rhs(t, y, p) -> {state: dy/dt}`` for the new states; it may read any state or
        parameter, old or new.
    outputs
        New outputs ``{name: fn(y, p)}``, appended after those of ``model``.
    output_units, parameter_units
        Units of the new outputs and parameters.
    initial
        ``initial(p) -> {state: value}`` for new states that do not start at 0.
    linear
        Whether the new model is linear; by default it is linear when ``model`` is.
        Pass ``False`` when the new equations are nonlinear in the states.
    citation
        Source of the added equations; appended to ``model.citation``.

    Returns
    -------
    ODEModel
        Dosing facts (bioavailability, lag times, routes) are those of ``model``.

    Raises
    ------
    ModelDefinitionError
        If a new state, parameter or output name is already used by ``model``.

    Examples
    --------
    A first-order metabolite formed from the parent's elimination, 1-compartment IV parent:

    >>> from twinsim.priors import one_compartment
    >>> parent = one_compartment()
    >>> model = extend_model(parent, name="parent_metabolite",
    ...     states=["metabolite"], parameters=["cl_m", "v_m"],
    ...     rhs=lambda t, y, p: {"metabolite": p.cl * y.central / p.v - p.cl_m * y.metabolite / p.v_m},
    ...     outputs={"conc_m": lambda y, p: y.metabolite / p.v_m})
    >>> model.states, model.parameters, model.linear
    (('central', 'metabolite'), ('cl', 'v', 'cl_m', 'v_m'), True)
    """
    outputs = dict(outputs or {})
    for field, old, new in (
        ("state", model.states, states),
        ("parameter", model.parameters, parameters),
        ("output", model.output_names, outputs),
    ):
        clash = sorted(set(old) & set(new))
        if clash:
            raise ModelDefinitionError(
                f"cannot extend model {model.name!r} into {name!r}: {field} name(s) {clash} "
                f"already exist (model {field}s: {list(old)}); a building block can be added "
                "once per model, or write the combined model with ODEModel directly"
            )

    base_rhs, base_initial, base_states = model.rhs, model.initial, model.states

    def combined_rhs(t, y: Named, p: Named) -> dict:
        base = base_rhs(t, y, p)
        if not isinstance(base, Mapping):
            base = dict(zip(base_states, base, strict=True))
        else:
            base = dict(base)
        if rhs is not None:
            base.update(rhs(t, y, p))
        return base

    def combined_initial(p: Named) -> dict:
        values = dict(base_initial(p)) if base_initial is not None else {}
        if initial is not None:
            values.update(initial(p))
        return values

    has_initial = base_initial is not None or initial is not None
    return ODEModel(
        name=name,
        states=(*model.states, *states),
        parameters=(*model.parameters, *parameters),
        rhs=combined_rhs,
        outputs={**dict(model.outputs), **outputs},
        output_units={**dict(model.output_units), **dict(output_units or {})},
        parameter_units={
            **dict(model.parameter_units),
            **{k: v for k, v in (parameter_units or {}).items() if k in parameters},
        },
        linear=model.linear if linear is None else linear,
        initial=combined_initial if has_initial else None,
        bioavailability=dict(model.bioavailability),
        lag_time=dict(model.lag_time),
        routes=dict(model.routes),
        citation="; ".join(c for c in (model.citation, citation) if c),
    )


def _driver(model: ODEModel, driver: str, helper: str) -> Callable[[Named, Named], Array]:
    outputs = dict(model.outputs)
    if driver not in outputs:
        raise ModelDefinitionError(
            f"{helper}: `driver` {driver!r} is not an output of model {model.name!r}; "
            f"known outputs: {list(outputs)} (use 'ce' after with_effect_compartment)"
        )
    return outputs[driver]


def _occupancy(conc: Array, c50: Array, gamma: Array | None) -> Array:
    """``C^γ / (C50^γ + C^γ)`` in [0, 1), with ``C`` clipped at 0.

    Solver round-off can make a concentration slightly negative near 0, where a
    non-integer power is NaN; the double ``where`` keeps gradients finite at ``C = 0``.
    """
    positive = conc > 0
    safe = jnp.where(positive, conc, 1.0)
    if gamma is None:
        return jnp.where(positive, safe / (c50 + safe), 0.0)
    # The logistic form of C^γ / (C50^γ + C^γ) cannot overflow for large γ or tiny C.
    return jnp.where(positive, jax.nn.sigmoid(gamma * (jnp.log(safe) - jnp.log(c50))), 0.0)


def with_effect_compartment(model: ODEModel, *, driver: str = "conc") -> ODEModel:
    """Append a hypothetical effect compartment (Sheiner et al. 1979).

    ``dCe/dt = ke0 · (C − Ce)``: the effect-site concentration ``Ce`` follows ``C`` (the
    ``driver`` output) with first-order delay ``ke0``; at steady state ``Ce = C``. The
    compartment holds negligible drug mass, so its state *is* the concentration ``Ce``.

    Parameters
    ----------
    model
        A PK model with output ``driver``.
    driver
        Name of the concentration output that drives the effect site.

    Returns
    -------
    ODEModel
        ``model`` plus state ``effect_site`` (mg/L), parameter ``ke0`` (1/h) and output
        ``ce`` (mg/L). Linear when ``model`` is linear (``C`` is linear in the states for
        every PK model of :mod:`twinsim.priors`).

    Raises
    ------
    ModelDefinitionError
        If ``driver`` is not an output of ``model`` or the model already has ``ke0``.

    Examples
    --------
    >>> from twinsim.priors import two_compartment
    >>> model = with_effect_compartment(two_compartment())
    >>> model.states, model.output_names
    (('central', 'peripheral1', 'effect_site'), ('conc', 'ce'))
    """
    concentration = _driver(model, driver, "with_effect_compartment")
    return extend_model(
        model,
        name=f"{model.name}_ce",
        states=["effect_site"],
        parameters=["ke0"],
        rhs=lambda t, y, p: {"effect_site": p.ke0 * (concentration(y, p) - y.effect_site)},
        outputs={"ce": lambda y, p: y.effect_site},
        output_units={"ce": "mg/L"},
        parameter_units={"ke0": "1/h"},
        citation=EFFECT_COMPARTMENT_CITATION,
    )


def with_emax(
    model: ODEModel,
    *,
    driver: str = "conc",
    hill: bool = True,
    output: str = "effect",
    unit: str = "1",
) -> ODEModel:
    """Append a direct (sigmoid) Emax effect as an output.

    ``E = e0 + emax · C^γ / (ec50^γ + C^γ)`` with ``C`` the ``driver`` output (plasma or
    effect-site concentration). A negative ``emax`` describes an inhibitory effect. The
    effect is an output, not a state, so the model stays linear when ``model`` is.

    Parameters
    ----------
    model
        A model with output ``driver``.
    driver
        Concentration output driving the effect: ``"conc"`` or, after
        :func:`with_effect_compartment`, ``"ce"``.
    hill
        Include the Hill coefficient ``gamma``; ``False`` gives the hyperbolic Emax model
        (``gamma = 1``).
    output
        Name of the effect output.
    unit
        Unit of the effect (and of ``e0`` and ``emax``), e.g. ``"mmHg"``, ``"%"``.

    Returns
    -------
    ODEModel
        ``model`` plus parameters ``e0`` (baseline, ``unit``), ``emax`` (maximum change from
        baseline, ``unit``), ``ec50`` (concentration at half-maximal effect, mg/L) and, with
        ``hill``, ``gamma`` (Hill coefficient, 1), and the output ``output``.

    Raises
    ------
    ModelDefinitionError
        If ``driver`` is not an output of ``model``, or a name is already used.

    Examples
    --------
    >>> from twinsim.priors import one_compartment
    >>> model = with_emax(one_compartment(), hill=False, unit="mmHg")
    >>> model.parameters, dict(model.output_units)["effect"]
    (('cl', 'v', 'e0', 'emax', 'ec50'), 'mmHg')
    """
    concentration = _driver(model, driver, "with_emax")
    parameters = ["e0", "emax", "ec50"] + (["gamma"] if hill else [])

    def effect(y: Named, p: Named) -> Array:
        gamma = p.gamma if hill else None
        return p.e0 + p.emax * _occupancy(concentration(y, p), p.ec50, gamma)

    return extend_model(
        model,
        name=f"{model.name}_{'sigmoid_' if hill else ''}emax",
        parameters=parameters,
        outputs={output: effect},
        output_units={output: unit},
        # "gamma" is dropped by extend_model when hill=False (units of absent parameters).
        parameter_units={"e0": unit, "emax": unit, "ec50": "mg/L", "gamma": "1"},
        citation=EMAX_CITATION,
    )


def with_indirect_response(
    model: ODEModel,
    kind: int | str,
    *,
    driver: str = "conc",
    hill: bool = False,
    unit: str = "1",
) -> ODEModel:
    """Append an indirect response model I–IV (Dayneka, Garg & Jusko 1993).

    The response ``R`` is produced at zero-order rate ``kin`` and lost at first-order rate
    ``kout``; the drug (``C``, the ``driver`` output) inhibits or stimulates one of them:

    ====  ===========================================================
    kind  equation
    ====  ===========================================================
    I     ``dR/dt = kin · (1 − imax · C/(ic50 + C)) − kout · R``
    II    ``dR/dt = kin − kout · (1 − imax · C/(ic50 + C)) · R``
    III   ``dR/dt = kin · (1 + emax · C/(ec50 + C)) − kout · R``
    IV    ``dR/dt = kin − kout · (1 + emax · C/(ec50 + C)) · R``
    ====  ===========================================================

    ``R`` starts at its baseline ``R0 = kin / kout``. With ``hill``, ``C/(c50 + C)``
    becomes ``C^γ/(c50^γ + C^γ)``.

    Parameters
    ----------
    model
        A model with output ``driver``.
    kind
        1, 2, 3 or 4 (or ``"I"``, ``"II"``, ``"III"``, ``"IV"``).
    driver
        Concentration output driving the response (``"conc"``, or ``"ce"``).
    hill
        Add a Hill coefficient ``gamma``.
    unit
        Unit of the response ``R``, e.g. ``"mg/dL"``; ``kin`` is in ``unit/h``.

    Returns
    -------
    ODEModel
        ``model`` plus state ``response`` (``unit``, initial ``kin/kout``), output
        ``response`` and parameters ``kin`` (``unit``/h), ``kout`` (1/h) and ``imax``
        (fraction in [0, 1]), ``ic50`` (mg/L) for kinds I, II or ``emax`` (fold
        stimulation, > 0), ``ec50`` (mg/L) for kinds III, IV [, ``gamma``]. Nonlinear.

    Raises
    ------
    ModelDefinitionError
        For an unknown ``kind``, a ``driver`` that is not an output, or a name already used.

    Examples
    --------
    >>> from twinsim.priors import one_compartment
    >>> model = with_indirect_response(one_compartment(absorption=True), kind=3)
    >>> model.parameters
    ('cl', 'v', 'ka', 'f_oral', 'kin', 'kout', 'emax', 'ec50')
    >>> import jax.numpy as jnp
    >>> float(model.initial_state(jnp.array([5.0, 50.0, 1.0, 1.0, 10.0, 0.5, 2.0, 1.0]))[-1])
    20.0
    """
    key = kind.upper() if isinstance(kind, str) else kind
    if isinstance(kind, bool) or key not in _KINDS:
        raise ModelDefinitionError(
            f"`kind` must be 1, 2, 3 or 4 (or 'I'-'IV') for the indirect response models of "
            f"Dayneka et al. 1993, got {kind!r}; 1/2 inhibit kin/kout, 3/4 stimulate kin/kout"
        )
    kind = _KINDS[key]
    concentration = _driver(model, driver, "with_indirect_response")
    inhibit = kind in (1, 2)
    on_production = kind in (1, 3)
    magnitude, potency = ("imax", "ic50") if inhibit else ("emax", "ec50")
    sign = -1.0 if inhibit else 1.0

    def rhs(t, y: Named, p: Named) -> dict:
        gamma = p.gamma if hill else None
        factor = 1.0 + sign * p[magnitude] * _occupancy(concentration(y, p), p[potency], gamma)
        if on_production:
            return {"response": p.kin * factor - p.kout * y.response}
        return {"response": p.kin - p.kout * factor * y.response}

    parameters = ["kin", "kout", magnitude, potency] + (["gamma"] if hill else [])
    return extend_model(
        model,
        name=f"{model.name}_idr{kind}",
        states=["response"],
        parameters=parameters,
        rhs=rhs,
        outputs={"response": lambda y, p: y.response},
        output_units={"response": unit},
        parameter_units={
            "kin": f"{unit}/h",
            "kout": "1/h",
            magnitude: "1",
            potency: "mg/L",
            "gamma": "1",
        },
        initial=lambda p: {"response": p.kin / p.kout},
        linear=False,
        citation=INDIRECT_RESPONSE_CITATION,
    )
