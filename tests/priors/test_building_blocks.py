"""Structure, linearity, mass balance and argument errors of the PK/PD building blocks.

These tests evaluate right-hand sides and outputs directly (no engine); the simulations
against an independent solver are in ``test_building_blocks_vs_scipy.py``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from twinsim.priors import (
    ModelDefinitionError,
    ODEModel,
    extend_model,
    michaelis_menten,
    one_compartment,
    pk_model,
    three_compartment,
    transit_compartment,
    two_compartment,
    with_effect_compartment,
    with_emax,
    with_indirect_response,
)

# ----------------------------------------------------------------------------- structure

STRUCTURES = [
    # (model, states, parameters, outputs, routes, bioavailability, lag, linear)
    (one_compartment(), ("central",), ("cl", "v"), ("conc",), {"iv": "central"}, {}, {}, True),
    (
        one_compartment(absorption=True, lag=True),
        ("depot", "central"),
        ("cl", "v", "ka", "f_oral", "lag_oral"),
        ("conc",),
        {"oral": "depot", "iv": "central"},
        {"depot": "f_oral"},
        {"depot": "lag_oral"},
        True,
    ),
    (
        two_compartment(absorption="first_order"),
        ("depot", "central", "peripheral1"),
        ("cl", "v1", "q", "v2", "ka", "f_oral"),
        ("conc",),
        {"oral": "depot", "iv": "central"},
        {"depot": "f_oral"},
        {},
        True,
    ),
    (
        three_compartment(),
        ("central", "peripheral1", "peripheral2"),
        ("cl", "v1", "q2", "v2", "q3", "v3"),
        ("conc",),
        {"iv": "central"},
        {},
        {},
        True,
    ),
    (
        michaelis_menten(absorption=True),
        ("depot", "central"),
        ("vmax", "km", "v", "ka", "f_oral"),
        ("conc",),
        {"oral": "depot", "iv": "central"},
        {"depot": "f_oral"},
        {},
        False,
    ),
    (
        transit_compartment(2, compartments=2, lag=True),
        ("transit0", "transit1", "transit2", "depot", "central", "peripheral1"),
        ("cl", "v1", "q", "v2", "mtt", "ka", "f_oral", "lag_oral"),
        ("conc",),
        {"oral": "transit0", "iv": "central"},
        {"transit0": "f_oral"},
        {"transit0": "lag_oral"},
        True,
    ),
    (
        with_emax(
            with_effect_compartment(two_compartment(absorption=True)), driver="ce", hill=False
        ),
        ("depot", "central", "peripheral1", "effect_site"),
        ("cl", "v1", "q", "v2", "ka", "f_oral", "ke0", "e0", "emax", "ec50"),
        ("conc", "ce", "effect"),
        {"oral": "depot", "iv": "central"},
        {"depot": "f_oral"},
        {},
        True,
    ),
    (
        with_indirect_response(one_compartment(), "II", hill=True),
        ("central", "response"),
        ("cl", "v", "kin", "kout", "imax", "ic50", "gamma"),
        ("conc", "response"),
        {"iv": "central"},
        {},
        {},
        False,
    ),
]


@pytest.mark.parametrize(
    ("model", "states", "parameters", "outputs", "routes", "bioavailability", "lag", "linear"),
    STRUCTURES,
    ids=[s[0].name for s in STRUCTURES],
)
def test_structure(model, states, parameters, outputs, routes, bioavailability, lag, linear):
    """Names, routes, dosing facts and the linear flag are what the docstrings promise."""
    assert model.states == states
    assert model.parameters == parameters
    assert model.output_names == outputs
    assert dict(model.routes) == routes
    assert dict(model.bioavailability) == bioavailability
    assert dict(model.lag_time) == lag
    assert model.linear is linear
    assert set(dict(model.parameter_units)) == set(parameters)
    assert set(dict(model.output_units)) == set(outputs)
    assert model.citation


def test_names_and_citations():
    """Model names say what was built; citations name the primary sources."""
    assert one_compartment().name == "pk_1cmt_iv"
    assert two_compartment(absorption=True, lag=True).name == "pk_2cmt_oral_lag"
    mm_transit = pk_model(3, absorption="transit", n_transit=1, elimination="michaelis_menten")
    assert mm_transit.name == "pk_3cmt_mm_transit1"
    assert transit_compartment(4).name == "pk_1cmt_transit4"
    assert "Savic" in transit_compartment(1).citation
    assert "Michaelis" in michaelis_menten().citation
    assert "Sheiner" in with_effect_compartment(one_compartment()).citation
    assert "Dayneka" in with_indirect_response(one_compartment(), 4).citation
    assert "Holford" in with_emax(one_compartment()).citation


def test_dosing_factors_place_f_and_lag_on_the_oral_compartment():
    """``f_oral`` and ``lag_oral`` apply to the first absorption compartment, not to IV doses."""
    model = transit_compartment(1, lag=True)  # transit0, transit1, depot, central
    p = jnp.array([5.0, 50.0, 2.0, 1.0, 0.6, 0.25])
    f, lag = model.dosing_factors(p)
    np.testing.assert_array_equal(f, [0.6, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(lag, [0.25, 0.0, 0.0, 0.0])


def test_composition_leaves_the_base_model_unchanged():
    """Helpers return new models (immutable domain objects)."""
    base = two_compartment(absorption=True)
    with_indirect_response(with_effect_compartment(base), 1, driver="ce")
    assert base.states == ("depot", "central", "peripheral1")
    assert base.output_names == ("conc",)


# ----------------------------------------------------------------------------- linearity


def test_two_compartment_oral_system_matrix_by_hand():
    """``system_matrix`` of the 2-cmt oral model equals A written from the mass balance.

    States (depot, central, peripheral1):
    A = [[−ka, 0, 0], [ka, −(CL+Q)/V1, Q/V2], [0, Q/V1, −Q/V2]]. Tolerance: rtol 1e-14.
    """
    cl, v1, q, v2, ka, f = 3.0, 20.0, 7.0, 45.0, 1.3, 0.8
    a = two_compartment(absorption=True).system_matrix(jnp.array([cl, v1, q, v2, ka, f]))
    expected = np.array([[-ka, 0.0, 0.0], [ka, -(cl + q) / v1, q / v2], [0.0, q / v1, -q / v2]])
    np.testing.assert_allclose(a, expected, rtol=1e-14, atol=0)


def test_three_compartment_iv_system_matrix_by_hand():
    """3-cmt IV: A = [[−(CL+Q2+Q3)/V1, Q2/V2, Q3/V3], [Q2/V1, −Q2/V2, 0], [Q3/V1, 0, −Q3/V3]].

    Tolerance: rtol 1e-14.
    """
    cl, v1, q2, v2, q3, v3 = 3.0, 20.0, 7.0, 45.0, 0.5, 100.0
    a = three_compartment().system_matrix(jnp.array([cl, v1, q2, v2, q3, v3]))
    expected = np.array(
        [
            [-(cl + q2 + q3) / v1, q2 / v2, q3 / v3],
            [q2 / v1, -q2 / v2, 0.0],
            [q3 / v1, 0.0, -q3 / v3],
        ]
    )
    np.testing.assert_allclose(a, expected, rtol=1e-14, atol=0)


LINEAR_MODELS = [
    one_compartment(absorption=True, lag=True),
    two_compartment(absorption=True),
    three_compartment(absorption=True),
    transit_compartment(3, compartments=2),
    with_effect_compartment(three_compartment(absorption=True)),
    with_emax(with_effect_compartment(one_compartment()), driver="ce"),
]
NONLINEAR_MODELS = [
    michaelis_menten(absorption=True),
    *(with_indirect_response(one_compartment(absorption=True), kind) for kind in (1, 2, 3, 4)),
]

positive = st.floats(0.05, 20.0)
amounts = st.floats(0.0, 500.0)


@pytest.mark.parametrize("model", LINEAR_MODELS, ids=lambda m: m.name)
@given(data=st.data())
def test_linear_models_are_linear(model, data):
    """For every ``linear=True`` model, ``f(y) = A(p) y`` exactly (up to round-off).

    Property over random parameters and states; tolerance rtol 1e-12, atol 1e-12.
    """
    p = jnp.array(
        data.draw(st.lists(positive, min_size=model.n_parameters, max_size=model.n_parameters))
    )
    y = jnp.array(data.draw(st.lists(amounts, min_size=model.n_states, max_size=model.n_states)))
    a = model.system_matrix(p)
    np.testing.assert_allclose(model.vector_field(0.0, y, p), a @ y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("model", NONLINEAR_MODELS, ids=lambda m: m.name)
def test_nonlinear_models_are_flagged_and_are_not_linear(model):
    """Michaelis–Menten and indirect-response models are nonlinear: ``f(2y) ≠ 2 f(y)``."""
    assert model.linear is False
    p = jnp.ones(model.n_parameters) * 2.0
    y = model.initial_state(p) + jnp.linspace(1.0, 3.0, model.n_states)
    assert not np.allclose(model.vector_field(0.0, 2 * y, p), 2 * model.vector_field(0.0, y, p))


# ----------------------------------------------------------------------------- mass balance

MASS_MODELS = [
    one_compartment(absorption=True),
    two_compartment(absorption=True),
    three_compartment(absorption=True, lag=True),
    transit_compartment(3),
    michaelis_menten(absorption=True),
    pk_model(2, absorption="transit", n_transit=1, elimination="michaelis_menten"),
]


@pytest.mark.parametrize("model", MASS_MODELS, ids=lambda m: m.name)
@given(data=st.data())
def test_mass_balance(model, data):
    """Σ dA/dt over all (amount) states = −elimination rate from central.

    Elimination: CL·C, or Vmax·C/(Km + C), with C = central/V. Property over random
    parameters and amounts; tolerance rtol 1e-12, atol 1e-10 mg/h.
    """
    p_list = data.draw(st.lists(positive, min_size=model.n_parameters, max_size=model.n_parameters))
    y = jnp.array(data.draw(st.lists(amounts, min_size=model.n_states, max_size=model.n_states)))
    p = dict(zip(model.parameters, p_list, strict=True))
    conc = float(y[model.state_index("central")]) / p.get("v", p.get("v1"))
    if "cl" in p:
        elimination = p["cl"] * conc
    else:
        elimination = p["vmax"] * conc / (p["km"] + conc)
    total = float(jnp.sum(model.vector_field(0.0, y, jnp.array(p_list))))
    np.testing.assert_allclose(total, -elimination, rtol=1e-12, atol=1e-10)


# ----------------------------------------------------------------------------- PD behaviour


@pytest.mark.parametrize("kind", [1, 2, 3, 4])
def test_indirect_response_starts_at_a_resting_baseline(kind):
    """R(0) = kin/kout, and without drug the baseline is at rest (dR/dt = 0, atol 1e-12)."""
    model = with_indirect_response(one_compartment(), kind)  # cl, v, kin, kout, drug, c50
    p = jnp.array([5.0, 50.0, 12.0, 0.4, 0.7, 2.0])
    y0 = model.initial_state(p)
    np.testing.assert_allclose(y0, [0.0, 30.0], rtol=1e-15)
    np.testing.assert_allclose(model.vector_field(0.0, y0, p), [0.0, 0.0], atol=1e-12)


def test_sigmoid_emax_values_and_gradients():
    """E(0) = E0, E(EC50) = E0 + Emax/2, E(C) → E0 + Emax; finite gradient at C = 0.

    Values by hand from E = E0 + Emax·C^γ/(EC50^γ + C^γ); tolerance rtol 1e-12. A slightly
    negative concentration (solver round-off) gives E0, not NaN.
    """
    model = with_emax(one_compartment())  # cl, v, e0, emax, ec50, gamma

    def effect(amount, p):
        return model.observe(jnp.array([amount]), p)[1]

    p = jnp.array([5.0, 10.0, 80.0, -30.0, 2.0, 2.7])
    np.testing.assert_allclose(effect(0.0, p), 80.0, rtol=1e-12)
    np.testing.assert_allclose(effect(20.0, p), 80.0 - 15.0, rtol=1e-12)  # C = 2 = EC50
    c = 7.0
    np.testing.assert_allclose(
        effect(10.0 * c, p), 80.0 - 30.0 * c**2.7 / (2.0**2.7 + c**2.7), rtol=1e-12
    )
    np.testing.assert_allclose(effect(-1e-12, p), 80.0, rtol=1e-12)
    np.testing.assert_allclose(effect(1e9, p), 50.0, rtol=1e-12)
    grad = jax.grad(effect, argnums=(0, 1))(0.0, p)
    assert all(np.all(np.isfinite(g)) for g in grad)


def test_effect_site_at_rest_when_equilibrated():
    """dCe/dt = ke0·(C − Ce) vanishes when Ce = C and has the sign of C − Ce (exact)."""
    model = with_effect_compartment(one_compartment())  # cl, v, ke0
    p = jnp.array([5.0, 10.0, 0.3])
    assert float(model.vector_field(0.0, jnp.array([20.0, 2.0]), p)[1]) == 0.0
    np.testing.assert_allclose(
        model.vector_field(0.0, jnp.array([20.0, 1.0]), p)[1], 0.3, rtol=1e-15
    )


def test_extend_model_accepts_sequence_rhs():
    """A base model whose rhs returns a sequence (not a mapping) can be extended."""
    base = ODEModel(
        name="seq",
        states=("central",),
        parameters=("k", "v"),
        rhs=lambda t, y, p: [-p.k * y.central],
        outputs={"conc": lambda y, p: y.central / p.v},
    )
    model = with_effect_compartment(base)
    f = model.vector_field(0.0, jnp.array([10.0, 0.5]), jnp.array([0.2, 5.0, 2.0]))
    np.testing.assert_allclose(f, [-2.0, 2.0 * (2.0 - 0.5)], rtol=1e-15)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: transit_compartment(0), r"`n_transit` must be an integer >= 1, got 0"),
        (lambda: transit_compartment(2.5), r"`n_transit` must be an integer >= 1, got 2.5"),
        (
            lambda: pk_model(1, absorption="transit"),
            r"`n_transit` is required for absorption='transit'",
        ),
        (
            lambda: pk_model(1, absorption=True, n_transit=2),
            r"`n_transit` \(2\) is only used with absorption='transit'",
        ),
        (lambda: pk_model(4), r"`compartments` must be 1, 2 or 3, got 4"),
        (
            lambda: one_compartment(absorption="zero_order"),
            r"`absorption` must be None, 'first_order' or 'transit'.*'zero_order'",
        ),
        (
            lambda: pk_model(1, elimination="saturable"),
            r"`elimination` must be 'linear' or 'michaelis_menten', got 'saturable'",
        ),
        (lambda: two_compartment(lag=True), r"`lag`=True needs an absorption route"),
        (
            lambda: with_indirect_response(one_compartment(), 5),
            r"`kind` must be 1, 2, 3 or 4 .* got 5",
        ),
        (
            lambda: with_indirect_response(one_compartment(), "V"),
            r"`kind` must be 1, 2, 3 or 4 .* got 'V'",
        ),
        (
            lambda: with_emax(one_compartment(), driver="ce"),
            r"`driver` 'ce' is not an output of model 'pk_1cmt_iv'; known outputs: \['conc'\]",
        ),
        (
            lambda: with_effect_compartment(with_effect_compartment(one_compartment())),
            r"state name\(s\) \['effect_site'\] already exist",
        ),
        (
            lambda: with_indirect_response(with_emax(one_compartment()), 3),
            r"parameter name\(s\) \['ec50', 'emax'\] already exist",
        ),
        (
            lambda: extend_model(
                one_compartment(), name="x", outputs={"conc": lambda y, p: y.central}
            ),
            r"output name\(s\) \['conc'\] already exist",
        ),
    ],
)
def test_invalid_arguments_raise_helpful_errors(build, match):
    """Errors name the argument, the value received and what to do instead."""
    with pytest.raises(ModelDefinitionError, match=match):
        build()
