"""The warfarin model's maintenance doses against the FDA label and the IWPC algorithm.

Typical (and population) steady-state maintenance doses are found by root finding
(bisection on log dose) on the *simulated* steady-state INR: an SS=1 once-daily dose
record puts S-warfarin and both transit chains at their periodic steady state, and the INR
averaged over the day must equal 2.5 (the middle of 2–3). See ``priors/_warfarin.py`` for
the open calibration these tests check and its sources.
"""

from __future__ import annotations

import numpy as np
import pytest

from twinsim.priors import drug_metadata, drug_model
from twinsim.priors._warfarin import (
    IWPC_REFERENCE_DOSE_MG_DAY,
    iwpc_dose_ratio,
    maintenance_dose,
)

CYP2C9 = ("*1/*1", "*1/*2", "*1/*3", "*2/*2", "*2/*3", "*3/*3")
VKORC1 = ("G/G", "G/A", "A/A")
N_POPULATION = 100


@pytest.fixture(scope="module")
def doses():
    """Typical doses of 65-year-olds by genotype (18) and 100 population draws of *1/*1
    G/A (seed 11), all in one batch of root finding (one compilation)."""
    model = drug_model("warfarin")
    cyp = [c for v in VKORC1 for c in CYP2C9]
    vk = [v for v in VKORC1 for _ in CYP2C9]
    typical = np.asarray(
        model.typical_parameters({"age": [65.0] * 18, "cyp2c9": cyp, "vkorc1": vk})
    )
    draws = model.sample_parameters(
        11,
        {
            "age": np.full(N_POPULATION, 65.0),
            "cyp2c9": np.full(N_POPULATION, "*1/*1"),
            "vkorc1": np.full(N_POPULATION, "G/A"),
        },
    )
    params = np.concatenate([typical, np.asarray(draws.parameters[:, 0, :])])
    dose = maintenance_dose(params)
    return dose[:18].reshape(3, 6), dose[18:]


def test_reference_dose_is_iwpc_calibration(doses):
    """The open calibration: the typical 65-year-old *1/*1 G/G patient needs IWPC's
    40.2 mg/week (5.75 mg/day) for INR 2.5 — within 2 % (bisection precision 0.05 %, the
    calibration factor was rounded to 4 digits)."""
    typical, _ = doses
    assert typical[0, 0] == pytest.approx(IWPC_REFERENCE_DOSE_MG_DAY, rel=0.02)
    assert 5.0 <= typical[0, 0] <= 7.0  # label Table 5: *1/*1 G/G 5-7 mg/day


def test_typical_doses_match_the_label_pharmacogenomic_table(doses):
    """FDA warfarin (Coumadin) label 2017, Table 5 (verified against its reproduction in
    Cleve Clin J Med 2011;78:243, Table 2): expected maintenance dose ranges by CYP2C9 ×
    VKORC1, mg/day.

    No model whose CYP2C9 and VKORC1 effects multiply can put all 18 cells inside: G/G
    *1/*2 ≥ 5 and G/A *1/*2 ≤ 4 need a G/A factor ≤ 0.8, G/G *2/*3 ≥ 3 and G/A *2/*3 ≤ 2
    one ≤ 0.67, while G/G *1/*1 ≤ 7 and G/A *1/*1 ≥ 5 need ≥ 0.71. So the test states its
    tolerance: every typical dose within 0.75 mg/day of its range (measured: largest miss
    0.72, G/A *1/*1 at 4.28 mg/day), at least 7 of 18 inside (measured 7), mean miss
    ≤ 0.25 mg/day (measured 0.18). The uncalibrated model (9.33 mg/day for *1/*1 G/G,
    CYP2C9 *3/*3 at 0.15×) misses by up to 3.3 mg/day."""
    typical, _ = doses
    table = drug_metadata("warfarin")["label"]["pharmacogenomic_table_mg_day"]
    misses = []
    for i, vk in enumerate(VKORC1):
        for j, cyp in enumerate(CYP2C9):
            low, high = table[vk][cyp]
            misses.append(max(low - typical[i, j], typical[i, j] - high, 0.0))
    misses = np.array(misses)
    assert misses.max() <= 0.75, misses.round(2)
    assert (misses == 0).sum() >= 7
    assert misses.mean() <= 0.25


def test_genotype_dose_ratios_match_iwpc(doses):
    """IWPC 2009 (NEJM 360:753) pharmacogenetic algorithm at the reference patient (65 y,
    170 cm, 75 kg): dose ratios to *1/*1 (G/G) of each CYP2C9 diplotype and each VKORC1
    genotype, within 3 % (the calibration passes through the nonlinear INR model; the
    bisection adds 0.05 %). Combined genotypes multiply here but add on IWPC's square-root
    scale, so e.g. A/A *3/*3 is 0.21× here and 0.13× by IWPC: not tested."""
    typical, _ = doses
    for j, cyp in enumerate(CYP2C9[1:], start=1):
        assert typical[0, j] / typical[0, 0] == pytest.approx(
            iwpc_dose_ratio(f"cyp2c9_{cyp}"), rel=0.03
        )
    for i, vk in enumerate(VKORC1[1:], start=1):
        assert typical[i, 0] / typical[0, 0] == pytest.approx(
            iwpc_dose_ratio(f"vkorc1_{vk}"), rel=0.03
        )
    # ordering of the label: every step to a less active CYP2C9 lowers the dose
    assert np.all(np.diff(typical[:, [0, 1, 2, 4, 5]], axis=1) < 0)


def test_population_interval_of_maintenance_dose_covers_the_published_spread(doses):
    """100 population draws of a 65-year-old *1/*1 G/A patient (seed 11): the 90 %
    interval of the maintenance dose covers the label's range for this genotype (5–7
    mg/day) and lies within the label's usual 2–10 mg/day widened to 1–15 mg/day.
    Measured: 1.9–8.8 mg/day (median 4.4). With the IIV values read as variances (the
    previous reading) it would be ≈ 1.1–17 mg/day (log-SD of CL·EC50 0.85 instead of 0.50). Failure rate for another seed: the
    quantiles of 100 draws move by ≈ 15 %; the margins are ≥ 2 standard errors."""
    _, population = doses
    q05, q95 = np.quantile(population, [0.05, 0.95])
    assert q05 <= 5.0 and q95 >= 7.0
    assert q05 >= 1.0 and q95 <= 15.0
