"""Teaching cases generated from the twin machinery: patients, labs, course, questions.

Every number of a case comes from one virtual patient: covariates drawn by
:func:`twinsim.twin.draw_candidates` (ancestry quotas, then the spec's constraints), the
drug's population model (:func:`twinsim.priors.drug_model`) with that patient's random
effects (keys from ``(seed, case index)``), and :func:`twinsim.simulators.simulate`. The
answer key of each question and every distractor are re-simulated: a distractor is shown
only when the simulator says it fails the question's criterion.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...priors import (
    GENES,
    CovariateError,
    diplotype_frequencies,
    drug_metadata,
    drug_model,
    phenotype,
)
from ...priors._vancomycin import VANCOMYCIN_CRCL_OPTIONS
from ...simulators import DosingEvents, simulate
from ...twin import Lifestyle, PatientTwin, VirtualPopulationConfig, generate_population
from ._course import changing_clearance_model, clearance_factor, inhibitor_clearance_ratio
from ._spec import CaseError, CaseSpec, CaseTemplate

__all__ = ["CaseSet", "draw_patients", "generate_cases", "set_summary", "simulate_rows", "try_dose"]

#: Cases simulated together (one compiled program per template and row count).
ROWS = 16
#: A requested genotype rarer than this in an ancestry group is refused (1 in 1000).
MIN_GENOTYPE_FREQUENCY = 1e-3
_ANCESTRY_WORDS = {"european": "European", "african": "African", "east_asian": "East Asian"}
_LOINC = {
    ("warfarin", "inr"): ("6301-6", "INR in Platelet poor plasma by Coagulation assay", "1"),
    ("vancomycin", "conc"): (
        "4092-3",
        "Vancomycin [Mass/volume] in Serum or Plasma --trough",
        "mg/L",
    ),
    ("theophylline", "conc"): ("4049-3", "Theophylline [Mass/volume] in Serum or Plasma", "mg/L"),
}


# ------------------------------------------------------------------------- population
def _seed(seed: int, *parts: int) -> int:
    """A child seed of ``seed`` for ``parts`` (ancestry stratum …), stable across runs."""
    return int(np.random.SeedSequence([seed, *parts]).generate_state(1)[0] >> 1)


def _quotas(mix: Mapping[str, float], n: int) -> dict[str, int]:
    """Largest-remainder allocation of ``n`` cases to ancestry groups by share."""
    raw = {k: v * n for k, v in mix.items()}
    out = {k: math.floor(v) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: (-(raw[k] - out[k]), k))[: n - sum(out.values())]:
        out[k] += 1
    return out


def _population_config(spec: CaseSpec, template: CaseTemplate, ancestry: str):
    request, defaults = spec.population, template.population
    age_range = request.age_range or defaults.age_range
    crcl_range = request.crcl_range or defaults.crcl_range
    genotype = request.genotype if request.genotype is not None else defaults.genotype
    criteria = []
    for gene, diplotypes in genotype.items():
        column = GENES[gene.upper()].column
        wanted = frozenset(diplotypes)
        criteria.append(_InSet(column, wanted))
    if crcl_range is not None:
        criteria.append(f"crcl >= {crcl_range[0]!r} and crcl <= {crcl_range[1]!r}")
    lifestyle = Lifestyle(current_smoker=1.0, former_smoker=0.0) if defaults.smoker else Lifestyle()
    return VirtualPopulationConfig(
        ancestry={ancestry: 1.0},
        age_range=tuple(age_range),
        female_fraction=request.female_fraction,
        alleles={g: tuple(a) for g, a in defaults.alleles.items()},
        lifestyle=lifestyle,
        criteria=tuple(criteria),
        crcl_options=VANCOMYCIN_CRCL_OPTIONS if template.drug == "vancomycin" else {},
    )


@dataclass(frozen=True)
class _InSet:
    """Criterion ``table[column] in values`` (a callable criterion with a readable name)."""

    column: str
    values: frozenset[str]

    @property
    def __name__(self) -> str:
        return f"{self.column} in {sorted(self.values)}"

    def __call__(self, table: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.isin(table[self.column], list(self.values))


def _genotype_probability(
    config: VirtualPopulationConfig, gene: str, wanted: Sequence[str]
) -> float:
    alleles, freqs = config.allele_table()[GENES[gene].name]
    (ancestry,) = config.ancestries
    table = dict(zip(alleles, freqs[config.ancestries.index(ancestry)], strict=True))
    by_diplotype = diplotype_frequencies(gene, table)
    return float(sum(by_diplotype.get(d, 0.0) for d in wanted))


def draw_patients(spec: CaseSpec, template: CaseTemplate | None = None) -> dict[str, np.ndarray]:
    """The covariates of a case set's patients, one row per case, before any simulation.

    Ancestry groups get fixed quotas (largest remainder of ``n_cases · share``); within a
    group, patients are the first candidates of :func:`twinsim.twin.generate_population`
    meeting the constraints, with a seed derived from ``(spec.seed, group index)``.

    Raises
    ------
    CaseError
        A requested genotype rarer than 1 in 1000 in a requested ancestry group (the message
        gives its frequency there), or constraints no candidate meets.

    Examples
    --------
    >>> spec = CaseSpec(template="vancomycin_aki", n_cases=4, seed=1,
    ...                 population={"ancestry": {"european": 1.0}})
    >>> table = draw_patients(spec)
    >>> len(table["age"]), bool(((table["crcl"] >= 50) & (table["crcl"] <= 140)).all())
    (4, True)
    """
    template = template or spec.resolved_template()
    quotas = _quotas(spec.population.ancestry, spec.n_cases)
    genotype = (
        spec.population.genotype
        if spec.population.genotype is not None
        else template.population.genotype
    )
    parts = []
    for index, (ancestry, n) in enumerate(sorted(quotas.items())):
        if n == 0:
            continue
        try:
            config = _population_config(spec, template, ancestry)
        except CovariateError as error:
            raise CaseError([f"`population`: {error}"]) from None
        probability = 1.0
        for gene, wanted in genotype.items():
            p = _genotype_probability(config, gene, wanted)
            if p < MIN_GENOTYPE_FREQUENCY:
                raise CaseError(
                    [
                        f"`population.genotype.{gene}` {wanted} cannot be met in ancestry "
                        f"{ancestry!r}: its frequency there is {p:.2g} (expected at least "
                        f"{MIN_GENOTYPE_FREQUENCY:g}, alleles {list(config.allele_table()[gene][0])}); "
                        "choose diplotypes present in that group or drop the group from "
                        "`population.ancestry` — no other genotype is substituted"
                    ],
                    title="impossible population request",
                )
            probability *= p
        limit = int(min(200 * n / probability + 10_000, 2_000_000))
        try:
            population = generate_population(
                config, n, _seed(spec.seed, index), max_candidates=limit
            )
        except CovariateError as error:
            raise CaseError(
                [f"`population` for ancestry {ancestry!r}: {error}"],
                title="impossible population request",
            ) from None
        parts.append(dict(population.covariates))
    table = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    # cases in a fixed interleaved order, so case 1 is not always of the first group
    order = np.argsort(np.arange(len(table["id"])) * 7919 % max(len(table["id"]), 1), kind="stable")
    return {k: v[order] for k, v in table.items()}


def set_summary(
    table: Mapping[str, np.ndarray], spec: CaseSpec, template: CaseTemplate | None = None
) -> dict[str, Any]:
    """Requested against obtained mix: sex, ancestry, age and genotype, with the binomial
    standard error of each share and its z-score.

    Expected genotype shares are the requested ancestry mix of the Hardy–Weinberg
    diplotype frequencies, conditional on the requested diplotypes. Age is uniform on the
    requested range (mean ``(lo + hi)/2``, SD ``(hi − lo)/√12``); constraints on renal
    function shift it, which the summary says.

    Examples
    --------
    >>> spec = CaseSpec(template="warfarin_pgx_initiation", n_cases=20, seed=2)
    >>> summary = set_summary(draw_patients(spec), spec)
    >>> sorted(summary)
    ['age', 'ancestry', 'genotype', 'n', 'notes', 'sex']
    """
    template = template or spec.resolved_template()
    n = len(table["age"])
    request = spec.population

    def share(observed: float, expected: float) -> dict[str, float]:
        se = math.sqrt(max(expected * (1 - expected), 1e-12) / n)
        return {
            "requested": round(expected, 4),
            "obtained": round(observed, 4),
            "se": round(se, 4),
            "z": round((observed - expected) / se, 3),
        }

    female = float(np.mean(table["female"]))
    ancestry = {
        group: share(float(np.mean(table["ancestry"] == group)), s)
        for group, s in request.ancestry.items()
    }
    lo, hi = request.age_range or template.population.age_range
    sd = (hi - lo) / math.sqrt(12)
    mean = float(np.mean(table["age"]))
    age = {
        "requested_range": [lo, hi],
        "requested_mean": (lo + hi) / 2,
        "obtained_mean": round(mean, 2),
        "se": round(sd / math.sqrt(n), 3),
        "z": round((mean - (lo + hi) / 2) / (sd / math.sqrt(n)), 3),
        "obtained_range": [
            round(float(table["age"].min()), 1),
            round(float(table["age"].max()), 1),
        ],
    }
    genotype_request = (
        request.genotype if request.genotype is not None else template.population.genotype
    )
    genes = template.genes_shown or list(genotype_request)
    quotas = _quotas(request.ancestry, spec.n_cases)
    genotype: dict[str, dict[str, dict[str, float]]] = {}
    for gene in genes:
        column = GENES[gene.upper()].column
        expected: dict[str, float] = {}
        for ancestry_name, count in quotas.items():
            config = _population_config(spec, template, ancestry_name)
            alleles, freqs = config.allele_table()[GENES[gene.upper()].name]
            freq = diplotype_frequencies(gene, dict(zip(alleles, freqs[0], strict=True)))
            wanted = genotype_request.get(gene.upper())
            if wanted:
                freq = {d: f for d, f in freq.items() if d in wanted}
            total = sum(freq.values())
            for d, f in freq.items():
                expected[d] = expected.get(d, 0.0) + count / spec.n_cases * f / total
        observed = {d: float(np.mean(table[column] == d)) for d in set(table[column])}
        genotype[gene] = {
            d: share(observed.get(d, 0.0), expected.get(d, 0.0))
            for d in sorted(set(expected) | set(observed))
            if expected.get(d, 0.0) >= 1e-4 or observed.get(d, 0.0) > 0
        }
    notes = [
        "ancestry groups get fixed quotas (largest remainder), so their shares differ from "
        "the request only by rounding",
        "z = (obtained − requested) / SE with SE = √(p(1 − p)/n); |z| > 3 happens by chance "
        "in about 0.3 % of comparisons",
    ]
    if request.crcl_range or template.population.crcl_range:
        notes.append(
            "a creatinine-clearance range selects younger, heavier patients: age and sex shift"
        )
    return {
        "n": n,
        "sex": {"female": share(female, request.female_fraction)},
        "ancestry": ancestry,
        "age": age,
        "genotype": genotype,
        "notes": notes,
    }


# ------------------------------------------------------------------------- simulation
@dataclass(frozen=True)
class _Row:
    """One simulated variant of a case: covariates, regimen amounts and the event."""

    covariates: Mapping[str, Any]
    doses: tuple[tuple[float, float], ...]  # (time, amount)
    event: bool = True


def simulate_rows(
    template: CaseTemplate, eta: np.ndarray, rows: Sequence[_Row], times: np.ndarray
) -> np.ndarray:
    """Outputs ``[row, time, output]`` of the case's model for each variant.

    Rows are simulated :data:`ROWS` at a time (padded), so each template compiles once.
    """
    pm = drug_model(template.drug)
    model = changing_clearance_model(pm.structural)
    event = template.event
    out = []
    for start in range(0, len(rows), ROWS):
        chunk = list(rows[start : start + ROWS])
        chunk += [chunk[-1]] * (ROWS - len(chunk))
        params, doses = [], []
        for row in chunk:
            covariates = {k: [v] for k, v in row.covariates.items() if k in pm.covariate_names}
            base = np.asarray(pm.individual_parameters(covariates, eta[None, :]))[0]
            change = (0.0, 1.0, 1.0)
            if event is not None and row.event and event.kind != "smoking_cessation":
                change = (event.at, event.half_time, _event_ratio(template, row.covariates))
            params.append(np.concatenate([base, change]))
            twin = _twin(template, row.covariates)
            doses.append(
                [
                    twin.dose(t, a, infusion_h=template.regimen.infusion or None)
                    for t, a in row.doses
                ]
            )
        solution = simulate(
            model, np.asarray(params), DosingEvents.from_doses(doses), np.asarray(times)
        )
        status = np.asarray(solution.status)
        if (status != 0).any():
            raise CaseError(
                [
                    f"the {template.drug} simulation failed for variants {np.flatnonzero(status).tolist()}"
                ],
                title="simulation failed",
            )
        out.append(np.asarray(solution.outputs)[: len(rows) - start])
    return np.concatenate(out)[: len(rows)]


def _twin(template: CaseTemplate, covariates: Mapping[str, Any]) -> PatientTwin:
    pm = drug_model(template.drug)
    return PatientTwin.create(template.drug, {k: covariates[k] for k in pm.covariate_names})


def _event_ratio(template: CaseTemplate, covariates: Mapping[str, Any]) -> float:
    """Clearance after the event over before it, from the model's covariates when it can."""
    event = template.event
    pm = drug_model(template.drug)
    if event.kind == "renal_decline":
        row = {k: [covariates[k]] for k in pm.covariate_names}
        i_cl = pm.structural.parameter_index("cl")
        before = float(pm.typical_parameters(row)[0, i_cl])
        after = float(
            pm.typical_parameters({**row, "crcl": [covariates["crcl"] * event.crcl_ratio]})[0, i_cl]
        )
        return after / before
    ratio, _ = inhibitor_clearance_ratio(pm, covariates, event.drug, event.maintenance_mg_per_day)
    return ratio


def _eta(template: CaseTemplate, seed: int, case_id: int, row: Mapping[str, Any]) -> np.ndarray:
    """The case's random effects, keyed on (seed, case index) (``subject_keys``)."""
    pm = drug_model(template.drug)
    covariates = {k: [row[k]] for k in pm.covariate_names}
    sample = pm.sample_parameters(seed, covariates, ids=[case_id])
    return np.asarray(sample.eta, dtype=float)[0]


# ------------------------------------------------------------------------- the case
@dataclass(frozen=True)
class CaseSet:
    """A generated set: the spec, the template, the cases (JSON-ready dicts) and the
    summary of the set's mix against the request."""

    spec: CaseSpec
    template: CaseTemplate
    cases: tuple[dict[str, Any], ...]
    summary: dict[str, Any]


def _fmt(value: float, digits: int) -> str:
    text = f"{value:.{digits}f}"
    return "0" + text[2:] if text.startswith("-0") and float(text) == 0 else text


def _digits(template: CaseTemplate) -> int:
    return 1  # INR and mg/L both read to one decimal


def _regimen_doses(
    template: CaseTemplate, first: float, later: float | None = None, switch: float | None = None
) -> tuple[tuple[float, float], ...]:
    regimen = template.regimen
    times = np.arange(regimen.start, template.horizon, regimen.interval)
    return tuple(
        (
            float(t),
            float(
                later if later is not None and switch is not None and t >= switch - 1e-9 else first
            ),
        )
        for t in times
    )


def _time_grid(template: CaseTemplate) -> np.ndarray:
    q = template.questions
    grid = [np.arange(0.0, template.horizon + 1e-9, template.monitoring.plot_every)]
    grid.append(np.asarray(template.monitoring.times))
    grid.append(
        np.asarray(
            [q.evaluate_time, q.interpret_time, q.predict_time, q.explain_from, q.explain_to]
        )
    )
    if q.evaluate == "auc24":
        grid.append(np.arange(q.evaluate_time - 24.0, q.evaluate_time + 1e-9, 0.25))
    if template.event is not None:
        grid.append(np.asarray([template.event.at]))
    return np.unique(np.round(np.concatenate(grid), 6))


def _at(times: np.ndarray, values: np.ndarray, t: float) -> float:
    index = int(np.argmin(np.abs(times - t)))
    return float(values[index])


def _metric(template: CaseTemplate, times: np.ndarray, values: np.ndarray) -> float:
    q = template.questions
    if q.evaluate == "auc24":
        window = (times >= q.evaluate_time - 24.0 - 1e-9) & (times <= q.evaluate_time + 1e-9)
        return float(np.trapezoid(values[window], times[window]))
    return _at(times, values, q.evaluate_time)


def _target(template: CaseTemplate) -> dict[str, Any]:
    target = dict(drug_metadata(template.drug)["therapeutic_target"])
    unit = "mg·h/L" if template.questions.evaluate == "auc24" else target["unit"]
    return {
        "low": float(target["low"]),
        "high": float(target["high"]),
        "unit": unit,
        "source": str(target["source"]),
    }


def _options(labels: Sequence[tuple[str, Any, bool, str]]) -> list[dict[str, Any]]:
    return [
        {
            "letter": "ABCDEFGH"[i],
            "label": label,
            "value": value,
            "correct": correct,
            "evidence": evidence,
        }
        for i, (label, value, correct, evidence) in enumerate(labels)
    ]


def _case_patient(
    template: CaseTemplate, table: Mapping[str, np.ndarray], i: int
) -> dict[str, Any]:
    row = {k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in table.items()}
    if template.event is not None and template.event.kind == "smoking_cessation":
        row["smoking"] = 1.0
        row["smoking_quit_time"] = float(template.event.at)
        row["cigarettes_per_day"] = max(float(row["cigarettes_per_day"]), 10.0)
    return row


def _dose_for(template: CaseTemplate, covariates: Mapping[str, Any]) -> float:
    regimen = template.regimen
    if regimen.dose_per_kg is None:
        return float(regimen.dose)
    raw = regimen.dose_per_kg * float(covariates["weight"])
    return float(max(regimen.round_to, round(raw / regimen.round_to) * regimen.round_to))


def _make_case(
    spec: CaseSpec, template: CaseTemplate, row: Mapping[str, Any], index: int
) -> dict[str, Any]:
    q, event, digits = template.questions, template.event, _digits(template)
    pm = drug_model(template.drug)
    eta = _eta(template, _seed(spec.seed, 1_000_003), index, row)
    times = _time_grid(template)
    output_names = pm.structural.output_names
    k_out = output_names.index(template.monitoring.output)
    target = _target(template)
    mid = (target["low"] + target["high"]) / 2

    dose = _dose_for(template, row)
    titration = None
    if template.regimen.titrate:
        # stable on their own dose: the option whose level at the event is nearest mid-target
        rows = [_Row(row, _regimen_doses(template, d), event=False) for d in q.dose_options]
        out = simulate_rows(template, eta, rows, times)
        # the mean level over the dosing interval before the event (peaks and troughs of a
        # short interval both matter; for the slow INR it is the INR itself)
        until = event.at if event else q.decision_time
        window = (times >= until - template.regimen.interval - 1e-9) & (times <= until + 1e-9)
        at_event = [
            float(np.trapezoid(out[j, window, k_out], times[window]) / np.ptp(times[window]))
            for j in range(len(rows))
        ]
        dose = float(q.dose_options[int(np.argmin(np.abs(np.asarray(at_event) - mid)))])
        titration = {"mean_levels_before_event": [round(v, 3) for v in at_event]}

    course = _Row(row, _regimen_doses(template, dose))
    rows = [course]
    rows += [_Row(row, _regimen_doses(template, dose, d, q.decision_time)) for d in q.dose_options]
    factor_rows = []
    for factor in q.factors:
        if factor.remove_event:
            changed = dict(row)
            if event is not None and event.kind == "smoking_cessation":
                changed["smoking_quit_time"] = math.inf
            factor_rows.append(_Row(changed, course.doses, event=False))
        else:
            changed = {**row, factor.covariate: factor.value}
            factor_rows.append(_Row(changed, course.doses))
    rows += factor_rows
    out = simulate_rows(template, eta, rows, times)
    level = out[:, :, k_out]
    course_level = level[0]

    # ---- choose a dose
    metrics = [_metric(template, times, level[1 + j]) for j in range(len(q.dose_options))]
    meets = [target["low"] <= m <= target["high"] for m in metrics]
    if any(meets):
        key = min((j for j in range(len(metrics)) if meets[j]), key=lambda j: abs(metrics[j] - mid))
        criterion = (
            f"{q.evaluate} within {target['low']:g}–{target['high']:g}{_unit_text(target['unit'])}"
        )
        wrong = [j for j in range(len(metrics)) if not meets[j]]
    else:
        key = int(np.argmin(np.abs(np.asarray(metrics) - mid)))
        criterion = f"{q.evaluate} closest to {mid:g}{_unit_text(target['unit'])} (no option reaches the target)"
        wrong = [j for j in range(len(metrics)) if abs(metrics[j] - mid) > abs(metrics[key] - mid)]
    distractors = sorted(wrong, key=lambda j: (abs(j - key), j))[:3]
    shown = sorted([key, *distractors])
    what = "AUC over the 24 h ending " if q.evaluate == "auc24" else _output_word(template) + " "
    goal = (
        f"within {target['low']:g}–{target['high']:g}{_unit_text(target['unit'])}"
        if any(meets)
        else f"closest to {mid:g}{_unit_text(target['unit'])} (no option reaches "
        f"{target['low']:g}–{target['high']:g})"
    )
    choose = {
        "kind": "choose_dose",
        "stem": (
            f"From hour {q.decision_time:g} the dose every {template.regimen.interval:g} h is "
            f"changed. Which dose gives the {what}at hour {q.evaluate_time:g} {goal}?"
        ),
        "criterion": criterion,
        "options": _options(
            [
                (
                    f"{q.dose_options[j]:g} mg every {template.regimen.interval:g} h",
                    q.dose_options[j],
                    j == key,
                    f"simulated {q.evaluate} at hour {q.evaluate_time:g}: {metrics[j]:.1f}{_unit_text(target['unit'])}",
                )
                for j in shown
            ]
        ),
        "explanation": (
            f"Re-simulating this patient's twin with each dose from hour {q.decision_time:g}: "
            + "; ".join(
                f"{q.dose_options[j]:g} mg → {metrics[j]:.1f}{_unit_text(target['unit'])}"
                for j in shown
            )
            + f". Only {q.dose_options[key]:g} mg meets the criterion ({criterion}). "
            f"Target source: {target['source']}"
        ),
        "metric_time_h": q.evaluate_time,
    }

    # ---- interpret a level
    lo, hi = q.interpret_range
    value = round(_at(times, course_level, q.interpret_time), digits)
    category = "below" if value < lo else "above" if value > hi else "within"
    interpret = {
        "kind": "interpret_level",
        "stem": (
            f"The {_output_word(template)} at hour {q.interpret_time:g} is "
            f"{_fmt(value, digits)}{_unit_text(_unit(template))}. How does it compare with {lo:g}–{hi:g}"
            f"{_unit_text(_unit(template))}?"
        ),
        "criterion": f"the measured value {_fmt(value, digits)} lies {category} {lo:g}–{hi:g}",
        "options": _options(
            [
                (
                    f"Below {lo:g}–{hi:g}{_unit_text(_unit(template))}",
                    "below",
                    category == "below",
                    f"{_fmt(value, digits)} < {lo:g}"
                    if category == "below"
                    else f"{_fmt(value, digits)} ≥ {lo:g}",
                ),
                (
                    f"Within {lo:g}–{hi:g}{_unit_text(_unit(template))}",
                    "within",
                    category == "within",
                    f"{lo:g} ≤ {_fmt(value, digits)} ≤ {hi:g}"
                    if category == "within"
                    else f"{_fmt(value, digits)} is outside",
                ),
                (
                    f"Above {lo:g}–{hi:g}{_unit_text(_unit(template))}",
                    "above",
                    category == "above",
                    f"{_fmt(value, digits)} > {hi:g}"
                    if category == "above"
                    else f"{_fmt(value, digits)} ≤ {hi:g}",
                ),
            ]
        ),
        "explanation": f"The twin's {_output_word(template)} at hour {q.interpret_time:g} is "
        f"{_fmt(value, digits)}{_unit_text(_unit(template))}, {category} the range {lo:g}–{hi:g} ({q.interpret_source}).",
        "value": value,
        "range": [lo, hi],
    }

    # ---- predict what happens next
    edges = list(q.predict_bins)
    predicted = _at(times, course_level, q.predict_time)
    bins = [(-math.inf, edges[0]), *list(itertools.pairwise(edges)), (edges[-1], math.inf)]
    in_bin = [b[0] <= predicted < b[1] for b in bins]
    predict = {
        "kind": "predict_next",
        "stem": (
            f"If the regimen is continued unchanged, what will the {_output_word(template)} "
            f"be at hour {q.predict_time:g}?"
        ),
        "criterion": "the range that contains the simulated value",
        "options": _options(
            [
                (
                    _bin_label(b, _unit(template)),
                    [None if math.isinf(x) else x for x in b],
                    hit,
                    f"simulated {predicted:.2f}",
                )
                for b, hit in zip(bins, in_bin, strict=True)
            ]
        ),
        "explanation": f"Continuing the regimen, the twin's {_output_word(template)} at hour "
        f"{q.predict_time:g} is {predicted:.2f}{_unit_text(_unit(template))}.",
        "value": predicted,
    }

    # ---- explain what changed and why
    base_change = _at(times, course_level, q.explain_to) - _at(times, course_level, q.explain_from)
    shares = []
    for j in range(len(q.factors)):
        cf = level[1 + len(q.dose_options) + j]
        cf_change = _at(times, cf, q.explain_to) - _at(times, cf, q.explain_from)
        shares.append(1.0 - cf_change / base_change if abs(base_change) > 1e-9 else 0.0)
    best = int(np.argmax(shares))
    if shares[best] >= 0.5:
        criterion = "removing it from the simulation removes at least half of the change"
        keep = [j for j in range(len(shares)) if j == best or shares[j] < 0.5]
    else:
        criterion = "removing it from the simulation removes the largest share of the change"
        keep = [j for j in range(len(shares)) if j == best or shares[j] < shares[best] - 0.05]
    # the candidate explanations in a per-case order (seeded by the set's seed and the case
    # index, so reruns are byte-identical), lest the key's letter be guessable: the numeric
    # questions keep their natural order, as exam-writing guides recommend
    keep = [keep[i] for i in np.random.default_rng([spec.seed, index, 4]).permutation(len(keep))]
    direction = "rose" if base_change > 0 else "fell"
    explain = {
        "kind": "explain_change",
        "stem": (
            f"Between hour {q.explain_from:g} and hour {q.explain_to:g} the "
            f"{_output_word(template)} {direction} by {abs(base_change):.2f}{_unit_text(_unit(template))}. "
            "What explains the change?"
        ),
        "criterion": criterion,
        "options": _options(
            [
                (
                    q.factors[j].label,
                    q.factors[j].label,
                    j == best,
                    f"without it the change is {(1 - shares[j]) * base_change:+.2f} ({shares[j]:.0%} of the change removed)",
                )
                for j in keep
            ]
        ),
        "explanation": "Each explanation was tested by re-simulating the twin without it: "
        + "; ".join(f"{q.factors[j].label}: {shares[j]:.0%} of the change removed" for j in keep)
        + ".",
        "value": base_change,
    }

    # ---- labs, monitoring, narrative
    monitoring = [
        {"time_h": float(t), "value": round(_at(times, course_level, t), digits)}
        for t in template.monitoring.times
    ]
    patient = _patient_record(template, row, index, spec)
    labs = _labs(template, row, times, eta, dose)
    regimen = {
        "dose_mg": dose,
        "interval_h": template.regimen.interval,
        "start_h": template.regimen.start,
        "infusion_h": _twin(template, row).dose(0.0, dose).duration,
        "route": _twin(template, row).route,
        "doses": [{"time_h": t, "amount_mg": a} for t, a in course.doses],
    }
    event_record = None
    if event is not None:
        event_record = {"kind": event.kind, "time_h": event.at, "text": event.text}
        if event.kind == "inhibitor_start":
            ratio, source = inhibitor_clearance_ratio(
                pm, row, event.drug, event.maintenance_mg_per_day
            )
            event_record.update(
                drug=event.drug,
                dose_mg_per_day=event.maintenance_mg_per_day,
                clearance_ratio=round(ratio, 4),
                half_time_h=event.half_time,
                source=source,
            )
        elif event.kind == "renal_decline":
            event_record.update(
                crcl_ratio=event.crcl_ratio,
                half_time_h=event.half_time,
                clearance_ratio=round(_event_ratio(template, row), 4),
            )
    case = {
        "id": f"{template.name}-{spec.seed}-{index + 1:03d}",
        "title": spec.title or template.title,
        "template": template.name,
        "drug": template.drug,
        "difficulty": spec.difficulty,
        "learning_objectives": list(spec.learning_objectives or template.learning_objectives),
        "condition": template.condition.model_dump(),
        "patient": patient,
        "history": list(template.history),
        "lifestyle": _lifestyle(row),
        "genotype": _genotypes(template, row),
        "comedications": list(template.comedications),
        "labs": labs,
        "regimen": regimen,
        "event": event_record,
        "monitoring": {
            "output": template.monitoring.output,
            "unit": _unit(template),
            "loinc": _LOINC.get((template.drug, template.monitoring.output), (None, None, None))[0],
            "values": monitoring,
        },
        "course": {
            "output": template.monitoring.output,
            "unit": _unit(template),
            "time_h": [float(t) for t in times],
            "value": [round(float(v), 4) for v in course_level],
        },
        "questions": [choose, interpret, predict, explain],
        "model": {
            "name": pm.name,
            "citation": pm.citation,
            "eta": [float(e) for e in eta],
            "covariates": {k: _plain(row[k]) for k in pm.covariate_names},
            "random_effects": list(pm.random_effects),
            "titration": titration,
        },
    }
    case["narrative"], case["facts"] = narrative(template, case)
    return case


def _plain(value: Any) -> Any:
    """A covariate as JSON can hold it (``inf`` quit time → ``None``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _output_word(template: CaseTemplate) -> str:
    return "INR" if template.monitoring.output == "inr" else f"{template.drug} level"


def _unit_text(unit: str) -> str:
    """`` mg/L`` for a unit, nothing for a ratio (INR)."""
    return "" if unit in ("1", "") else f" {unit}"


def _unit(template: CaseTemplate) -> str:
    return dict(drug_model(template.drug).structural.output_units).get(
        template.monitoring.output, ""
    )


def _bin_label(b: tuple[float, float], unit: str) -> str:
    lo, hi = b
    if lo == -math.inf:
        return f"Below {hi:g}{_unit_text(unit)}"
    if hi == math.inf:
        return f"{lo:g}{_unit_text(unit)} or more"
    return f"{lo:g} to below {hi:g}{_unit_text(unit)}"


def _patient_record(template, row, index, spec) -> dict[str, Any]:
    return {
        "age_y": round(float(row["age"])),
        "sex": "female" if row["female"] == 1 else "male",
        "ancestry": str(row["ancestry"]),
        "weight_kg": round(float(row["weight"]), 1),
        "height_cm": round(float(row["height"])),
        "candidate_id": int(row["id"]),
    }


def _lifestyle(row) -> dict[str, Any]:
    smoking = "current" if row["smoking"] == 1 else "never or former"
    return {
        "smoking": smoking,
        "cigarettes_per_day": round(float(row["cigarettes_per_day"])) if row["smoking"] == 1 else 0,
        "alcohol_units_per_week": round(float(row["alcohol_units_per_week"])),
        "vitamin_k_ug_per_day": round(float(row["vitamin_k_ug_per_day"])),
    }


def _genotypes(template, row) -> dict[str, dict[str, str]]:
    out = {}
    for gene in template.genes_shown:
        g = GENES[gene.upper()]
        diplotype = str(row[g.column])
        out[g.name] = {"diplotype": diplotype, "phenotype": phenotype(g.name, diplotype)}
    return out


def inverse_cockcroft_gault(crcl, age, weight, female) -> float:
    """Serum creatinine (mg/dL) that gives creatinine clearance ``crcl`` (mL/min) by
    Cockcroft–Gault: ``(140 − age) · weight · (0.85 if female) / (72 · crcl)``.

    Examples
    --------
    >>> from twinsim.priors import cockcroft_gault
    >>> scr = inverse_cockcroft_gault(60.0, 70.0, 80.0, 1.0)
    >>> round(float(cockcroft_gault(70.0, 80.0, scr, 1.0)), 6)
    60.0
    """
    return (140.0 - age) * weight * (0.85 if female else 1.0) / (72.0 * crcl)


def _labs(template, row, times, eta, dose) -> list[dict[str, Any]]:
    pm = drug_model(template.drug)
    labs = [
        {
            "name": "Body weight",
            "loinc": "29463-7",
            "value": round(float(row["weight"]), 1),
            "unit": "kg",
            "time_h": 0.0,
        },
        {
            "name": "Body height",
            "loinc": "8302-2",
            "value": round(float(row["height"])),
            "unit": "cm",
            "time_h": 0.0,
        },
        {
            "name": "Creatinine [Mass/volume] in Serum or Plasma",
            "loinc": "2160-0",
            "value": round(float(row["serum_creatinine"]), 2),
            "unit": "mg/dL",
            "time_h": 0.0,
        },
        {
            "name": "Creatinine clearance, Cockcroft–Gault estimate",
            "loinc": None,
            "value": round(float(row["crcl"])),
            "unit": "mL/min",
            "time_h": 0.0,
        },
    ]
    if template.drug == "warfarin":
        i_base = pm.structural.parameter_index("inr_base")
        base = float(
            np.asarray(
                pm.individual_parameters({k: [row[k]] for k in pm.covariate_names}, eta[None, :])
            )[0, i_base]
        )
        labs.append(
            {
                "name": "INR in Platelet poor plasma by Coagulation assay",
                "loinc": "6301-6",
                "value": round(base, 1),
                "unit": "1",
                "time_h": 0.0,
            }
        )
    event = template.event
    if event is not None and event.kind == "renal_decline":
        # CrCL falls log-linearly (the model's CL ∝ CrCL^θ then follows clearance_factor);
        # creatinine is Cockcroft–Gault inverted from the CrCL of each day
        crcl0 = float(row["crcl"])
        scr_effective = inverse_cockcroft_gault(crcl0, row["age"], row["weight"], row["female"])
        for t in template.monitoring.times:
            if t <= event.at:
                continue
            crcl_t = crcl0 * float(clearance_factor(t, event.at, event.half_time, event.crcl_ratio))
            scr_t = scr_effective * crcl0 / crcl_t
            labs.append(
                {
                    "name": "Creatinine [Mass/volume] in Serum or Plasma",
                    "loinc": "2160-0",
                    "value": round(scr_t, 2),
                    "unit": "mg/dL",
                    "time_h": float(t),
                    "crcl_ml_min": round(crcl_t, 1),
                }
            )
    return labs


def narrative(template: CaseTemplate, case: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """The vignette: the template's narrative text filled with the case's facts.

    Every number in the text is one of the facts, each formatted from the case data.
    """
    p, life = case["patient"], case["lifestyle"]
    labs = case["labs"]
    baseline = {lab["loinc"] or lab["name"]: lab for lab in labs if lab["time_h"] == 0.0}
    genotype = "; ".join(
        f"{g} {v['diplotype']} ({v['phenotype']})" for g, v in case["genotype"].items()
    )
    smoking = (
        f"Smokes {life['cigarettes_per_day']} cigarettes a day"
        if life["smoking"] == "current"
        else "Does not smoke"
    )
    drinks = life["alcohol_units_per_week"]
    units = "unit" if drinks == 1 else "units"
    drinking = f"drinks {drinks} {units} of alcohol a week" if drinks else "does not drink alcohol"
    lifestyle = f"{smoking}; {drinking}."
    unit = case["monitoring"]["unit"]
    unit_text = "" if unit == "1" else f" {unit}"
    levels = "; ".join(
        f"{_when(m['time_h'])}: {m['value']:.1f}{unit_text}" for m in case["monitoring"]["values"]
    )
    facts = {
        "age": str(p["age_y"]),
        "sex": "woman" if p["sex"] == "female" else "man",
        "ancestry": _ANCESTRY_WORDS.get(p["ancestry"], p["ancestry"]),
        "weight": f"{p['weight_kg']:.0f}",
        "height": str(p["height_cm"]),
        "setting": template.setting,
        "history": "; ".join(case["history"]) or "none",
        "lifestyle": lifestyle,
        "comedications": "; ".join(case["comedications"]) or "none",
        "genotype": genotype or "not tested",
        "creatinine": f"{baseline['2160-0']['value']:.2f}",
        "crcl": f"{baseline['Creatinine clearance, Cockcroft–Gault estimate']['value']:.0f}",
        "inr_baseline": f"{baseline['6301-6']['value']:.1f}" if "6301-6" in baseline else "",
        "dose": f"{case['regimen']['dose_mg']:g}",
        "interval": f"{case['regimen']['interval_h']:g}",
        "start_day": f"{case['regimen']['start_h'] / 24:g}",
        "levels": levels,
        "event": case["event"]["text"] if case["event"] else "",
        "event_day": f"{case['event']['time_h'] / 24:g}" if case["event"] else "",
        "event_hours": f"{case['event']['time_h']:g}" if case["event"] else "",
    }
    late = [lab for lab in labs if lab["time_h"] > 0 and lab["loinc"] == "2160-0"]
    if late:
        facts["creatinine_late"] = f"{late[-1]['value']:.2f}"
        facts["late_hours"] = f"{late[-1]['time_h']:g}"
    try:
        text = template.narrative.format_map(facts)
    except KeyError as error:
        raise CaseError(
            [
                f"`narrative` of template {template.name!r} uses {{{error.args[0]}}}, which is not a "
                f"fact; known facts: {', '.join(sorted(facts))}"
            ]
        ) from None
    return " ".join(text.split()), facts


def _when(time_h: float) -> str:
    if abs(time_h / 24 - round(time_h / 24)) < 1e-9:
        return f"day {time_h / 24:g}"
    return f"hour {time_h:g}"


def generate_cases(spec: CaseSpec) -> CaseSet:
    """Generate the set of teaching cases a spec asks for.

    Parameters
    ----------
    spec
        The :class:`CaseSpec`.

    Returns
    -------
    CaseSet

    Raises
    ------
    CaseError
        An impossible population request or a failed simulation.

    Examples
    --------
    >>> spec = CaseSpec(template="theophylline_smoking_cessation", n_cases=1, seed=3)
    >>> case = generate_cases(spec).cases[0]
    >>> [q["kind"] for q in case["questions"]]
    ['choose_dose', 'interpret_level', 'predict_next', 'explain_change']
    >>> sum(o["correct"] for o in case["questions"][0]["options"])
    1
    """
    template = spec.resolved_template()
    table = draw_patients(spec, template)
    # the model's own columns: derived from the co-medication columns (the warfarin model's
    # `amiodarone`: 0, a case starts without it and an inhibitor_start event brings it in)
    table.update(drug_model(template.drug).covariate_columns(table))
    cases = tuple(
        _make_case(spec, template, _case_patient(template, table, i), i)
        for i in range(len(table["age"]))
    )
    return CaseSet(spec, template, cases, set_summary(table, spec, template))


def try_dose(template: CaseTemplate, case: Mapping[str, Any], dose_mg: float) -> dict[str, Any]:
    """This case's patient under ``dose_mg`` from the decision time on (a student's choice).

    The twin is rebuilt from the case's JSON (covariates, random effects, doses), so the
    answer is the same simulation the key was computed from.

    Returns
    -------
    dict
        ``time_h``, ``value`` (the course with the chosen dose), ``metric`` (the question's
        measure at its time), ``target`` and ``meets`` (within the target).

    Examples
    --------
    >>> spec = CaseSpec(template="theophylline_smoking_cessation", n_cases=1, seed=3)
    >>> case_set = generate_cases(spec)
    >>> result = try_dose(case_set.template, case_set.cases[0], 200.0)
    >>> sorted(result)
    ['dose_mg', 'meets', 'metric', 'metric_name', 'target', 'time_h', 'value']
    """
    if not (isinstance(dose_mg, int | float) and math.isfinite(dose_mg) and dose_mg >= 0):
        raise CaseError([f"`dose` must be a number of mg ≥ 0, got {dose_mg!r}"])
    q = template.questions
    covariates = {k: (math.inf if v is None else v) for k, v in case["model"]["covariates"].items()}
    row = {**covariates}
    doses = tuple(
        (d["time_h"], float(dose_mg) if d["time_h"] >= q.decision_time - 1e-9 else d["amount_mg"])
        for d in case["regimen"]["doses"]
    )
    times = _time_grid(template)
    pm = drug_model(template.drug)
    k = pm.structural.output_names.index(template.monitoring.output)
    eta = np.asarray(case["model"]["eta"], dtype=float)
    level = simulate_rows(template, eta, [_Row(row, doses)], times)[0, :, k]
    metric = _metric(template, times, level)
    target = _target(template)
    return {
        "dose_mg": float(dose_mg),
        "time_h": [float(t) for t in times],
        "value": [float(v) for v in level],
        "metric": metric,
        "metric_name": ("AUC24" if q.evaluate == "auc24" else _output_word(template))
        + f" at hour {q.evaluate_time:g}",
        "target": target,
        "meets": bool(target["low"] <= metric <= target["high"]),
    }
