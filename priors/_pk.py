"""Pharmacokinetic building blocks: mammillary disposition with IV, first-order or transit
absorption, and linear or Michaelis–Menten elimination.

One builder, :func:`pk_model`, makes every combination; :func:`one_compartment`,
:func:`two_compartment`, :func:`three_compartment`, :func:`michaelis_menten` and
:func:`transit_compartment` are the usual spellings of it. The models are parameterised
by clearances and volumes (not micro-constants) and amounts are in mg, so the output
``conc = central / V`` is in mg/L.

State names are shared by every model built here, so regimens, observation records and
composition helpers (:mod:`twinsim.priors._pd`) can rely on them:

==============  ==========================================================
state           meaning
==============  ==========================================================
``transit0``…   transit chain (transit absorption only), mg; doses enter ``transit0``
``depot``       absorption compartment (oral models), mg
``central``     central compartment, mg
``peripheral1`` first peripheral compartment (2- and 3-compartment), mg
``peripheral2`` second peripheral compartment (3-compartment), mg
==============  ==========================================================
"""

from __future__ import annotations

from typing import Literal

from ..simulators._model import ModelDefinitionError, Named, ODEModel

__all__ = [
    "michaelis_menten",
    "one_compartment",
    "pk_model",
    "three_compartment",
    "transit_compartment",
    "two_compartment",
]

Absorption = Literal["first_order", "transit"] | bool | None
Elimination = Literal["linear", "michaelis_menten"]

MAMMILLARY_CITATION = (
    "Gabrielsson J, Weiner D. Pharmacokinetic and Pharmacodynamic Data Analysis: Concepts "
    "and Applications, 5th ed. Swedish Pharmaceutical Press; 2016 (mammillary models in "
    "clearance/volume form, as NONMEM ADVAN1-4/11/12 TRANS2/4/6)"
)
MICHAELIS_MENTEN_CITATION = (
    "Michaelis L, Menten ML. Die Kinetik der Invertinwirkung. Biochem Z. 1913;49:333-369; "
    "capacity-limited elimination as in Gabrielsson & Weiner 2016, ch. 2"
)
TRANSIT_CITATION = (
    "Savic RM, Jonker DM, Kerbusch T, Karlsson MO. Implementation of a transit compartment "
    "model for describing drug absorption in pharmacokinetic studies. J Pharmacokinet "
    "Pharmacodyn. 2007;34(5):711-726"
)

# (flow parameter, volume parameter, state) of each peripheral compartment.
_PERIPHERALS = {
    1: (),
    2: (("q", "v2", "peripheral1"),),
    3: (("q2", "v2", "peripheral1"), ("q3", "v3", "peripheral2")),
}

_UNITS = {
    "cl": "L/h",
    "v": "L",
    "v1": "L",
    "q": "L/h",
    "v2": "L",
    "q2": "L/h",
    "q3": "L/h",
    "v3": "L",
    "vmax": "mg/h",
    "km": "mg/L",
    "ka": "1/h",
    "mtt": "h",
    "f_oral": "1",
    "lag_oral": "h",
}


def pk_model(
    compartments: int = 1,
    *,
    absorption: Absorption = None,
    n_transit: int | None = None,
    lag: bool = False,
    elimination: Elimination = "linear",
) -> ODEModel:
    """Mammillary PK model with optional absorption, in clearance/volume form.

    Parameters
    ----------
    compartments
        Number of disposition compartments: 1, 2 or 3.
    absorption
        ``None`` (or ``False``): IV only, doses go to ``central``.
        ``"first_order"`` (or ``True``): an absorption ``depot`` emptying into ``central``
        at rate ``ka``; oral doses go to ``depot``.
        ``"transit"``: Savic's transit chain ``transit0 … transit{n}`` ahead of the depot;
        oral doses go to ``transit0``.
    n_transit
        Number of transit compartments ``n`` (≥ 1) after the dosing compartment, for
        ``absorption="transit"`` only. The chain has ``n + 1`` compartments, each emptied
        at ``ktr = (n + 1) / mtt`` (Savic et al. 2007, eq. 4), so ``mtt`` is the mean time
        from dose to arrival in the depot.
    lag
        Add an absorption lag time ``lag_oral`` (h) to oral doses (NONMEM ``ALAG``).
        Needs absorption.
    elimination
        ``"linear"``: clearance ``cl`` from ``central`` (the model is then linear).
        ``"michaelis_menten"``: capacity-limited elimination
        ``vmax · C / (km + C)`` from ``central`` (nonlinear).

    Returns
    -------
    ODEModel
        Parameters, in order (units):

        - disposition, 1 compartment: ``cl`` (L/h), ``v`` (L);
          2 compartments: ``cl``, ``v1``, ``q`` (L/h), ``v2`` (L);
          3 compartments: ``cl``, ``v1``, ``q2``, ``v2``, ``q3``, ``v3``.
          With Michaelis–Menten elimination ``cl`` is replaced by ``vmax`` (mg/h),
          ``km`` (mg/L).
        - absorption: ``mtt`` (h, transit only), ``ka`` (1/h), ``f_oral`` (bioavailability
          of oral doses, fraction), ``lag_oral`` (h, with ``lag=True``).

        Output ``conc`` = ``central / v`` (``v1`` for 2 and 3 compartments), mg/L.
        Routes: ``"iv"`` → ``central``; ``"oral"`` → ``depot`` (or ``transit0``).

    Raises
    ------
    ModelDefinitionError
        For an unsupported number of compartments, an unknown absorption or elimination,
        ``n_transit`` missing, below 1 or given without transit absorption, or ``lag``
        without absorption.

    Examples
    --------
    >>> model = pk_model(2, absorption="first_order")
    >>> model.parameters
    ('cl', 'v1', 'q', 'v2', 'ka', 'f_oral')
    >>> model.states, model.linear
    (('depot', 'central', 'peripheral1'), True)
    >>> pk_model(1, absorption="transit", n_transit=2, elimination="michaelis_menten").states
    ('transit0', 'transit1', 'transit2', 'depot', 'central')
    """
    absorption = _check_absorption(absorption)
    if compartments not in _PERIPHERALS:
        raise ModelDefinitionError(
            f"`compartments` must be 1, 2 or 3, got {compartments!r}; "
            "larger mammillary models can be written directly with ODEModel"
        )
    if elimination not in ("linear", "michaelis_menten"):
        raise ModelDefinitionError(
            f"`elimination` must be 'linear' or 'michaelis_menten', got {elimination!r}"
        )
    if absorption == "transit":
        if n_transit is None:
            raise ModelDefinitionError(
                "`n_transit` is required for absorption='transit'; give the number of transit "
                "compartments, e.g. n_transit=3"
            )
        if isinstance(n_transit, bool) or not isinstance(n_transit, int) or n_transit < 1:
            raise ModelDefinitionError(
                f"`n_transit` must be an integer >= 1, got {n_transit!r}; for no transit delay "
                "use absorption='first_order'"
            )
    elif n_transit is not None:
        raise ModelDefinitionError(
            f"`n_transit` ({n_transit!r}) is only used with absorption='transit', got "
            f"absorption={absorption!r}; drop n_transit or set absorption='transit'"
        )
    if lag and absorption is None:
        raise ModelDefinitionError(
            "`lag`=True needs an absorption route (absorption='first_order' or 'transit'); "
            "an IV model has no absorption lag"
        )

    central_volume = "v" if compartments == 1 else "v1"
    peripherals = _PERIPHERALS[compartments]
    michaelis = elimination == "michaelis_menten"

    parameters = ["vmax", "km"] if michaelis else ["cl"]
    parameters.append(central_volume)
    for flow, volume, _ in peripherals:
        parameters += [flow, volume]
    states = ["central"] + [state for _, _, state in peripherals]
    transit_states: list[str] = []
    if absorption == "transit":
        transit_states = [f"transit{i}" for i in range(n_transit + 1)]
        parameters.append("mtt")
    if absorption is not None:
        states = [*transit_states, "depot", *states]
        parameters += ["ka", "f_oral"]
        if lag:
            parameters.append("lag_oral")

    def rhs(t, y: Named, p: Named) -> dict:
        conc = y.central / p[central_volume]
        if michaelis:
            elimination_rate = p.vmax * conc / (p.km + conc)
        else:
            elimination_rate = p.cl * conc
        d_central = -elimination_rate
        out = {}
        for flow, volume, state in peripherals:
            distribution = p[flow] * (conc - y[state] / p[volume])
            d_central = d_central - distribution
            out[state] = distribution
        if absorption is not None:
            absorbed = p.ka * y.depot
            d_central = d_central + absorbed
            into_depot = 0.0
            if transit_states:
                ktr = (len(transit_states)) / p.mtt
                upstream = 0.0
                for state in transit_states:
                    out[state] = upstream - ktr * y[state]
                    upstream = ktr * y[state]
                into_depot = upstream
            out["depot"] = into_depot - absorbed
        out["central"] = d_central
        return out

    oral_state = (transit_states or ["depot"])[0]
    name = f"pk_{compartments}cmt"
    if michaelis:
        name += "_mm"
    if absorption == "first_order":
        name += "_oral"
    elif absorption == "transit":
        name += f"_transit{n_transit}"
    else:
        name += "_iv"
    if lag:
        name += "_lag"
    citation = MAMMILLARY_CITATION
    if michaelis:
        citation += "; " + MICHAELIS_MENTEN_CITATION
    if absorption == "transit":
        citation += "; " + TRANSIT_CITATION

    return ODEModel(
        name=name,
        states=states,
        parameters=parameters,
        rhs=rhs,
        outputs={"conc": lambda y, p: y.central / p[central_volume]},
        output_units={"conc": "mg/L"},
        parameter_units={name_: _UNITS[name_] for name_ in parameters},
        linear=not michaelis,
        bioavailability={oral_state: "f_oral"} if absorption is not None else None,
        lag_time={oral_state: "lag_oral"} if lag else None,
        routes={"oral": oral_state, "iv": "central"}
        if absorption is not None
        else {"iv": "central"},
        citation=citation,
    )


def _check_absorption(absorption: Absorption) -> Literal["first_order", "transit"] | None:
    if absorption is True:
        return "first_order"
    if absorption is False or absorption is None:
        return None
    if absorption in ("first_order", "transit"):
        return absorption
    raise ModelDefinitionError(
        f"`absorption` must be None, 'first_order' or 'transit' (or True/False), got {absorption!r}"
    )


def one_compartment(*, absorption: Absorption = None, lag: bool = False) -> ODEModel:
    """One-compartment model with linear elimination.

    ``dA/dt = -cl/v · A`` (plus first-order absorption ``ka · depot`` when oral).

    Parameters
    ----------
    absorption
        ``None``: IV only. ``"first_order"`` (or ``True``): depot with ``ka`` (1/h) and
        bioavailability ``f_oral``. See :func:`pk_model` (and :func:`transit_compartment`
        for transit absorption).
    lag
        Add an absorption lag time ``lag_oral`` (h).

    Returns
    -------
    ODEModel
        Parameters ``cl`` (L/h), ``v`` (L) [, ``ka`` (1/h), ``f_oral``, ``lag_oral`` (h)];
        output ``conc`` (mg/L); linear.

    Raises
    ------
    ModelDefinitionError
        For an unknown ``absorption`` or ``lag`` without absorption.

    Examples
    --------
    >>> model = one_compartment(absorption=True, lag=True)
    >>> model.parameters, dict(model.routes)
    (('cl', 'v', 'ka', 'f_oral', 'lag_oral'), {'oral': 'depot', 'iv': 'central'})
    """
    return pk_model(1, absorption=absorption, lag=lag)


def two_compartment(*, absorption: Absorption = None, lag: bool = False) -> ODEModel:
    """Two-compartment model with linear elimination.

    Parameters
    ----------
    absorption
        ``None``: IV only. ``"first_order"`` (or ``True``): depot with ``ka`` (1/h) and
        bioavailability ``f_oral``. See :func:`pk_model`.
    lag
        Add an absorption lag time ``lag_oral`` (h).

    Returns
    -------
    ODEModel
        Parameters ``cl`` (L/h), ``v1`` (L), ``q`` (inter-compartmental clearance, L/h),
        ``v2`` (peripheral volume, L) [, ``ka``, ``f_oral``, ``lag_oral``]; states
        [``depot``,] ``central``, ``peripheral1``; output ``conc = central / v1`` (mg/L);
        linear.

    Raises
    ------
    ModelDefinitionError
        For an unknown ``absorption`` or ``lag`` without absorption.

    Examples
    --------
    >>> two_compartment().parameters
    ('cl', 'v1', 'q', 'v2')
    """
    return pk_model(2, absorption=absorption, lag=lag)


def three_compartment(*, absorption: Absorption = None, lag: bool = False) -> ODEModel:
    """Three-compartment model with linear elimination.

    Parameters
    ----------
    absorption
        ``None``: IV only. ``"first_order"`` (or ``True``): depot with ``ka`` (1/h) and
        bioavailability ``f_oral``. See :func:`pk_model`.
    lag
        Add an absorption lag time ``lag_oral`` (h).

    Returns
    -------
    ODEModel
        Parameters ``cl`` (L/h), ``v1`` (L), ``q2`` (L/h), ``v2`` (L), ``q3`` (L/h),
        ``v3`` (L) [, ``ka``, ``f_oral``, ``lag_oral``]; states [``depot``,] ``central``,
        ``peripheral1``, ``peripheral2``; output ``conc = central / v1`` (mg/L); linear.

    Raises
    ------
    ModelDefinitionError
        For an unknown ``absorption`` or ``lag`` without absorption.

    Examples
    --------
    >>> three_compartment(absorption="first_order").states
    ('depot', 'central', 'peripheral1', 'peripheral2')
    """
    return pk_model(3, absorption=absorption, lag=lag)


def michaelis_menten(
    *, absorption: Absorption = None, lag: bool = False, compartments: int = 1
) -> ODEModel:
    """Model with capacity-limited (Michaelis–Menten) elimination.

    ``dA/dt = -vmax · C / (km + C)`` with ``C = A / v`` (plus absorption when oral).

    Parameters
    ----------
    absorption
        ``None``: IV only. ``"first_order"`` (or ``True``) or ``"transit"``: see
        :func:`pk_model`.
    lag
        Add an absorption lag time ``lag_oral`` (h).
    compartments
        Disposition compartments (1 by default; 2 or 3 use ``v1``, ``q``/``q2``, ...).

    Returns
    -------
    ODEModel
        Parameters ``vmax`` (maximum elimination rate, mg/h), ``km`` (concentration at
        half-maximal elimination rate, mg/L), ``v`` (L) [, ``ka``, ``f_oral``,
        ``lag_oral``]; output ``conc`` (mg/L); nonlinear.

    Raises
    ------
    ModelDefinitionError
        As :func:`pk_model`.

    Examples
    --------
    >>> model = michaelis_menten(absorption=True)
    >>> model.parameters, model.linear
    (('vmax', 'km', 'v', 'ka', 'f_oral'), False)
    """
    return pk_model(compartments, absorption=absorption, lag=lag, elimination="michaelis_menten")


def transit_compartment(
    n_transit: int,
    *,
    compartments: int = 1,
    lag: bool = False,
    elimination: Elimination = "linear",
) -> ODEModel:
    """Transit-compartment absorption (Savic et al. 2007) ahead of a mammillary model.

    An oral dose enters ``transit0`` and passes through ``n_transit`` further compartments,
    each emptied at ``ktr = (n_transit + 1) / mtt``, into the ``depot``, which empties into
    ``central`` at ``ka``. The amount in ``transit{n}`` after a bolus ``D`` is
    ``D · (ktr·t)^n / n! · e^{-ktr·t}`` (Savic et al. 2007, eq. 3). Savic et al. also
    estimate a non-integer ``n`` through that closed form; here ``n`` is an integer fixed
    at model build time, which keeps the model linear and usable with any dosing regimen.

    Parameters
    ----------
    n_transit
        Number of transit compartments after the dosing compartment, ≥ 1.
    compartments
        Disposition compartments: 1, 2 or 3.
    lag
        Add an absorption lag time ``lag_oral`` (h) on top of the transit delay.
    elimination
        ``"linear"`` or ``"michaelis_menten"``; see :func:`pk_model`.

    Returns
    -------
    ODEModel
        Parameters: disposition (see :func:`pk_model`), ``mtt`` (mean transit time to the
        depot, h), ``ka`` (1/h), ``f_oral``; output ``conc`` (mg/L). Linear with linear
        elimination.

    Raises
    ------
    ModelDefinitionError
        If ``n_transit`` is not an integer ≥ 1, or as :func:`pk_model`.

    Examples
    --------
    >>> model = transit_compartment(3)
    >>> model.states
    ('transit0', 'transit1', 'transit2', 'transit3', 'depot', 'central')
    >>> model.parameters, dict(model.routes)["oral"]
    (('cl', 'v', 'mtt', 'ka', 'f_oral'), 'transit0')
    """
    return pk_model(
        compartments, absorption="transit", n_transit=n_transit, lag=lag, elimination=elimination
    )
