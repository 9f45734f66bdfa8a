"""The clinician form as data: form values → what-if spec, spec errors → form fields.

The page has no validation of its own: the form's values become the mapping a what-if
file would hold, :class:`~twinsim.scenarios.WhatIfSpec` validates it, and each problem
the spec reports (a dotted path such as ``patient.genotype.CYP2C9`` or
``observations[1].value``) is shown next to the field it names. These functions are
plain Python (no Dash), so the callbacks stay thin and are tested without a browser.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..scenarios import CandidateSpec, SpecError, WhatIfSpec, load_whatif, whatif_examples

__all__ = [
    "FIELDS",
    "GENES_SHOWN",
    "N_REGIMENS",
    "FormCheck",
    "check_form",
    "example_form",
    "field_for",
    "genotype_choices",
    "genotype_note",
]

#: Regimens compared side by side.
N_REGIMENS = 4

#: Genes with a field on the form.
GENES_SHOWN = ("CYP2C9", "VKORC1", "CYP2D6", "CYP2C19", "CYP3A5")

#: Scalar form fields: key → spec path (dotted, as the spec's messages name it).
FIELDS: dict[str, str] = {
    "drug": "drug",
    "model": "model",
    "patient_id": "patient.id",
    "age": "patient.age",
    "sex": "patient.sex",
    "weight": "patient.weight",
    "height": "patient.height",
    "scr": "patient.serum_creatinine",
    "crcl": "patient.crcl",
    "dialysis": "patient.dialysis",
    "ancestry": "patient.ancestry",
    **{f"gene_{g}": f"patient.genotype.{g}" for g in GENES_SHOWN},
    "comedications": "patient.comedications",
    "smoking": "patient.smoking.status",
    "quit": "patient.smoking.quit",
    "cigarettes": "patient.smoking.cigarettes_per_day",
    "alcohol": "patient.alcohol_units_per_week",
    "vitamin_k": "patient.vitamin_k_ug_per_day",
    "adherence": "patient.adherence",
    "start": "start",
    "horizon": "horizon",
    "fit": "fit.method",
    **{f"regimen_{i}": f"candidates[{i}]" for i in range(N_REGIMENS)},
}

#: Columns of the dosing-history and levels tables (their keys in the spec).
HISTORY_COLUMNS = ("time", "amount", "duration")
LEVEL_COLUMNS = ("time", "value", "output", "lloq")

_PROBLEM = re.compile(r"`([^`]+)`\s*(.*)", re.DOTALL)
_ROW = re.compile(r"^(history(?:\.doses)?|observations)\[(\d+)\](?:\.(\w+))?")


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _clean(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


@dataclass
class FormCheck:
    """What :func:`check_form` found.

    Attributes
    ----------
    spec
        The validated what-if, or ``None`` when a field is invalid.
    data
        The mapping given to the spec (what a what-if file would hold).
    errors
        ``{field key: message}`` for the scalar fields of :data:`FIELDS`.
    history_errors, level_errors
        ``{(row, column): message}`` for the tables (row as shown; column ``None``
        when the whole row is concerned).
    general
        Messages that belong to no single field.
    """

    spec: WhatIfSpec | None
    data: dict[str, Any]
    errors: dict[str, str] = field(default_factory=dict)
    history_errors: dict[tuple[int, str | None], str] = field(default_factory=dict)
    level_errors: dict[tuple[int, str | None], str] = field(default_factory=dict)
    general: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The spec is valid."""
        return self.spec is not None


def _patient(form: Mapping[str, Any]) -> dict[str, Any]:
    keys = {
        "patient_id": "id",
        "age": "age",
        "sex": "sex",
        "weight": "weight",
        "height": "height",
        "scr": "serum_creatinine",
        "crcl": "crcl",
        "ancestry": "ancestry",
        "alcohol": "alcohol_units_per_week",
        "vitamin_k": "vitamin_k_ug_per_day",
        "adherence": "adherence",
    }
    patient = {spec: _clean(form.get(key)) for key, spec in keys.items()}
    patient = {k: v for k, v in patient.items() if not _blank(v)}
    if form.get("dialysis"):
        patient["dialysis"] = True
    genotype = {g: _clean(form.get(f"gene_{g}")) for g in GENES_SHOWN}
    genotype = {g: v for g, v in genotype.items() if not _blank(v)}
    if genotype:
        patient["genotype"] = genotype
    if form.get("comedications"):
        patient["comedications"] = list(form["comedications"])
    if not _blank(form.get("smoking")):
        smoking = {"status": _clean(form["smoking"])}
        for key, spec in (("quit", "quit"), ("cigarettes", "cigarettes_per_day")):
            if not _blank(form.get(key)):
                smoking[spec] = _clean(form[key])
        patient["smoking"] = smoking
    return patient


def _rows(
    rows: Sequence[Mapping[str, Any]] | None, columns: Sequence[str]
) -> list[tuple[int, dict]]:
    """Non-empty table rows as ``(row index shown, record)``."""
    out = []
    for i, row in enumerate(rows or ()):
        record = {c: _clean(row.get(c)) for c in columns}
        record = {c: v for c, v in record.items() if not _blank(v)}
        if record:
            out.append((i, record))
    return out


def field_for(path: str) -> str | None:
    """The form field key that shows a problem of the spec path ``path``.

    Examples
    --------
    >>> field_for("patient.genotype.CYP2C9"), field_for("patient.smoking.quit")
    ('gene_CYP2C9', 'quit')
    >>> field_for("patient.comedications[0]"), field_for("patient.smoking")
    ('comedications', 'smoking')
    """
    path = re.sub(r"\[\d+\]$", "", path)
    for key, spec_path in FIELDS.items():
        if path == spec_path:
            return key
    # the nearest enclosing field (e.g. `patient.smoking` → the status field)
    for key, spec_path in FIELDS.items():
        if spec_path.startswith(path + "."):
            return key
    return None


def check_form(form: Mapping[str, Any]) -> FormCheck:
    """Validate the form with the what-if spec; every problem placed by its field.

    Parameters
    ----------
    form
        Field values by the keys of :data:`FIELDS` (text as typed), ``history`` and
        ``levels`` (lists of table rows), ``regimens`` (list of texts).

    Returns
    -------
    FormCheck

    Examples
    --------
    >>> form = example_form("whatif_vancomycin_renal")
    >>> check_form(form).ok
    True
    >>> check = check_form({**form, "age": "720", "regimens": ["1 g q12h", "zzz", "", ""]})
    >>> sorted(check.errors), check.errors["age"][:30]
    (['age', 'regimen_1'], 'must be between 0 and 120 y, g')
    """
    regimens = list(form.get("regimens") or ())[:N_REGIMENS]
    check = FormCheck(spec=None, data={})
    # each regimen on its own first: a typo in one must not hide the others' forecasts
    slots: list[int] = []
    candidates: list[dict[str, Any]] = []
    for i, text in enumerate(regimens):
        if _blank(text):
            continue
        text = text.strip()
        try:
            CandidateSpec.model_validate({"name": text, "regimen": text})
        except SpecError as error:
            check.errors[f"regimen_{i}"] = "; ".join(
                _PROBLEM.sub(r"\2", p) if p.startswith("`regimen") else p for p in error.problems
            )
            continue
        slots.append(i)
        candidates.append({"name": text, "regimen": text})
    history_rows = _rows(form.get("history"), HISTORY_COLUMNS)
    level_rows = _rows(form.get("levels"), LEVEL_COLUMNS)
    data: dict[str, Any] = {
        "drug": _clean(form.get("drug")) or "",
        "patient": _patient(form),
        "candidates": candidates,
    }
    if not _blank(form.get("model")):  # a trained model folder; blank: the published model
        data["model"] = _clean(form["model"])
    if history_rows:
        data["history"] = [record for _, record in history_rows]
    if level_rows:
        data["observations"] = [record for _, record in level_rows]
    for key in ("start", "horizon"):
        if not _blank(form.get(key)):
            data[key] = _clean(form[key])
    if not _blank(form.get("fit")):
        data["fit"] = {"method": _clean(form["fit"])}
    check.data = data
    if not candidates and not any(k.startswith("regimen_") for k in check.errors):
        check.errors["regimen_0"] = (
            "give at least one regimen to compare, e.g. '1000 mg over 1 h q12h'"
        )
    try:
        spec = WhatIfSpec.model_validate(data)
    except SpecError as error:
        for problem in error.problems:
            _place(check, problem, slots, history_rows, level_rows)
        return check
    except ValueError as error:  # a library check outside pydantic: shown, never raised
        check.general.append(str(error))
        return check
    # a regimen slot may still show its error: the other regimens make a valid spec
    check.spec = spec
    return check


def _place(
    check: FormCheck,
    problem: str,
    slots: Sequence[int],
    history_rows: Sequence[tuple[int, dict]],
    level_rows: Sequence[tuple[int, dict]],
) -> None:
    match = _PROBLEM.match(problem)
    if match is None:
        check.general.append(problem)
        return
    path, message = match.group(1), match.group(2).strip()
    row = _ROW.match(path)
    if row is not None:
        table, index, column = row.group(1), int(row.group(2)), row.group(3)
        if table == "observations":
            shown = level_rows[index][0] if index < len(level_rows) else index
            check.level_errors[(shown, column)] = message
        else:
            shown = history_rows[index][0] if index < len(history_rows) else index
            check.history_errors[(shown, column)] = message
        return
    if path in ("history", "history.doses"):
        check.history_errors[(-1, None)] = message
        return
    candidate = re.match(r"candidates\[(\d+)\]", path)
    if candidate is not None and int(candidate.group(1)) < len(slots):
        key = f"regimen_{slots[int(candidate.group(1))]}"
        check.errors[key] = message
        return
    key = field_for(path)
    if key is None:
        check.general.append(f"{path}: {message}")
        return
    # two messages for one field (e.g. genotype and a missing covariate) are both shown
    check.errors[key] = f"{check.errors[key]}; {message}" if key in check.errors else message


def genotype_choices(gene: str, *, smallest: float = 0.005) -> tuple[str, ...]:
    """What a genotype field offers: ``"not tested"`` first, then the gene's diplotypes
    with a Hardy–Weinberg frequency ≥ ``smallest`` in any ancestry group, in the gene's
    canonical order (reference allele first; any other diplotype may still be typed).

    Examples
    --------
    >>> genotype_choices("VKORC1")
    ('not tested', 'G/G', 'G/A', 'A/A')
    """
    from ..priors import ANCESTRIES, GENES, NOT_TESTED, diplotype_frequencies

    common = {
        diplotype
        for ancestry in ANCESTRIES
        for diplotype, p in diplotype_frequencies(gene, ancestry).items()
        if p >= smallest
    }
    listed = [d for d in GENES[gene.strip().upper()].diplotypes() if d in common]
    return (NOT_TESTED, *listed, *sorted(common.difference(listed)))


def genotype_note(gene: str, text: str | None) -> str:
    """The phenotype of a typed diplotype; ``"not given"`` when blank, what the twin does
    for ``"not tested"`` (any spelling of :func:`twinsim.priors.is_not_tested`), ``""``
    when unreadable (the field then shows the spec's message instead).

    Examples
    --------
    >>> genotype_note("CYP2C9", "*3/*1")
    '*1/*3: intermediate metabolizer'
    >>> genotype_note("CYP2C9", "unknown")
    "not tested: averaged over the genotypes of the patient's ancestry"
    """
    from ..priors import CovariateError, is_not_tested, parse_diplotype, phenotype

    if _blank(text):
        return "not given"
    if is_not_tested(text):
        return "not tested: averaged over the genotypes of the patient's ancestry"
    try:
        canonical = parse_diplotype(gene, text.strip())
        return f"{canonical}: {phenotype(gene, canonical)}"
    except CovariateError:
        return ""


def _text(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:g}" + (f" {unit}" if unit else "")


def _hours(value: float) -> str:
    return f"{value / 24:g} d" if value >= 48 and value % 24 == 0 else f"{value:g} h"


def example_form(name: str) -> dict[str, Any]:
    """The form filled with a shipped what-if example (:func:`~twinsim.scenarios.whatif_examples`).

    Raises
    ------
    KeyError
        Not an example name.
    """
    spec = load_whatif(whatif_examples()[name])
    return spec_form(spec)


def spec_form(spec: WhatIfSpec) -> dict[str, Any]:
    """The form's values for a what-if spec (inverse of :func:`check_form`)."""
    patient = spec.patient
    smoking = patient.smoking
    form: dict[str, Any] = {
        "drug": spec.drug,
        "model": spec.model or "",
        "patient_id": patient.id,
        "age": _text(patient.age),
        "sex": patient.sex or "",
        "weight": _text(patient.weight),
        "height": _text(patient.height),
        "scr": _text(patient.serum_creatinine),
        "crcl": _text(patient.crcl),
        "dialysis": bool(patient.dialysis),
        "ancestry": patient.ancestry or "",
        **{f"gene_{g}": patient.genotype.get(g, "") for g in GENES_SHOWN},
        "comedications": list(patient.comedications),
        "smoking": smoking.status if smoking else "",
        "quit": _hours(smoking.quit) if smoking and smoking.quit is not None else "",
        "cigarettes": _text(smoking.cigarettes_per_day) if smoking else "",
        "alcohol": _text(patient.alcohol_units_per_week),
        "vitamin_k": _text(patient.vitamin_k_ug_per_day),
        "adherence": _text(patient.adherence),
        "start": _text(spec.candidate_start),
        "horizon": _hours(spec.horizon),
        "fit": spec.fit.method,
        "history": [
            {"time": d.time, "amount": d.amount, "duration": d.duration or None}
            for d in spec.history_doses()
        ],
        "levels": [
            {
                "time": o.time,
                "value": "<LLOQ" if o.below_lloq else f"{o.value:g}",
                "output": o.output,
                "lloq": o.lloq,
            }
            for o in spec.observations
        ],
        "regimens": [c.label for c in spec.candidates][:N_REGIMENS],
    }
    form["regimens"] += [""] * (N_REGIMENS - len(form["regimens"]))
    return form
