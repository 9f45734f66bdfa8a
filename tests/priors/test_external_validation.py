"""External checks of the theophylline and vancomycin priors against published numbers a
user can look up (the vancomycin checks live in tests/priors/test_library.py: AUC24 = dose /
CL of REFERENCES.md, 1000 mg q12h at CrCL 120 mL/min → 444 mg·h/L, and AUC24 by dose and
renal function against Matzke 1984's patients)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from twinsim.priors import drug_model, smoking_induction, smoking_status


def test_theophylline_clearance_after_quitting_matches_faber_fuhr():
    """Faber & Fuhr, Clin Pharmacol Ther 2004;76:178 (heavy smokers, abstinence confirmed):
    CYP1A2 activity fell by 36.1 % within a week of quitting, with a half-life of 38.6 h.
    The model's clearance of a smoker 168 h after quitting lies 36.1 % ± 3 points below
    its value while smoking (computed 34.7 %: 4.9 % of the induction is left after 4.4
    half-lives), and 48 h after quitting 42 % of the induced excess is left (the
    published half-life; bound 35–45 %). Smokers' clearance is 1.57 × non-smokers',
    inside the primary studies' 1.57–2.2 (Powell 1977, Grygiel & Birkett 1981, Hunt
    1976)."""
    model = drug_model("theophylline")
    fold = model.theta["smoking_factor"]
    half_life = model.theta["induction_half_life"]
    smoking, quit = smoking_status("current", 1.0)
    times = np.array([1.0, 49.0, 169.0])
    induction = np.asarray(smoking_induction(times, smoking, quit, half_life))
    clearance = 1.0 + (fold - 1.0) * induction  # relative to a non-smoker
    drop_week = 1.0 - clearance[2] / clearance[0]
    assert drop_week == pytest.approx(0.361, abs=0.03)
    excess_left_48h = (clearance[1] - 1.0) / (clearance[0] - 1.0)
    assert excess_left_48h == pytest.approx(math.exp(-math.log(2) * 48 / 38.6), rel=1e-6)
    assert 0.35 <= excess_left_48h <= 0.45
    assert 1.5 <= fold <= 2.2
