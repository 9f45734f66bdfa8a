"""Staged what-ifs: the same answer as run_whatif, with the fit and the search reused."""

from __future__ import annotations

import numpy as np
import pytest

from twinsim.scenarios import TargetSpec, load_whatif, run_whatif, whatif_examples
from twinsim.scenarios._whatif._session import WhatIfSession, fit_key, search_key


@pytest.fixture(scope="module")
def spec():
    return load_whatif(whatif_examples()["whatif_vancomycin_renal"])


def _with_level(spec, value: float):
    first = spec.observations[0].model_copy(update={"value": value})
    return spec.model_copy(update={"observations": (first, *spec.observations[1:])})


def test_keys_follow_what_each_stage_depends_on(spec) -> None:
    renamed = spec.model_copy(
        update={"patient": spec.patient.model_copy(update={"id": "other"}), "title": "x"}
    )
    fewer = spec.model_copy(update={"candidates": spec.candidates[:1]})
    assert fit_key(renamed) == fit_key(fewer) == fit_key(spec)
    assert search_key(fewer) == search_key(spec)
    assert fit_key(_with_level(spec, 30.0)) != fit_key(spec)
    target = TargetSpec(metric="auc24", low=450, high=550)
    assert fit_key(spec.model_copy(update={"target": target})) == fit_key(spec)
    assert search_key(spec.model_copy(update={"target": target})) != search_key(spec)
    method = spec.model_copy(update={"fit": spec.fit.model_copy(update={"method": "laplace"})})
    assert fit_key(method) != fit_key(spec)


def test_session_answers_as_run_whatif_and_reuses_fit_and_search(spec) -> None:
    expected = run_whatif(spec)
    session = WhatIfSession()
    got = session.run(spec)
    assert session.last["fit_cached"] is False and session.last["search_cached"] is False
    assert [f.name for f in got.forecasts] == [f.name for f in expected.forecasts]
    assert [f.source for f in got.forecasts] == [f.source for f in expected.forecasts]
    for a, b in zip(got.forecasts, expected.forecasts, strict=True):
        assert a.pta == b.pta
        np.testing.assert_array_equal(a.bands["conc"], b.bands["conc"])
        assert a.metrics == b.metrics
    assert got.recommendation_text() == expected.recommendation_text()
    assert got.fit["parameters"] == expected.fit["parameters"]

    # a regimen change: only the forecast runs
    fewer = spec.model_copy(update={"candidates": spec.candidates[:2]})
    result = session.run(fewer)
    assert session.last["fit_cached"] and session.last["search_cached"]
    assert [f.source for f in result.forecasts][:2] == ["candidate", "candidate"]
    # a new target: same fit, new search
    target = TargetSpec(metric="auc24", low=450, high=550)
    session.run(fewer.model_copy(update={"target": target}))
    assert session.last["fit_cached"] and not session.last["search_cached"]
    # another level: refit
    session.run(_with_level(fewer, 31.0))
    assert not session.last["fit_cached"] and not session.last["search_cached"]
    assert session.sizes == {"fits": 2, "searches": 3}


def test_least_recently_used_fits_are_dropped(spec) -> None:
    session = WhatIfSession(max_fits=1, max_searches=1)
    session.run(spec)
    session.run(_with_level(spec, 30.0))
    session.run(spec)
    assert session.last["fit_cached"] is False
    assert session.sizes == {"fits": 1, "searches": 1}


def test_docstring_examples_run() -> None:
    import doctest

    from twinsim.scenarios._whatif import _session

    for module in (_session,):
        result = doctest.testmod(
            module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
        )
        assert result.failed == 0 and result.attempted > 0, module.__name__


def test_a_spec_fits_by_importance_sampling(spec) -> None:
    """``fit: {method: importance}``: the forecasts draw from the corrected posterior, and
    the fit's diagnostics carry the weights' Pareto k and effective sample size."""
    fit = spec.fit.model_copy(update={"method": "importance", "num_samples": 400})
    result = run_whatif(spec.model_copy(update={"fit": fit}))
    assert result.fit["method"] == "importance"
    diagnostics = result.fit["diagnostics"]
    assert diagnostics["pareto_k"] < 0.7 and diagnostics["importance_ess"] > 400
    laplace = run_whatif(
        spec.model_copy(update={"fit": fit.model_copy(update={"method": "laplace"})})
    )
    for a, b in zip(result.forecasts, laplace.forecasts, strict=True):
        assert np.isfinite(a.bands["conc"]).all()
        assert not np.array_equal(a.bands["conc"], b.bands["conc"])
