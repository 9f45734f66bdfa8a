"""The split ODE engine (depot in closed form, one adaptive solve for the other states)
against the walking ODE engine, per-subject independence of the batch, and its choice.

Reference: the walking ODE engine (``method="ode"``, tsit5, rtol 1e-8, atol 1e-10), which
``test_ode_vs_linear.py`` checks against the exact linear engine. Tolerance (issue 12):
1e-6 relative on every output and state, atol 1e-9 for values near 0. The library's other
drugs (vancomycin, theophylline) are linear and keep the exact engines, so warfarin is the
library drug this path changes.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from warfarin_subjects import warfarin_subjects

from twinsim.priors import one_compartment
from twinsim.simulators import Dose, DosingEvents, SolveStatus, simulate
from twinsim.simulators._split import source_compartments, split_eligible

RTOL, ATOL = 1e-6, 1e-9


@pytest.fixture(scope="module")
def warfarin():
    return warfarin_subjects(3, seed=7)


def _regimens(model, n=3):
    depot = model.route_compartment("oral")
    # different amounts and dose times per subject; a trough at every dose time
    return DosingEvents.from_doses(
        [
            [Dose(24.0 * k + 6.0 * i, 5.0 + 2.0 * i, compartment=depot) for k in range(6)]
            for i in range(n)
        ]
    )


TIMES = jnp.concatenate([jnp.arange(0.0, 150.0, 3.0), jnp.array([150.5, 200.0])])


@pytest.mark.parametrize("at_dose", ["pre", "post"])
def test_split_engine_matches_the_walking_ode_engine(warfarin, at_dose):
    """Warfarin (oral depot → 2-cmt PK → transit chains → INR), 3 subjects with their own
    doses, outputs on and between dose times: split = walking ODE to rtol 1e-6."""
    model, params = warfarin
    events = _regimens(model)
    auto = simulate(model, params, events, TIMES, at_dose=at_dose, method="split")
    ode = simulate(model, params, events, TIMES, at_dose=at_dose, method="ode")
    assert (auto.method, ode.method) == ("split", "ode")
    np.testing.assert_array_equal(np.asarray(auto.status), 0)
    np.testing.assert_allclose(np.asarray(auto.outputs), np.asarray(ode.outputs), RTOL, ATOL)
    np.testing.assert_allclose(np.asarray(auto.states), np.asarray(ode.states), RTOL, ATOL)


def test_split_engine_results_do_not_depend_on_the_batch(warfarin):
    """A subject's outputs alone and with others (other doses, padded blocks) agree to
    rtol 1e-11 — 1,000 times below the solver's tolerance (measured: ≤ 6e-13 absolute;
    the subjects' adaptive steps are their own, the last bits come from XLA's code for
    a block)."""
    model, params = warfarin
    events = _regimens(model)
    together = np.asarray(simulate(model, params, events, TIMES, method="split").outputs)
    for i in range(params.shape[0]):
        row = DosingEvents(
            **{f: getattr(events, f)[i : i + 1] for f in events.__dataclass_fields__}
        )
        alone = np.asarray(simulate(model, params[i], row, TIMES, method="split").outputs)[0]
        np.testing.assert_allclose(alone, together[i], rtol=1e-11, atol=1e-14)


def test_split_engine_reports_doses_it_cannot_take_per_subject(warfarin):
    """A dose into the central compartment (not a depot) under method='split' fails that
    subject only, with a status saying to use method='ode'; 'auto' walks (split is opt-in)."""
    model, params = warfarin
    central = model.state_index("central")
    events = DosingEvents.from_doses([[Dose(0.0, 5.0, compartment=c)] for c in (0, central, 0)])
    sol = simulate(model, params, events, TIMES, method="split")
    assert np.asarray(sol.status).tolist() == [0, int(SolveStatus.UNSUPPORTED_DOSE), 0]
    assert "method='ode'" in sol.failures()[1]
    assert np.isnan(np.asarray(sol.outputs)[1]).all()
    assert simulate(model, params, events, TIMES).method == "ode"


def test_source_compartments_are_found_from_the_equations(warfarin):
    """The depot (dy/dt = −ka·y) is a source; the central compartment (inflow from the
    depot and the peripheral one) and the PD states are not. A one-compartment IV model
    is all source: nothing would be left to integrate, so it stays on its exact engine."""
    model, _ = warfarin
    assert source_compartments(model) == (model.state_index("depot"),)
    iv = one_compartment()
    assert source_compartments(iv) == (0,)
    assert not split_eligible(iv, DosingEvents.repeated(100.0, 12.0, 2, compartment=0))
