"""Levels files: plain CSV and NONMEM layout, validated like the what-if spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from twinsim.scenarios._levels import MAX_LEVELS_BYTES, LevelsError, read_levels

DATA = Path(__file__).parents[1] / "data"


def test_plain_csv_with_units_below_limit_forms_and_outputs() -> None:
    text = (
        "Time (h),Concentration,kind,LLOQ\n"
        "1.5 d,12 ug/mL,,\n"
        "12,<LLOQ,conc,2\n"
        "\n"
        "47.5,BLQ,,0.5\n"
        "60,2.4,INR,\n"
    )
    data = read_levels(text)
    assert data.layout == "csv" and data.doses == () and data.subject is None
    got = [(o.time, o.value, o.output, o.below_lloq, o.lloq) for o in data.observations]
    assert got == [
        (12.0, None, "conc", True, 2.0),
        (36.0, 12.0, "conc", False, None),
        (47.5, None, "conc", True, 0.5),
        (60.0, 2.4, "inr", False, None),
    ]


def test_semicolon_and_tab_separated_exports() -> None:
    for sep in (";", "\t"):
        data = read_levels(f"time{sep}value\n12{sep}8.5\n24 h{sep}<1 mg/L\n")
        assert [(o.time, o.value, o.lloq) for o in data.observations] == [
            (12.0, 8.5, None),
            (24.0, None, 1.0),
        ]


def test_every_bad_cell_is_named_by_line_with_the_spec_message() -> None:
    with pytest.raises(
        LevelsError, match=r"line 2: `time` must be ≥ 0 h, got -1 h.*line 3: `value`"
    ):
        read_levels("time,value\n-1,3\n4,abc\n")
    with pytest.raises(LevelsError, match=r"line 2: is below the limit .* gives no limit"):
        read_levels("time,value\n5,<LLOQ\n")


def test_header_without_time_or_value_says_what_is_needed() -> None:
    with pytest.raises(LevelsError, match=r"line 1: no `value` column.*got 'time, result'"):
        read_levels("time,result\n1,2\n")
    with pytest.raises(LevelsError, match="is empty"):
        read_levels("\n\n", name="empty.csv")


def test_size_limit_and_encoding_are_checked_before_parsing(tmp_path: Path) -> None:
    big = b"time,value\n" + b"1,2\n" * (MAX_LEVELS_BYTES // 4 + 1)
    with pytest.raises(LevelsError, match=r"big.csv is 1.0 MB; levels files are limited to 1 MB"):
        read_levels(big, name="big.csv")
    path = tmp_path / "big.csv"
    path.write_bytes(big)
    with pytest.raises(LevelsError, match="limited to 1 MB"):
        read_levels(path)
    with pytest.raises(LevelsError, match="is not UTF-8 text"):
        read_levels(b"time,value\n1,\xff\n")


def test_nonmem_layout_gives_levels_and_expanded_doses() -> None:
    text = (
        "ID TIME AMT RATE II ADDL EVID MDV DV\n"
        "7 0 1000 1000 12 2 1 1 .\n"
        "7 11.5 0 0 0 0 0 0 9.1\n"
        "7 35.5 0 0 0 0 0 0 12.4\n"
        "7 36 0 0 0 0 2 1 .\n"
    )
    data = read_levels(text, name="patient 7.csv")
    assert data.layout == "nonmem" and data.subject == 7
    assert [(o.time, o.value) for o in data.observations] == [(11.5, 9.1), (35.5, 12.4)]
    assert data.doses == tuple(
        {"time": t, "amount": 1000.0, "duration": 1.0} for t in (0.0, 12.0, 24.0)
    )


def test_nonmem_with_several_subjects_needs_a_subject() -> None:
    path = DATA / "theophylline_nonmem.csv"
    with pytest.raises(LevelsError, match=r"holds 12 subjects \(ID 1, 2, 3.*choose one"):
        read_levels(path)
    data = read_levels(path, subject="3")
    assert data.subject == 3 and len(data.observations) == 11
    assert data.doses[0]["time"] == 0.0 and data.doses[0]["amount"] > 0
    with pytest.raises(LevelsError, match=r"`subject` 99 is not an ID.*its IDs: 1, 2"):
        read_levels(path, subject=99)


def test_nonmem_errors_keep_the_line_number() -> None:
    with pytest.raises(LevelsError, match=r"line 3, column TIME: .x. is not a number"):
        read_levels("ID,TIME,AMT,DV\n1,0,100,.\n1,x,0,3\n")


def test_docstring_examples_run() -> None:
    import doctest

    from twinsim.scenarios import _levels

    for module in (_levels,):
        result = doctest.testmod(
            module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
        )
        assert result.failed == 0 and result.attempted > 0, module.__name__
