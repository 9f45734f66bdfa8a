"""Writing a case set: Markdown, HTML (self-contained, with its plot), JSON, FHIR R4.

Each case is written twice, a student version (questions and options, no key) and an
instructor version (key, criterion, evidence and explanation), plus one FHIR bundle of
the patient's record. Output is deterministic: the same spec and seed give byte-identical
files (no timestamps, fixed ids, sorted JSON keys, the plot's div id from the case id).
FHIR resources are built and validated with ``fhir.resources``' R4B models (R4B changed
none of the resources used here from R4: Patient, Condition, Observation,
MedicationRequest, MedicationAdministration, Bundle).
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._provenance import write_text_atomic
from ._generate import CaseSet

__all__ = [
    "FHIR_EPOCH",
    "case_figure",
    "case_html",
    "case_json",
    "case_markdown",
    "fhir_bundle",
    "summary_markdown",
    "write_case_set",
]

#: Hour 0 of every case in FHIR dates (cases are fictional; a fixed date keeps files identical).
FHIR_EPOCH = _dt.datetime(2025, 1, 6, 8, 0, tzinfo=_dt.UTC)
_UCUM = {
    "mg/L": "mg/L",
    "mg/dL": "mg/dL",
    "kg": "kg",
    "cm": "cm",
    "mL/min": "mL/min",
    "1": "{INR}",
    "mg": "mg",
}
_NAMESPACE = uuid.UUID("6f1c2a4e-3b1d-4c55-9a43-2f0b8e2d7c11")


def _student(case: Mapping[str, Any]) -> dict[str, Any]:
    """The case without the answer key (no correct flags, evidence, criteria, explanations,
    model internals or future time course)."""
    out = {k: v for k, v in case.items() if k not in ("model", "course", "facts")}
    out["questions"] = [
        {
            "kind": q["kind"],
            "stem": q["stem"],
            "options": [{"letter": o["letter"], "label": o["label"]} for o in q["options"]],
        }
        for q in case["questions"]
    ]
    return out


def case_json(case: Mapping[str, Any], *, key: bool) -> str:
    """The case as JSON text (sorted keys), with or without the key.

    Examples
    --------
    >>> case_json({"id": "x", "questions": []}, key=True)
    '{\\n  "id": "x",\\n  "questions": []\\n}\\n'
    """
    data = case if key else _student(case)
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


def case_figure(case: Mapping[str, Any], *, key: bool = True):
    """Plotly figure of the simulated course, with the measured levels and the target.

    The student version shows the course only up to the last monitored level (the rest is
    what the questions ask about).
    """
    import plotly.graph_objects as go

    course, monitoring = case["course"], case["monitoring"]
    last = max(m["time_h"] for m in monitoring["values"])
    pairs = [
        (t, v) for t, v in zip(course["time_h"], course["value"], strict=True) if key or t <= last
    ]
    unit = "" if course["unit"] == "1" else f" ({course['unit']})"
    name = "INR" if course["output"] == "inr" else f"{case['drug']} concentration"
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[t / 24 for t, _ in pairs],
            y=[v for _, v in pairs],
            mode="lines",
            name="simulated course (this patient's twin)",
            line={"color": "#1f5fa8"},
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[m["time_h"] / 24 for m in monitoring["values"]],
            y=[m["value"] for m in monitoring["values"]],
            mode="markers",
            name="measured",
            marker={"color": "#c0392b", "size": 9},
        )
    )
    interpret = next(q for q in case["questions"] if q["kind"] == "interpret_level")
    if "range" in interpret:
        low, high = interpret["range"]
        fig.add_hrect(y0=low, y1=high, fillcolor="#2e8b57", opacity=0.08, line_width=0)
    if case.get("event"):
        fig.add_vline(x=case["event"]["time_h"] / 24, line_dash="dash", line_color="#7f8c8d")
        fig.add_annotation(
            x=case["event"]["time_h"] / 24,
            y=1.02,
            yref="paper",
            showarrow=False,
            text=case["event"]["text"][:40],
        )
    fig.update_layout(
        xaxis_title="time (days)",
        yaxis_title=f"{name}{unit}",
        template="plotly_white",
        height=380,
        margin={"l": 60, "r": 20, "t": 40, "b": 50},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def _table_rows(case: Mapping[str, Any], *, key: bool) -> list[tuple[str, str, str]]:
    rows = []
    for lab in case["labs"]:
        unit = "" if lab["unit"] == "1" else lab["unit"]
        rows.append((f"{lab['time_h']:g}", lab["name"], f"{lab['value']:g} {unit}".rstrip()))
    unit = case["monitoring"]["unit"]
    for m in case["monitoring"]["values"]:
        rows.append(
            (
                f"{m['time_h']:g}",
                _level_name(case),
                f"{m['value']:.1f} {'' if unit == '1' else unit}".rstrip(),
            )
        )
    if key:
        course = case["course"]
        step = max(1, len(course["time_h"]) // 40)
        for t, v in list(zip(course["time_h"], course["value"], strict=True))[::step]:
            rows.append((f"{t:g}", f"simulated {_level_name(case)}", f"{v:.2f}"))
    return sorted(rows, key=lambda r: float(r[0]))


def _level_name(case: Mapping[str, Any]) -> str:
    return "INR" if case["monitoring"]["output"] == "inr" else f"{case['drug']} level"


def case_markdown(case: Mapping[str, Any], *, key: bool) -> str:
    """The case as Markdown (student or instructor version)."""
    p = case["patient"]
    lines = [
        f"# {case['title']} — case {case['id']}",
        "",
        f"*{case['difficulty'].capitalize()} · {case['drug']} · {case['condition']['text']}*",
        "",
        "## Learning objectives",
        *[f"- {o}" for o in case["learning_objectives"]],
        "",
        "## Vignette",
        case["narrative"],
        "",
        "## Patient",
        f"- Age {p['age_y']} y, {p['sex']}, ancestry {p['ancestry'].replace('_', ' ')}",
        f"- Weight {p['weight_kg']:g} kg, height {p['height_cm']} cm",
        f"- Lifestyle: smoking {case['lifestyle']['smoking']}"
        f" ({case['lifestyle']['cigarettes_per_day']} cigarettes/day), alcohol "
        f"{case['lifestyle']['alcohol_units_per_week']} units/week",
        *[f"- {g}: {v['diplotype']} ({v['phenotype']})" for g, v in case["genotype"].items()],
        f"- Medicines: {case['drug']} {case['regimen']['dose_mg']:g} mg every "
        f"{case['regimen']['interval_h']:g} h ({case['regimen']['route']})"
        + "".join(f"; {c}" for c in case["comedications"]),
        "",
        "## Labs and levels",
        "| hour | test | value |",
        "|---:|---|---|",
        *[f"| {t} | {name} | {value} |" for t, name, value in _table_rows(case, key=key)],
        "",
        "## Questions",
    ]
    for n, q in enumerate(case["questions"], 1):
        lines += ["", f"### {n}. {q['stem']}", ""]
        for o in q["options"]:
            mark = " ✔" if key and o["correct"] else ""
            lines.append(f"- **{o['letter']}.** {o['label']}{mark}")
        if key:
            answer = next(o for o in q["options"] if o["correct"])
            lines += [
                "",
                f"**Answer: {answer['letter']}.** Criterion: {q['criterion']}.",
                "",
                q["explanation"],
                "",
                *[f"- {o['letter']}: {o['evidence']}" for o in q["options"]],
            ]
    if key:
        lines += ["", "## Model", case["model"]["citation"]]
        if case.get("event") and case["event"].get("source"):
            lines.append(f"Interaction: {case['event']['source']}.")
    return "\n".join(lines) + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:left}
.key{background:#eef7ee;border-left:4px solid #2e8b57;padding:.5rem 1rem;margin:.5rem 0}
.correct{font-weight:bold;color:#2e7d32}.meta{color:#666}
"""


def case_html(case: Mapping[str, Any], *, key: bool) -> str:
    """The case as one self-contained HTML page: the Markdown text, and the plot with
    plotly.js inlined (no CDN, works offline)."""
    from markdown_it import MarkdownIt

    body = (
        MarkdownIt("commonmark", {"html": False})
        .enable("table")
        .render(case_markdown(case, key=key))
    )
    figure = case_figure(case, key=key).to_html(
        full_html=False,
        include_plotlyjs=True,
        div_id=f"course-{case['id']}",
        config={"displaylogo": False},
    )
    marker = "<h2>Labs and levels</h2>"
    body = body.replace(marker, f"<h2>Time course</h2>\n{figure}\n{marker}", 1)
    version = "instructor" if key else "student"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(case['title'])} — {html.escape(case['id'])} ({version})</title>"
        f"<style>{_CSS}</style></head><body>\n{body}</body></html>\n"
    )


# ------------------------------------------------------------------------------ FHIR
def _id(case: Mapping[str, Any], *parts: object) -> str:
    text = "-".join(str(p) for p in (case["id"], *parts))
    return text.replace("_", "-").replace(".", "-")[:64]


def _when(hours: float) -> str:
    moment = FHIR_EPOCH + _dt.timedelta(hours=float(hours))
    return moment.isoformat().replace("+00:00", "Z")


def _quantity(value: float, unit: str) -> dict[str, Any]:
    code = _UCUM.get(unit, unit)
    return {
        "value": value,
        "unit": "INR" if unit == "1" else unit,
        "system": "http://unitsofmeasure.org",
        "code": code,
    }


def fhir_bundle(case: Mapping[str, Any]) -> dict[str, Any]:
    """The case's record as a FHIR R4 ``collection`` Bundle, validated by fhir.resources.

    Patient; Condition (SNOMED CT); Observations with LOINC codes (weight, height,
    creatinine, INR, the drug levels; creatinine clearance as text); MedicationRequest
    with its dose and interval; one MedicationAdministration per dose given up to the
    last measured level.

    Raises
    ------
    pydantic.ValidationError
        If a resource is not valid FHIR (a bug: every resource is validated here).
    """
    from fhir.resources.R4B.bundle import Bundle

    p = case["patient"]
    patient_ref = {"reference": f"Patient/{_id(case, 'patient')}"}
    birth_year = FHIR_EPOCH.year - int(p["age_y"])
    resources: list[dict[str, Any]] = [
        {
            "resourceType": "Patient",
            "id": _id(case, "patient"),
            "gender": p["sex"],
            "birthDate": f"{birth_year}-01-01",
            "name": [{"text": f"Virtual patient {case['id']}", "use": "anonymous"}],
            "extension": [
                {"url": "http://twinsim.invalid/fhir/ancestry", "valueString": p["ancestry"]}
            ],
        },
        {
            "resourceType": "Condition",
            "id": _id(case, "condition"),
            "subject": patient_ref,
            "clinicalStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                        "code": "active",
                    }
                ]
            },
            "code": {
                "text": case["condition"]["text"],
                "coding": [
                    {
                        "system": "http://snomed.info/sct",
                        "code": case["condition"]["snomed"],
                        "display": case["condition"]["text"],
                    }
                ]
                if case["condition"].get("snomed")
                else [],
            },
            "onsetDateTime": _when(0.0),
        },
    ]

    def observation(n: int, name: str, loinc: str | None, value: float, unit: str, hours: float):
        code: dict[str, Any] = {"text": name}
        if loinc:
            code["coding"] = [{"system": "http://loinc.org", "code": loinc, "display": name}]
        return {
            "resourceType": "Observation",
            "id": _id(case, "obs", n),
            "status": "final",
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "laboratory",
                        }
                    ]
                }
            ],
            "code": code,
            "subject": patient_ref,
            "effectiveDateTime": _when(hours),
            "valueQuantity": _quantity(value, unit),
        }

    n = 0
    for lab in case["labs"]:
        n += 1
        resources.append(
            observation(n, lab["name"], lab["loinc"], lab["value"], lab["unit"], lab["time_h"])
        )
    level_name = (
        "INR in Platelet poor plasma by Coagulation assay"
        if case["monitoring"]["output"] == "inr"
        else f"{case['drug']} level"
    )
    for m in case["monitoring"]["values"]:
        if case["monitoring"]["output"] == "inr" and m["time_h"] == 0.0:
            continue  # the baseline INR is already a lab
        n += 1
        resources.append(
            observation(
                n,
                level_name,
                case["monitoring"]["loinc"],
                m["value"],
                case["monitoring"]["unit"],
                m["time_h"],
            )
        )
    for gene, g in case["genotype"].items():
        n += 1
        resources.append(
            {
                "resourceType": "Observation",
                "id": _id(case, "obs", n),
                "status": "final",
                "code": {"text": f"{gene} diplotype"},
                "subject": patient_ref,
                "effectiveDateTime": _when(0.0),
                "valueString": f"{g['diplotype']} ({g['phenotype']})",
            }
        )
    regimen = case["regimen"]
    medication = {"text": case["drug"]}
    route = {"text": regimen["route"]}
    resources.append(
        {
            "resourceType": "MedicationRequest",
            "id": _id(case, "medreq"),
            "status": "active",
            "intent": "order",
            "medicationCodeableConcept": medication,
            "subject": patient_ref,
            "authoredOn": _when(regimen["start_h"]),
            "dosageInstruction": [
                {
                    "text": f"{regimen['dose_mg']:g} mg every {regimen['interval_h']:g} h",
                    "route": route,
                    "timing": {
                        "repeat": {
                            "frequency": 1,
                            "period": regimen["interval_h"],
                            "periodUnit": "h",
                        }
                    },
                    "doseAndRate": [{"doseQuantity": _quantity(regimen["dose_mg"], "mg")}],
                }
            ],
        }
    )
    last = max(m["time_h"] for m in case["monitoring"]["values"])
    for k, dose in enumerate(d for d in regimen["doses"] if d["time_h"] <= last):
        resources.append(
            {
                "resourceType": "MedicationAdministration",
                "id": _id(case, "admin", k + 1),
                "status": "completed",
                "medicationCodeableConcept": medication,
                "subject": patient_ref,
                "effectiveDateTime": _when(dose["time_h"]),
                "request": {"reference": f"MedicationRequest/{_id(case, 'medreq')}"},
                "dosage": {"route": route, "dose": _quantity(dose["amount_mg"], "mg")},
            }
        )
    if case.get("event") and case["event"]["kind"] == "inhibitor_start":
        event = case["event"]
        resources.append(
            {
                "resourceType": "MedicationRequest",
                "id": _id(case, "medreq", event["drug"]),
                "status": "active",
                "intent": "order",
                "medicationCodeableConcept": {"text": event["drug"]},
                "subject": patient_ref,
                "authoredOn": _when(event["time_h"]),
                "dosageInstruction": [
                    {
                        "text": f"{event['dose_mg_per_day']:g} mg daily",
                        "timing": {"repeat": {"frequency": 1, "period": 24, "periodUnit": "h"}},
                        "doseAndRate": [
                            {"doseQuantity": _quantity(event["dose_mg_per_day"], "mg")}
                        ],
                    }
                ],
            }
        )
    data = {
        "resourceType": "Bundle",
        "id": _id(case, "bundle"),
        "type": "collection",
        "timestamp": _when(0.0),
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid5(_NAMESPACE, r['resourceType'] + '/' + r['id'])}",
                "resource": r,
            }
            for r in resources
        ],
    }
    Bundle.model_validate(data)  # every resource validated against FHIR R4(B)
    return data


def summary_markdown(case_set: CaseSet) -> str:
    """The set's mix (sex, ancestry, age, genotype) against the request, as Markdown."""
    s = case_set.summary
    lines = [
        f"# {case_set.spec.title or case_set.template.title}: {s['n']} cases",
        "",
        "| group | requested | obtained | SE | z |",
        "|---|---:|---:|---:|---:|",
    ]

    def row(name: str, v: Mapping[str, float]) -> str:
        return f"| {name} | {v['requested']:.3f} | {v['obtained']:.3f} | {v['se']:.3f} | {v['z']:+.2f} |"

    lines.append(row("female", s["sex"]["female"]))
    lines += [row(f"ancestry {k}", v) for k, v in s["ancestry"].items()]
    for gene, table in s["genotype"].items():
        lines += [row(f"{gene} {d}", v) for d, v in table.items()]
    a = s["age"]
    lines += [
        "",
        f"Age: requested {a['requested_range'][0]:g}–{a['requested_range'][1]:g} y "
        f"(mean {a['requested_mean']:g}), obtained mean {a['obtained_mean']:g} "
        f"(SE {a['se']:g}, z {a['z']:+.2f}), range {a['obtained_range'][0]:g}–{a['obtained_range'][1]:g}.",
        "",
        *[f"- {note}" for note in s["notes"]],
    ]
    return "\n".join(lines) + "\n"


def write_case_set(case_set: CaseSet, out: str | Path) -> list[Path]:
    """Write every case (student and instructor Markdown, HTML and JSON; FHIR bundle), the
    set summary (JSON and Markdown) and the spec, atomically. Returns the paths written.

    Layout: ``OUT/<case id>/{student,instructor}.{md,html,json}``, ``OUT/<case id>/fhir.json``,
    ``OUT/summary.{json,md}``, ``OUT/spec.json``.
    """
    out = Path(out)
    written = []
    for case in case_set.cases:
        folder = out / case["id"]
        for key, version in ((False, "student"), (True, "instructor")):
            written.append(
                write_text_atomic(folder / f"{version}.md", case_markdown(case, key=key))
            )
            written.append(write_text_atomic(folder / f"{version}.html", case_html(case, key=key)))
            written.append(write_text_atomic(folder / f"{version}.json", case_json(case, key=key)))
        bundle = json.dumps(fhir_bundle(case), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        written.append(write_text_atomic(folder / "fhir.json", bundle))
    summary = json.dumps(case_set.summary, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    written.append(write_text_atomic(out / "summary.json", summary))
    written.append(write_text_atomic(out / "summary.md", summary_markdown(case_set)))
    spec = json.dumps(case_set.spec.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    written.append(write_text_atomic(out / "spec.json", spec))
    return written
