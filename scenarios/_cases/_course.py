"""Time courses of a teaching case: a drug model whose clearance changes during the course.

A case's story has one *event* (renal function falls, the patient stops smoking, a second
drug is started) that changes a drug's clearance from a time ``t0`` on. The library's
population models hold their covariates constant over a simulation, so the case generator
wraps a model's structural part: the clearance parameter ``cl`` is multiplied by

    f(t) = ratio ** w(t),   w(t) = 0 before t0,   w(t) = 1 − 2^(−(t − t0) / t½) after,

a log-linear approach from the value before the event to ``ratio`` times it, with half-time
``t½``. ``ratio`` comes from the population model's own covariate relation whenever the
model has the covariate (vancomycin's ``crcl``), so the course is the model's clearance at
each time's covariate value; for a power model ``CL ∝ CrCL^θ`` a log-linear CrCL course
gives exactly this ``f(t)``. Theophylline's smoking cessation needs no wrapper: its model
carries the quit time itself (``smoking_quit_time``).

Amiodarone added to warfarin
----------------------------
:func:`inhibitor_clearance_ratio` uses the model's own covariate when there is one
(``comed_amiodarone`` or ``amiodarone`` among its covariates) and otherwise the literature
factor below. The library's warfarin model carries ``amiodarone`` (S-warfarin CL × the
IWPC 2009 dose ratio, ≈ 0.83, averaged over the maintenance doses of that cohort), so its
cases use that factor; the table serves models without such a covariate.

* Magnitude: the warfarin dose needed for the same INR falls by about 25, 30, 35 and 40 %
  at amiodarone maintenance doses of 100, 200, 300 and 400 mg/day (Sanoski & Bauman 2002,
  43 patients on stable warfarin, INR 2–3). With linear S-warfarin kinetics the dose needed
  for the same exposure is proportional to clearance, so the same fractions are taken as
  the reduction of S-warfarin clearance. Almog et al. (1985) measured warfarin clearance
  1.4 vs 3.1 mL/min in patients with and without amiodarone (a 55 % reduction at higher
  amiodarone doses), in the same direction.
* Onset: the potentiation appears within the first 1–2 weeks (Kerin et al. 1988) and
  peaks around 7 weeks (Sanoski & Bauman 2002); a half-time of 7 days for ``w(t)`` is an
  assumption of this implementation between those two reports.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np

from ...priors import PopulationModel
from ...simulators import Named, ODEModel

__all__ = [
    "AMIODARONE_CL_REDUCTION",
    "AMIODARONE_ONSET_HALF_TIME_H",
    "AMIODARONE_SOURCES",
    "CHANGE_PARAMETERS",
    "changing_clearance_model",
    "clearance_factor",
    "inhibitor_clearance_ratio",
]

SANOSKI_2002 = (
    "Sanoski CA, Bauman JL. Clinical observations with the amiodarone/warfarin interaction: "
    "dosing relationships with long-term therapy. Chest. 2002;121(1):19-23"
)
ALMOG_1985 = (
    "Almog S, Shafran N, Halkin H, et al. Mechanism of warfarin potentiation by amiodarone: "
    "dose- and concentration-dependent inhibition of warfarin elimination. Eur J Clin "
    "Pharmacol. 1985;28(3):257-261"
)
KERIN_1988 = (
    "Kerin NZ, Blevins RD, Goldman L, Faitel K, Rubenfire M. The incidence, magnitude, and "
    "time course of the amiodarone-warfarin interaction. Arch Intern Med. "
    "1988;148(8):1779-1781"
)
AMIODARONE_SOURCES = (SANOSKI_2002, ALMOG_1985, KERIN_1988)

#: Fractional reduction of S-warfarin clearance by amiodarone maintenance dose (mg/day),
#: taken from the warfarin dose reductions of Sanoski & Bauman 2002 (see the module text).
AMIODARONE_CL_REDUCTION: dict[float, float] = {100.0: 0.25, 200.0: 0.30, 300.0: 0.35, 400.0: 0.40}
#: Half-time of the onset of the interaction, h (assumption: 7 days).
AMIODARONE_ONSET_HALF_TIME_H = 7 * 24.0

#: Parameters the wrapper appends to a structural model's own.
CHANGE_PARAMETERS = ("cl_change_time", "cl_change_half_time", "cl_change_ratio")


def clearance_factor(t, t0, half_time, ratio):
    """``ratio ** w(t)`` with ``w`` the approach after ``t0`` (see the module docstring).

    Works on numbers and on traced arrays alike.

    Examples
    --------
    >>> float(clearance_factor(0.0, 10.0, 5.0, 0.5)), float(clearance_factor(15.0, 10.0, 5.0, 0.25))
    (1.0, 0.5)
    """
    elapsed = jnp.maximum(jnp.asarray(t, dtype=float) - t0, 0.0)
    weight = 1.0 - jnp.exp2(-elapsed / half_time)
    return jnp.exp(weight * jnp.log(ratio))


@functools.cache
def changing_clearance_model(structural: ODEModel) -> ODEModel:
    """``structural`` with its ``cl`` multiplied by :func:`clearance_factor` of three new
    parameters (:data:`CHANGE_PARAMETERS`, appended in that order).

    Cached per model, so every case of one drug reuses one compiled simulation.

    Examples
    --------
    >>> from twinsim.priors import drug_model
    >>> wrapped = changing_clearance_model(drug_model("vancomycin").structural)
    >>> wrapped.parameters[-3:], wrapped.linear
    (('cl_change_time', 'cl_change_half_time', 'cl_change_ratio'), False)
    """
    names = structural.parameters
    n = len(names)
    i_cl = structural.parameter_index("cl")

    def base(p: Named, t=None) -> Named:
        array = p._array[..., :n]
        if t is not None:
            factor = clearance_factor(t, p.cl_change_time, p.cl_change_half_time, p.cl_change_ratio)
            array = array.at[..., i_cl].multiply(factor)
        return Named(names, array)

    def rhs(t, y, p):
        return structural.rhs(t, y, base(p, t))

    initial = None
    if structural.initial is not None:
        initial = lambda p: structural.initial(base(p))  # noqa: E731
    return ODEModel(
        name=f"{structural.name}_changing_cl",
        states=structural.states,
        parameters=(*names, *CHANGE_PARAMETERS),
        rhs=rhs,
        outputs={name: _on_base(fn, base) for name, fn in structural.outputs},
        output_units=dict(structural.output_units),
        parameter_units={
            **dict(structural.parameter_units),
            "cl_change_time": "h",
            "cl_change_half_time": "h",
            "cl_change_ratio": "1",
        },
        linear=False,
        initial=initial,
        bioavailability=dict(structural.bioavailability),
        lag_time=dict(structural.lag_time),
        routes=dict(structural.routes),
        citation=structural.citation,
    )


def _on_base(fn, base):
    """An output function of the wrapped model reading the base model's parameters."""
    return lambda y, p: fn(y, base(p))


def inhibitor_clearance_ratio(
    model: PopulationModel,
    covariates: Mapping[str, object],
    inhibitor: str,
    maintenance_mg_per_day: float,
) -> tuple[float, str]:
    """Clearance with ``inhibitor`` over clearance without it, and where the number came from.

    The model's own covariate (``comed_<inhibitor>`` or ``<inhibitor>``) when it has one;
    otherwise, for amiodarone, the literature factor :data:`AMIODARONE_CL_REDUCTION` at
    the nearest tabulated maintenance dose.

    Raises
    ------
    ValueError
        For an inhibitor that neither the model nor this table knows.

    Examples
    --------
    >>> from twinsim.priors import drug_model
    >>> ratio, source = inhibitor_clearance_ratio(
    ...     drug_model("warfarin"), {"age": 70.0, "cyp2c9": "*1/*1", "vkorc1": "G/G"},
    ...     "amiodarone", 200.0)
    >>> round(ratio, 2), source
    (0.83, "model covariate `amiodarone` of 'warfarin'")
    >>> inhibitor_clearance_ratio(drug_model("theophylline"), {}, "amiodarone", 400.0)[0]
    0.6
    """
    for name in (f"comed_{inhibitor}", inhibitor):
        if name in model.covariate_names:
            row = {k: [v] for k, v in covariates.items() if k in model.covariate_names}
            i_cl = model.structural.parameter_index("cl")
            without = float(model.typical_parameters({**row, name: [0.0]})[0, i_cl])
            with_ = float(model.typical_parameters({**row, name: [1.0]})[0, i_cl])
            return with_ / without, f"model covariate `{name}` of {model.name!r}"
    if inhibitor != "amiodarone":
        raise ValueError(
            f"`event.drug` {inhibitor!r}: the {model.name!r} model has no covariate for it and "
            "no literature clearance factor is tabulated here; expected 'amiodarone' or a "
            "drug the model carries as a covariate"
        )
    doses = np.array(sorted(AMIODARONE_CL_REDUCTION))
    nearest = float(doses[np.argmin(np.abs(doses - maintenance_mg_per_day))])
    reduction = AMIODARONE_CL_REDUCTION[nearest]
    return 1.0 - reduction, (
        f"Sanoski & Bauman 2002: warfarin dose −{reduction:.0%} at amiodarone "
        f"{nearest:g} mg/day, taken as the S-warfarin clearance reduction"
    )
