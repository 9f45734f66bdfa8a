"""The public API refuses the mistakes a new user makes (issue 12, item 7).

Parameters by name wherever a parameter vector is taken; ``Dose`` fields after time and
amount named; a flat dose list refused with the expected shape; ``repeated`` without a
compartment refused.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from twinsim.priors import one_compartment
from twinsim.simulators import (
    Dose,
    DosingEvents,
    EventError,
    ParameterError,
    predict_linear,
    predict_outputs,
    simulate,
    simulate_cohort,
)

MODEL = one_compartment()  # parameters ("cl", "v")
IV = MODEL.route_compartment("iv")
EVENTS = DosingEvents.repeated(100.0, 12.0, 2, compartment=IV)
TIMES = np.array([1.0, 13.0])


def _closed_form(cl: float, v: float) -> np.ndarray:
    """One-compartment IV bolus, 100 mg at 0 and 12 h: C(t) = Σ D/V·exp(−CL/V (t − t_d))."""
    k = cl / v
    return np.array([100.0 / v * np.exp(-k * 1.0), 100.0 / v * (np.exp(-k * 13.0) + np.exp(-k))])


def test_parameters_by_name_equal_the_array_in_model_order() -> None:
    """A mapping in any key order, a DataFrame and a structured array give the same
    numbers as the positional array, and those equal the closed form (rtol 1e-10)."""
    positional = np.asarray(simulate(MODEL, np.array([5.0, 50.0]), EVENTS, TIMES).outputs)
    np.testing.assert_allclose(positional[0, :, 0], _closed_form(5.0, 50.0), rtol=1e-10)
    by_name = simulate(MODEL, {"v": 50.0, "cl": 5.0}, EVENTS, TIMES).outputs
    np.testing.assert_array_equal(np.asarray(by_name), positional)

    frame = pd.DataFrame({"v": [50.0, 40.0], "cl": [5.0, 6.0]})
    cohort = np.asarray(simulate(MODEL, frame, EVENTS, TIMES).outputs)
    np.testing.assert_allclose(cohort[1, :, 0], _closed_form(6.0, 40.0), rtol=1e-10)
    structured = np.array([(5.0, 50.0), (6.0, 40.0)], dtype=[("cl", float), ("v", float)])
    np.testing.assert_array_equal(
        np.asarray(simulate(MODEL, structured, EVENTS, TIMES).outputs), cohort
    )

    by_name_linear = predict_linear(MODEL, {"cl": 5.0, "v": 50.0}, EVENTS, TIMES)
    np.testing.assert_allclose(np.asarray(by_name_linear)[0, :, 0], positional[0, :, 0], rtol=1e-12)
    outputs = predict_outputs(MODEL, {"cl": [5.0, 6.0], "v": [50.0, 40.0]}, EVENTS, TIMES)
    np.testing.assert_allclose(np.asarray(outputs)[..., 0], cohort[..., 0], rtol=1e-12)


def test_cohort_params_fn_may_return_named_values() -> None:
    got = {}
    simulate_cohort(
        MODEL,
        3,
        lambda ids: {"cl": 5.0 + ids, "v": np.full(ids.shape, 50.0)},
        lambda ids: EVENTS,
        TIMES,
        chunk_size=2,
        on_chunk=lambda start, stop, sol: got.update({start: np.asarray(sol.outputs)}),
    )
    np.testing.assert_allclose(got[2][0, :, 0], _closed_form(7.0, 50.0), rtol=1e-10)


def test_unknown_missing_and_ragged_names_are_errors_naming_them() -> None:
    with pytest.raises(
        ParameterError, match=r"`params` lacks \['v'\]; the model's parameters are \['cl', 'v'\]"
    ):
        simulate(MODEL, {"cl": 5.0}, EVENTS, TIMES)
    with pytest.raises(
        ParameterError,
        match=r"has a name model 'pk_1cmt_iv' does not have: \['vd'\], and lacks \['v'\]",
    ):
        predict_linear(MODEL, {"cl": 5.0, "vd": 50.0}, EVENTS, TIMES)
    with pytest.raises(ParameterError, match=r"shapes \{'cl': \(2,\), 'v': \(3,\)\}"):
        simulate(MODEL, {"cl": [1.0, 2.0], "v": [1.0, 2.0, 3.0]}, EVENTS, TIMES)
    with pytest.raises(ParameterError, match=r"`params_fn\(ids\)` lacks \['cl'\]"):
        simulate_cohort(
            MODEL, 2, lambda ids: {"v": np.full(ids.shape, 50.0)}, lambda ids: EVENTS, TIMES,
            chunk_size=2, on_chunk=lambda *a: None,
        )  # fmt: skip
    assert issubclass(ParameterError, ValueError)


def test_dose_fields_after_time_and_amount_are_keyword_only() -> None:
    """``Dose(72, 200, iv, 1.0)`` once became a 200-h infusion at 1 mg/h; now it is refused."""
    with pytest.raises(TypeError, match="takes 3 positional arguments but 5 were given"):
        Dose(72.0, 200.0, IV, 1.0)
    with pytest.raises(TypeError, match="compartment"):
        Dose(72.0, 200.0)  # the compartment is required, by name
    dose = Dose(72.0, 200.0, compartment=IV, duration=1.0)
    assert (dose.rate, dose.duration) == (0.0, 1.0)
    assert dose.replace(time=0.0) == Dose(0.0, 200.0, compartment=IV, duration=1.0)


def test_a_flat_dose_list_is_an_event_error_stating_the_shape() -> None:
    doses = [Dose(0.0, 100.0, compartment=IV), Dose(12.0, 100.0, compartment=IV)]
    with pytest.raises(EventError, match=r"one list of Dose per subject.*got a flat list of Dose"):
        DosingEvents.from_doses(doses)
    with pytest.raises(
        EventError, match=r"`doses\[0\]\[0\]` must be a Dose, got tuple \(0, 100, 1\)"
    ):
        DosingEvents.from_doses([[(0, 100, 1)]])
    with pytest.raises(EventError, match=r"`doses\[1\]` must be the list of Dose of subject 1"):
        DosingEvents.from_doses([doses, 5.0])
    one = DosingEvents.from_doses([doses])  # the fix the message gives
    assert one.n_subjects == 1 and int(one.mask.sum()) == 2


def test_repeated_requires_the_compartment() -> None:
    with pytest.raises(EventError, match=r"needs `compartment=`.*route_compartment\('oral'\)"):
        DosingEvents.repeated(100.0, 12.0, 3)
    oral = one_compartment(absorption="first_order")
    events = DosingEvents.repeated(100.0, 12.0, 3, compartment=oral.route_compartment("oral"))
    assert int(events.compartment[0, 0]) == oral.state_index("depot")
