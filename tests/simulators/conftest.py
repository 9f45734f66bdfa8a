"""Shared set-up of the engine tests: the linear PK test models, one cohort, one dosing grid.

- ``closed_form`` (the numpy reference next to this file) becomes importable as a plain
  module, whatever pytest's import mode.
- The models are defined here, directly with :class:`twinsim.priors.ODEModel`, once per
  session: every test module then reuses the same model objects, so the engines compile
  each (model, shape) once per run.
- Every case of the dosing grid has the same cohort size (3), the same padded dose table
  width (:data:`PAD_TO`) and the same output times (:data:`TIMES`), again so that a model
  compiles once for the whole grid.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from closed_form import Administration, concentration

from twinsim.priors import ODEModel
from twinsim.simulators import Dose, DosingEvents

# Output times, h: every dose time of the grid (0, 8, 12, 16, 24, 36, 48), points during
# infusions and before lagged doses arrive, and a long tail.
TIMES = np.array(
    [
        0.0,
        0.25,
        0.5,
        0.75,
        1.0,
        1.5,
        2.0,
        3.0,
        4.5,
        6.0,
        8.0,
        12.0,
        12.5,
        16.0,
        24.0,
        24.5,
        26.0,
        30.0,
        36.0,
        48.0,
        72.0,
    ]
)
PAD_TO = 8  # dose-table width shared by every case
N_SUBJECTS = 3
DEPOT, CENTRAL, PERIPHERAL1, PERIPHERAL2 = 0, 1, 2, 3  # compartment indices of the test models

# One row per subject; ka differs from every macro constant (no degenerate Bateman case).
SUBJECTS = (
    dict(cl=5.0, v=20.0, q=10.0, v2=40.0, q3=2.0, v3=100.0, ka=1.3),
    dict(cl=2.5, v=35.0, q=4.0, v2=60.0, q3=0.8, v3=150.0, ka=0.6),
    dict(cl=12.0, v=10.0, q=20.0, v2=25.0, q3=5.0, v3=60.0, ka=2.5),
)
AMOUNTS = (100.0, 250.0, 40.0)  # mg, one per subject
NO_LAG_F = dict(f=(1.0, 1.0, 1.0), tlag=(0.0, 0.0, 0.0))
LAG_F = dict(f=(0.7, 0.9, 0.55), tlag=(0.6, 0.25, 1.1))

PARAMETERS = {
    1: ("cl", "v", "ka", "f", "tlag"),
    2: ("cl", "v", "q", "v2", "ka", "f", "tlag"),
    3: ("cl", "v", "q", "v2", "q3", "v3", "ka", "f", "tlag"),
}


def _rhs(n_cmt: int):
    def rhs(t, y, p):
        central = y.central / p.v
        d = {"depot": -p.ka * y.depot, "central": p.ka * y.depot - p.cl * central}
        if n_cmt >= 2:
            to_1 = p.q * (central - y.peripheral1 / p.v2)
            d["central"] = d["central"] - to_1
            d["peripheral1"] = to_1
        if n_cmt == 3:
            to_2 = p.q3 * (central - y.peripheral2 / p.v3)
            d["central"] = d["central"] - to_2
            d["peripheral2"] = to_2
        return d

    return rhs


def make_linear_model(n_cmt: int) -> ODEModel:
    """Mammillary ``n_cmt``-compartment model with a first-order absorption depot."""
    states = ("depot", "central", "peripheral1", "peripheral2")[: n_cmt + 1]
    return ODEModel(
        name=f"test_pk{n_cmt}",
        states=states,
        parameters=PARAMETERS[n_cmt],
        rhs=_rhs(n_cmt),
        outputs={"conc": lambda y, p: y.central / p.v},
        output_units={"conc": "mg/L"},
        linear=True,
        bioavailability={"depot": "f"},
        lag_time={"depot": "tlag"},
    )


@dataclass(frozen=True)
class Regimen:
    """One case of the dosing grid: a dose list per subject, and F/lag per subject."""

    doses: tuple[tuple[Administration, ...], ...]
    f: tuple[float, ...] = NO_LAG_F["f"]
    tlag: tuple[float, ...] = NO_LAG_F["tlag"]
    notes: str = field(default="", compare=False)

    def params(self, n_cmt: int) -> np.ndarray:
        """``[subject, parameter]`` for the ``n_cmt`` test model."""
        rows = []
        for i, subject in enumerate(SUBJECTS):
            values = {**subject, "f": self.f[i], "tlag": self.tlag[i]}
            rows.append([values[name] for name in PARAMETERS[n_cmt]])
        return np.array(rows)

    def events(self) -> DosingEvents:
        return DosingEvents.from_doses([to_doses(d) for d in self.doses], pad_to=PAD_TO)

    def reference(self, n_cmt: int, times=TIMES, at_dose: str = "pre") -> np.ndarray:
        """Closed-form concentrations ``[subject, time]``."""
        out = []
        for i, subject in enumerate(SUBJECTS):
            kinetic = {k: subject[k] for k in ("cl", "v", "ka")}
            if n_cmt >= 2:
                kinetic |= {k: subject[k] for k in ("q", "v2")}
            if n_cmt == 3:
                kinetic |= {k: subject[k] for k in ("q3", "v3")}
            out.append(
                concentration(
                    times, self.doses[i], **kinetic, f=self.f[i], tlag=self.tlag[i], at_dose=at_dose
                )
            )
        return np.array(out)


def to_doses(administrations) -> list[Dose]:
    """Reference records to engine records (iv -> central, oral -> depot)."""
    cmt = {"iv": CENTRAL, "oral": DEPOT}
    return [
        Dose(
            a.time,
            a.amount,
            compartment=cmt[a.route],
            rate=a.rate,
            duration=a.duration,
            steady_state=a.steady_state,
            interval=a.interval,
            additional=a.additional,
        )
        for a in administrations
    ]


def _per_subject(make) -> tuple[tuple[Administration, ...], ...]:
    return tuple(tuple(make(i, amount)) for i, amount in enumerate(AMOUNTS))


A = Administration
REGIMENS = {
    "bolus": Regimen(_per_subject(lambda i, amt: [A(0.0, amt, "iv")])),
    # rate 50 mg/h: infusions of 2, 5 and 0.8 h starting at 0.5 h
    "infusion_rate": Regimen(_per_subject(lambda i, amt: [A(0.5, amt, "iv", rate=50.0)])),
    "infusion_duration": Regimen(_per_subject(lambda i, amt: [A(0.0, amt, "iv", duration=1.5)])),
    "oral": Regimen(_per_subject(lambda i, amt: [A(0.0, amt, "oral")])),
    "oral_lag_f": Regimen(_per_subject(lambda i, amt: [A(0.0, amt, "oral")]), **LAG_F),
    # zero-order input into the depot: F scales the amount; by rate the duration shrinks,
    # by duration the rate does (NONMEM)
    "depot_infusion_rate_lag_f": Regimen(
        _per_subject(lambda i, amt: [A(1.0, amt, "oral", rate=40.0)]), **LAG_F
    ),
    "depot_infusion_duration_lag_f": Regimen(
        _per_subject(lambda i, amt: [A(1.0, amt, "oral", duration=2.5)]), **LAG_F
    ),
    # ADDL/II: oral q12h x4, iv bolus q8h x5, iv 1-h infusion q12h x4
    "repeated": Regimen(
        (
            (A(0.0, AMOUNTS[0], "oral", interval=12.0, additional=3),),
            (A(0.0, AMOUNTS[1], "iv", interval=8.0, additional=4),),
            (A(0.0, AMOUNTS[2], "iv", duration=1.0, interval=12.0, additional=3),),
        ),
        **LAG_F,
    ),
    "ss_bolus": Regimen(
        _per_subject(
            lambda i, amt: [A(0.0, amt, "iv", steady_state=True, interval=12.0, additional=2)]
        )
    ),
    "ss_infusion": Regimen(
        (
            (A(0.0, AMOUNTS[0], "iv", rate=25.0, steady_state=True, interval=12.0, additional=1),),
            (
                A(
                    0.0,
                    AMOUNTS[1],
                    "iv",
                    duration=3.0,
                    steady_state=True,
                    interval=12.0,
                    additional=1,
                ),
            ),
            (A(0.0, AMOUNTS[2], "iv", rate=4.0, steady_state=True, interval=12.0),),  # 10 h of 12
        )
    ),
    "ss_oral": Regimen(
        _per_subject(
            lambda i, amt: [A(0.0, amt, "oral", steady_state=True, interval=12.0, additional=2)]
        ),
        f=LAG_F["f"],
        tlag=NO_LAG_F["tlag"],
    ),
    # before the lagged SS dose arrives, the previous interval's tail (NONMEM semantics)
    "ss_oral_lag": Regimen(
        _per_subject(
            lambda i, amt: [A(0.0, amt, "oral", steady_state=True, interval=12.0, additional=2)]
        ),
        **LAG_F,
    ),
    # SS=1 at 24 h discards the single doses before it
    "ss_reset": Regimen(
        _per_subject(
            lambda i, amt: [
                A(0.0, amt, "oral"),
                A(12.0, amt, "iv"),
                A(24.0, amt, "iv", steady_state=True, interval=8.0),
            ]
        )
    ),
}


def pytest_generate_tests(metafunc):
    """Tests that take a ``dosing_case`` argument run once per case of the grid."""
    if "dosing_case" in metafunc.fixturenames:
        metafunc.parametrize("dosing_case", list(REGIMENS.values()), ids=list(REGIMENS))


@pytest.fixture(scope="session")
def linear_models() -> dict[int, ODEModel]:
    """The 1-, 2- and 3-compartment test models, one object each for the whole session."""
    return {n: make_linear_model(n) for n in (1, 2, 3)}


@pytest.fixture(scope="session")
def grid() -> dict[str, object]:
    """Constants of the dosing grid for test modules (conftest is not importable)."""
    return dict(
        times=TIMES,
        pad_to=PAD_TO,
        subjects=SUBJECTS,
        amounts=AMOUNTS,
        to_doses=to_doses,
        regimens=REGIMENS,
        central=CENTRAL,
        depot=DEPOT,
        peripheral1=PERIPHERAL1,
        Regimen=Regimen,
    )
