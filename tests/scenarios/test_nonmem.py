"""NONMEM data sets: reading, writing, round trips and error messages."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from twinsim.scenarios import NonmemData, NonmemError, read_nonmem, write_nonmem
from twinsim.simulators import Dose

DATA = Path(__file__).resolve().parents[1] / "data"
THEOPHYLLINE = DATA / "theophylline_nonmem.csv"


@pytest.fixture(scope="module")
def theophylline():
    return read_nonmem(THEOPHYLLINE)


def test_theophylline_matches_rs_theoph(theophylline):
    """Boeckmann, Sheiner & Beal (1994) theophylline data, cross-checked against R's
    ``datasets::Theoph`` (tests/data/theophylline_rdatasets.csv, an independent copy):
    12 subjects, one oral dose each of Dose (mg/kg) × Wt (kg) mg — the NONMEM file
    rounds it to 3 decimals, hence atol 5e-4 mg —, 11 concentrations per subject (equal
    to the printed values), weight kept as a per-subject covariate."""
    r = pd.read_csv(DATA / "theophylline_rdatasets.csv")
    data = theophylline
    assert data.n_subjects == 12 and data.ids == tuple(range(1, 13))
    for k, subject in enumerate(data.ids):
        rows = r[r["Subject"] == subject]
        (dose,) = data.doses[k]
        assert (
            dose.time,
            dose.compartment,
            dose.rate,
            dose.duration,
            dose.steady_state,
            dose.additional,
        ) == (0.0, 0, 0.0, 0.0, False, 0)
        assert dose.amount == pytest.approx(rows["Dose"].iloc[0] * rows["Wt"].iloc[0], abs=5e-4)
        obs = data.observations_of(subject)
        np.testing.assert_array_equal(obs["TIME"], rows["Time"])
        np.testing.assert_array_equal(obs["DV"], rows["conc"])
        assert set(obs["CMT"]) == {2} and set(obs["EVID"]) == {0} and set(obs["MDV"]) == {0}
        assert data.covariates.loc[subject, "WT"] == rows["Wt"].iloc[0]
    assert len(data.observations) == 132


def test_theophylline_events(theophylline):
    events = theophylline.events()
    assert events.n_subjects == 12
    np.testing.assert_array_equal(np.asarray(events.mask).sum(axis=1), np.ones(12))
    np.testing.assert_array_equal(np.asarray(events.compartment)[:, 0], np.zeros(12))
    assert float(events.amount[0, 0]) == theophylline.doses[0][0].amount


def test_theophylline_round_trip(theophylline, tmp_path):
    path = write_nonmem(theophylline, tmp_path / "theo.csv")
    again = read_nonmem(path)
    assert again.doses == theophylline.doses
    pd.testing.assert_frame_equal(again.observations, theophylline.observations)
    pd.testing.assert_frame_equal(again.covariates, theophylline.covariates)
    assert again.equals(theophylline)
    header = path.read_text().splitlines()[0]
    assert header == "ID,TIME,AMT,EVID,CMT,RATE,II,ADDL,SS,DV,MDV,WT"
    assert [p.name for p in tmp_path.iterdir()] == ["theo.csv"]  # no temporary file left


def test_written_rows_put_observations_before_doses_at_equal_times(theophylline, tmp_path):
    lines = write_nonmem(theophylline, tmp_path / "t.csv").read_text().splitlines()
    assert lines[1].split(",")[:5] == ["1", "0", "0", "0", "2"]  # the pre-dose observation
    assert lines[2].split(",")[:5] == ["1", "0", "319.992", "1", "1"]


def test_lowercase_headers_and_missing_optional_columns():
    frame = pd.DataFrame(
        {
            "id": [5, 5, 5, 5, 9, 9],
            "Time": [0.0, 0.5, 1.0, 2.0, 0.0, 3.0],
            "amt": [100, 0, 0, 0, 50, 0],
            "dv": [np.nan, 1.5, np.nan, 2.5, np.nan, 0.7],
            "sex": ["F", "F", "F", "F", "M", "M"],
        }
    )
    data = read_nonmem(frame)
    assert data.ids == (5, 9)
    assert data.doses == ((Dose(0.0, 100.0, compartment=0),), (Dose(0.0, 50.0, compartment=0),))
    obs = data.observations
    assert list(obs.columns) == ["ID", "TIME", "DV", "MDV", "CMT", "EVID"]
    assert obs["MDV"].tolist() == [0, 1, 0, 0]  # missing DV → MDV 1
    assert obs["CMT"].tolist() == [0, 0, 0, 0]  # default observation compartment
    assert obs["EVID"].tolist() == [0, 0, 0, 0]
    assert data.covariates["sex"].tolist() == ["F", "M"]


def test_addl_ii_ss_rate_and_dur():
    frame = pd.DataFrame(
        {
            "ID": [1, 1, 1, 1],
            "TIME": [0, 0, 24, 48],
            "AMT": [500, 0, 1000, 200],
            "EVID": [1, 0, 1, 1],
            "CMT": [2, 2, 1, 3],
            "RATE": [250, 0, 0, 0],
            "II": [12, 0, 8, 0],
            "ADDL": [1, 0, 0, 0],
            "SS": [1, 0, 1, 0],
            "DUR": [0, 0, 0, 0.5],
            "DV": [".", 3.2, ".", "."],
        }
    )
    data = read_nonmem(frame)
    assert data.doses[0] == (
        Dose(0.0, 500.0, compartment=1, rate=250.0, steady_state=True, interval=12.0, additional=1),
        Dose(24.0, 1000.0, compartment=0, steady_state=True, interval=8.0),
        Dose(48.0, 200.0, compartment=2, duration=0.5),
    )
    events = data.events()
    assert np.asarray(events.time)[0, :4].tolist() == [0.0, 12.0, 24.0, 48.0]  # ADDL expanded


def test_time_and_amount_units_are_converted():
    """TIME in min and AMT in g: 30 min = 0.5 h, 0.5 g = 500 mg, RATE 0.01 g/min = 600 mg/h."""
    frame = pd.DataFrame(
        {"ID": [1, 1], "TIME": [30, 90], "AMT": [0.5, 0], "RATE": [0.01, 0], "DV": [0, 4.0]}
    )
    data = read_nonmem(frame, time_unit="min", amount_unit="g")
    assert data.doses[0] == (Dose(0.5, 500.0, compartment=0, rate=600.0),)
    assert data.observations["TIME"].tolist() == [1.5]
    with pytest.raises(
        NonmemError, match=r"`time_unit`/`amount_unit`: .*unknown time unit 'fortnight'"
    ):
        read_nonmem(frame, time_unit="fortnight")


def test_whitespace_separated_file_with_comments(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text(
        "#ID TIME AMT DV CMT\n# a comment record\n1 0 100 . 1\n1 1.5 0 4.2 2\n\n2 0 80 . 1\n"
    )
    data = read_nonmem(path)
    assert data.ids == (1, 2)
    assert data.observations["DV"].tolist() == [4.2]


# ---------------------------------------------------------------------------- read errors
def _csv(tmp_path, text):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "ID,AMT\n1,0\n",
            r"the data set has no TIME column; required: ID, TIME, AMT \(found: ID, AMT\)",
        ),
        ("TIME,DV\n0,1\n", r"the data set has no ID, AMT columns"),
        ("ID,TIME,AMT\n1,0,100\n1,abc,0\n", r"line 3, column TIME: 'abc' is not a number"),
        (
            "ID,TIME,AMT,DV\n1,0,100,.\n1,2,0,1\n1,1,0,2\n",
            r"line 4: TIME 1 is before the previous record's TIME 2 \(line 3\) for ID 1; sort",
        ),
        (
            "ID,TIME,AMT\n1,0,100\n2,0,100\n1,5,0\n",
            r"line 4: ID 1 appears again after other subjects \(first at line 2\)",
        ),
        (
            "ID,TIME,AMT,EVID\n1,0,100,1\n1,5,0,3\n",
            r"line 3: EVID=3 \(reset\) is not supported; split the subject",
        ),
        ("ID,TIME,AMT,EVID\n1,0,100,4\n", r"line 2: EVID=4 \(reset and dose\) is not supported"),
        (
            "ID,TIME,AMT,EVID\n1,0,100,7\n",
            r"line 2: EVID=7 is not supported; use 0 \(observation\), 1 \(dose\)",
        ),
        (
            "ID,TIME,AMT,RATE\n1,0,100,-2\n",
            r"line 2: RATE=-2 \(modelled duration\) not supported; give the duration",
        ),
        ("ID,TIME,AMT,RATE\n1,0,100,-1\n", r"line 2: RATE=-1 \(modelled rate\) is not supported"),
        ("ID,TIME,AMT,SS,II\n1,0,100,2,12\n", r"line 2: SS=2 is not supported; use 0 or 1"),
        ("ID,TIME,AMT,ADDL\n1,0,100,3\n", r"line 2: ADDL > 0 needs the dosing interval II > 0"),
        (
            "ID,TIME,AMT,SS,II,RATE\n1,0,100,1,12,5\n",
            r"line 2: the infusion lasts 20 h, longer than II=12 at steady state",
        ),
        (
            "ID,TIME,AMT,DV,MDV\n1,0,0,.,0\n",
            r"line 2: observation \(EVID 0, MDV 0\) without DV; give DV or set MDV=1",
        ),
        ("ID,TIME,AMT\n1,-1,100\n", r"line 2: TIME -1 is negative"),
        ("ID,TIME,AMT\n,0,100\n", r"line 2: ID is missing"),
        (
            "ID,TIME,AMT\n1,0\n",
            r"bad.csv line 2 has 2 cells but the header \(line 1\) has 3 columns",
        ),
        (
            "ID,TIME,AMT,time\n1,0,1,0\n",
            r"columns 'TIME' and 'time' are both TIME; keep one of them",
        ),
        ("", r"bad.csv is empty"),
    ],
)
def test_read_errors_name_line_and_column(tmp_path, text, message):
    with pytest.raises(NonmemError, match=message):
        read_nonmem(_csv(tmp_path, text))


def test_frame_errors_name_the_row():
    with pytest.raises(NonmemError, match=r"row 1, column AMT: 'x' is not a number"):
        read_nonmem(pd.DataFrame({"ID": [1, 1], "TIME": [0, 1], "AMT": [1, "x"]}))


def test_missing_file():
    with pytest.raises(NonmemError, match=r"cannot read NONMEM data '.*nowhere.csv'"):
        read_nonmem("nowhere.csv")


def test_time_varying_covariates_warn_and_keep_the_first_value():
    frame = pd.DataFrame(
        {"ID": [1, 1], "TIME": [0, 1], "AMT": [1, 0], "DV": [0, 1], "WT": [70, 72]}
    )
    with pytest.warns(UserWarning, match=r"covariates WT change within subjects"):
        data = read_nonmem(frame)
    assert data.covariates["WT"].tolist() == [70]


# ---------------------------------------------------------------------------- writing
def test_write_is_atomic(tmp_path, monkeypatch):
    """A failure before the rename leaves the old file intact and no temporary file."""
    path = tmp_path / "out.csv"
    path.write_text("old\n")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_nonmem(NonmemData.from_doses([[Dose(0.0, 1.0, compartment=0)]]), path)
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_write_errors():
    with pytest.raises(NonmemError, match=r"ID 'a' is not a number; NONMEM needs numeric IDs"):
        write_nonmem(
            NonmemData.from_doses([[Dose(0.0, 1.0, compartment=0)]], ids=["a"]), "unused.csv"
        )
    clash = NonmemData.from_doses([[Dose(0.0, 1.0, compartment=0)]], covariates={"amt": [1]})
    with pytest.raises(
        NonmemError, match=r"covariate columns \['amt'\] clash with standard NONMEM columns"
    ):
        write_nonmem(clash, "unused.csv")
    with pytest.raises(NonmemError, match=r"subjects \[2\] have no dose and no observation record"):
        write_nonmem(NonmemData.from_doses([[Dose(0.0, 1.0, compartment=0)], []]), "unused.csv")
    with pytest.raises(NonmemError, match=r"`ids` has 2 entries but `doses` has 1 subjects"):
        NonmemData.from_doses([[Dose(0.0, 1.0, compartment=0)]], ids=[1, 2])


# ---------------------------------------------------------------------------- property
_times = st.floats(min_value=0.0, max_value=1e4, allow_nan=False, allow_infinity=False)
_positive = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)


@st.composite
def _dose(draw):
    kind = draw(st.sampled_from(["bolus", "rate", "duration"]))
    amount = draw(_positive)
    rate = draw(_positive) if kind == "rate" else 0.0
    duration = draw(st.floats(min_value=1e-3, max_value=24.0)) if kind == "duration" else 0.0
    repeated = draw(st.booleans())
    interval = draw(st.floats(min_value=24.0, max_value=168.0)) if repeated else 0.0
    infusion_h = duration if duration else (amount / rate if rate else 0.0)
    steady_state = repeated and infusion_h <= interval and draw(st.booleans())
    additional = draw(st.integers(0, 5)) if repeated else 0
    return Dose(
        draw(_times),
        amount,
        compartment=draw(st.integers(0, 4)),
        rate=rate,
        duration=duration,
        steady_state=steady_state,
        interval=interval,
        additional=additional,
    )


@st.composite
def _data_set(draw):
    n = draw(st.integers(1, 4))
    ids = draw(st.lists(st.integers(1, 10_000), min_size=n, max_size=n, unique=True))
    doses = [draw(st.lists(_dose(), min_size=0, max_size=4)) for _ in range(n)]
    records = []
    for subject, subject_doses in zip(ids, doses, strict=True):
        # a subject needs at least one record to exist in a data set
        for _ in range(draw(st.integers(0 if subject_doses else 1, 4))):
            dv = draw(
                st.one_of(st.none(), st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))
            )
            evid = 2 if dv is None and draw(st.booleans()) else 0
            records.append(
                {"ID": subject, "TIME": draw(_times), "DV": np.nan if dv is None else dv,
                 "MDV": int(dv is None), "CMT": draw(st.integers(0, 4)), "EVID": evid}
            )  # fmt: skip
    observations = pd.DataFrame(records) if records else None
    covariates = {
        "WT": draw(st.lists(_positive, min_size=n, max_size=n)),
        "GROUP": draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)),
    }
    return NonmemData.from_doses(doses, observations=observations, covariates=covariates, ids=ids)


@given(data=_data_set())
def test_round_trip_of_generated_regimens(data, tmp_path_factory):
    """Property: write → read gives back the same doses, observations and covariates
    exactly (floats are written with repr, which round-trips)."""
    path = write_nonmem(data, tmp_path_factory.mktemp("rt") / "data.csv")
    again = read_nonmem(path)
    assert again.ids == data.ids
    assert again.doses == data.doses
    pd.testing.assert_frame_equal(again.observations, data.observations)
    pd.testing.assert_frame_equal(again.covariates, data.covariates)
