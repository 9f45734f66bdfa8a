"""The teaching-case spec (:class:`CaseSpec`) and case templates (:class:`CaseTemplate`).

A *template* is a YAML file describing one kind of teaching case: the drug, the condition,
the regimen, the event that changes the course, what is monitored, the questions and the
narrative. The built-in ones live in ``templates/`` next to this module; a user copies
one, edits it and names the file in ``CaseSpec.template`` (no code change). A *spec* says
which template, how many cases, for whom (population constraints) and with which seed.
"""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from ...priors import ANCESTRIES, GENES, CovariateError, drug_metadata, parse_diplotype
from .._regimen import Hours, Milligrams, SpecError, SpecModel

__all__ = [
    "TEMPLATE_DIR",
    "CaseError",
    "CaseSpec",
    "CaseTemplate",
    "builtin_templates",
    "load_case_spec",
    "load_template",
]

#: Folder of the built-in templates (YAML files a user may copy).
TEMPLATE_DIR = Path(__file__).with_name("templates")


class CaseError(SpecError):
    """A case spec or template is invalid, or its population request cannot be met."""


def builtin_templates() -> dict[str, Path]:
    """``{name: path}`` of the built-in templates.

    Examples
    --------
    >>> sorted(builtin_templates())  # doctest: +NORMALIZE_WHITESPACE
    ['theophylline_smoking_cessation', 'vancomycin_aki', 'warfarin_amiodarone',
     'warfarin_pgx_initiation']
    """
    return {p.stem: p for p in sorted(TEMPLATE_DIR.glob("*.yaml"))}


Comparison = Literal["value", "auc24"]


class Coded(SpecModel):
    """A coded concept: display text and an optional SNOMED CT code."""

    text: str
    snomed: str | None = None


class RegimenTemplate(SpecModel):
    """The regimen the patient is on: ``dose`` every ``interval`` from ``start``."""

    dose: Milligrams = Field(gt=0)
    interval: Hours = Field(gt=0)
    infusion: Hours = Field(0.0, ge=0)
    start: Hours = Field(0.0, ge=0)
    dose_per_kg: float | None = Field(None, gt=0, description="mg/kg, rounded to `round_to`")
    round_to: Milligrams = Field(250.0, gt=0)
    titrate: bool = Field(
        False,
        description="start at the dose option whose mean level over the dosing interval "
        "before the event is closest to the middle of the drug's target (a patient stable "
        "on their own dose)",
    )


class EventTemplate(SpecModel):
    """What changes during the course (at most one event per template).

    ``renal_decline``: creatinine clearance falls to ``crcl_ratio`` times its baseline
    with half-time ``half_time``; ``smoking_cessation``: the smoker quits (the drug model's
    own quit-time covariate); ``inhibitor_start``: ``drug`` is started at
    ``maintenance_mg_per_day``.
    """

    kind: Literal["renal_decline", "smoking_cessation", "inhibitor_start"]
    at: Hours = Field(ge=0)
    half_time: Hours | None = Field(None, gt=0)
    crcl_ratio: float | None = Field(None, gt=0, lt=1)
    drug: str | None = None
    maintenance_mg_per_day: float | None = Field(None, gt=0)
    text: str = Field(description="what the narrative says happened")

    @model_validator(mode="after")
    def _needs(self) -> EventTemplate:
        need = {
            "renal_decline": ("half_time", "crcl_ratio"),
            "inhibitor_start": ("drug", "maintenance_mg_per_day", "half_time"),
            "smoking_cessation": (),
        }[self.kind]
        missing = [n for n in need if getattr(self, n) is None]
        if missing:
            raise ValueError(
                f"`event.kind` {self.kind!r} needs {', '.join(f'`event.{m}`' for m in missing)}; "
                "add them to the template"
            )
        return self


class Factor(SpecModel):
    """A candidate explanation of a change; re-simulated without it to test it."""

    label: str
    remove_event: bool = False
    covariate: str | None = None
    value: float | str | None = None

    @model_validator(mode="after")
    def _one(self) -> Factor:
        if self.remove_event == (self.covariate is not None):
            raise ValueError(
                f"factor {self.label!r}: give either `remove_event: true` or `covariate` with "
                f"`value`, got remove_event={self.remove_event}, covariate={self.covariate!r}"
            )
        return self


class Questions(SpecModel):
    """Settings of the four kinds of question."""

    decision_time: Hours = Field(ge=0, description="when the dose is chosen")
    dose_options: list[Milligrams] = Field(min_length=4, description="doses to choose from, mg")
    evaluate: Comparison = "value"
    evaluate_time: Hours = Field(gt=0, description="when the chosen regimen is judged")
    interpret_time: Hours = Field(ge=0)
    interpret_range: tuple[float, float]
    interpret_source: str
    predict_time: Hours = Field(gt=0)
    predict_bins: list[float] = Field(min_length=3, description="edges of the answer ranges")
    explain_from: Hours = Field(ge=0)
    explain_to: Hours = Field(gt=0)
    factors: list[Factor] = Field(min_length=2)

    @field_validator("predict_bins", "dose_options")
    @classmethod
    def _increasing(cls, values: list[float]) -> list[float]:
        if any(b <= a for a, b in itertools.pairwise(values)):
            raise ValueError(f"must be strictly increasing, got {values}; sort them")
        return values


class Monitoring(SpecModel):
    """What is measured, when."""

    output: str
    times: list[Hours] = Field(min_length=1)
    plot_every: Hours = Field(2.0, gt=0, description="grid of the plotted time course")


class TemplatePopulation(SpecModel):
    """The template's default population (a spec's `population` overrides it)."""

    age_range: tuple[float, float] = (30.0, 85.0)
    crcl_range: tuple[float, float] | None = None
    smoker: bool = False
    alleles: dict[str, list[str]] = Field(default_factory=dict)
    genotype: dict[str, list[str]] = Field(default_factory=dict)


class CaseTemplate(SpecModel):
    """One kind of teaching case (a YAML file; see ``templates/`` for examples)."""

    name: str
    title: str
    drug: str
    condition: Coded
    setting: str
    history: list[str] = Field(default_factory=list)
    comedications: list[str] = Field(default_factory=list)
    genes_shown: list[str] = Field(default_factory=list)
    population: TemplatePopulation = Field(default_factory=TemplatePopulation)
    regimen: RegimenTemplate
    horizon: Hours = Field(gt=0)
    event: EventTemplate | None = None
    monitoring: Monitoring
    questions: Questions
    learning_objectives: list[str] = Field(min_length=1)
    narrative: str = Field(description="Python format text over the case's facts")

    @field_validator("drug")
    @classmethod
    def _drug(cls, name: str) -> str:
        try:
            drug_metadata(name)
        except ValueError as error:
            raise ValueError(f"`drug` {name!r}: {error}") from None
        return name.strip().lower()

    @model_validator(mode="after")
    def _times(self) -> CaseTemplate:
        q = self.questions
        late = {
            "questions.evaluate_time": q.evaluate_time,
            "questions.predict_time": q.predict_time,
            "questions.explain_to": q.explain_to,
            "questions.decision_time": q.decision_time,
            **{f"monitoring.times[{i}]": t for i, t in enumerate(self.monitoring.times)},
        }
        for name, t in late.items():
            if t > self.horizon:
                raise ValueError(
                    f"`{name}` is {t:g} h, after `horizon` {self.horizon:g} h; expected a time "
                    "within the course: shorten it or lengthen the horizon"
                )
        if q.explain_to <= q.explain_from:
            raise ValueError(
                f"`questions.explain_to` ({q.explain_to:g} h) must be after "
                f"`questions.explain_from` ({q.explain_from:g} h)"
            )
        return self


class PopulationRequest(SpecModel):
    """Who the cases are about (overrides of the template's population)."""

    ancestry: dict[str, float] = Field(
        default_factory=lambda: {"european": 0.6, "african": 0.2, "east_asian": 0.2}
    )
    age_range: tuple[float, float] | None = None
    female_fraction: float = Field(0.5, ge=0, le=1)
    crcl_range: tuple[float, float] | None = None
    genotype: dict[str, list[str]] | None = Field(
        None, description="{gene: diplotypes to include}, e.g. {CYP2C9: ['*1/*3', '*2/*3']}"
    )

    @field_validator("ancestry")
    @classmethod
    def _ancestry(cls, mix: dict[str, float]) -> dict[str, float]:
        for group, share in mix.items():
            if group not in ANCESTRIES:
                raise ValueError(
                    f"ancestry group {group!r} is not known; expected one of {list(ANCESTRIES)}"
                )
            if not (math.isfinite(share) and share >= 0):
                raise ValueError(f"share of {group!r} must be ≥ 0, got {share}")
        if sum(mix.values()) <= 0:
            raise ValueError(f"shares must not all be 0, got {mix}; e.g. {{european: 1}}")
        total = sum(mix.values())
        return {k: v / total for k, v in mix.items() if v > 0}

    @field_validator("age_range", "crcl_range")
    @classmethod
    def _range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not value[0] < value[1]:
            raise ValueError(f"must be (lowest, highest) with lowest < highest, got {value}")
        return value

    @field_validator("genotype")
    @classmethod
    def _genotype(cls, value: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        if value is None:
            return None
        out: dict[str, list[str]] = {}
        for gene, diplotypes in value.items():
            key = gene.upper()
            if key not in GENES:
                raise ValueError(f"gene {gene!r} is not known; expected one of {list(GENES)}")
            if not diplotypes:
                raise ValueError(f"`{gene}` lists no diplotype; give e.g. ['*1/*3']")
            try:
                out[key] = [parse_diplotype(key, d) for d in diplotypes]
            except CovariateError as error:
                raise ValueError(str(error)) from None
        return out


class CaseSpec(SpecModel):
    """What set of teaching cases to make.

    Examples
    --------
    >>> spec = CaseSpec(template="warfarin_pgx_initiation", n_cases=2, seed=7)
    >>> spec.difficulty, spec.resolved_template().drug
    ('intermediate', 'warfarin')
    """

    template: str = Field(description="a built-in template name or a path to a YAML file")
    drug: str | None = None
    difficulty: Literal["introductory", "intermediate", "advanced"] = "intermediate"
    learning_objectives: list[str] | None = None
    n_cases: int = Field(3, ge=1, le=500)
    seed: int = Field(0, ge=0, lt=2**31)
    title: str | None = None
    population: PopulationRequest = Field(default_factory=PopulationRequest)

    @field_validator("template")
    @classmethod
    def _template(cls, name: str) -> str:
        if name in builtin_templates() or Path(name).suffix in (".yaml", ".yml"):
            return name
        raise ValueError(
            f"`template` {name!r} is neither a built-in template ({', '.join(builtin_templates())}) "
            "nor a path to a .yaml file; copy a built-in template and give its path"
        )

    @model_validator(mode="after")
    def _drug_matches(self) -> CaseSpec:
        template = self.resolved_template()
        if self.drug is not None and self.drug.strip().lower() != template.drug:
            raise ValueError(
                f"`drug` is {self.drug!r} but template {template.name!r} is about "
                f"{template.drug!r}; drop `drug` or choose a {self.drug} template"
            )
        return self

    def resolved_template(self) -> CaseTemplate:
        """The :class:`CaseTemplate` the spec names (built-in or file)."""
        return load_template(self.template)


def _read_yaml(path: Path, what: str) -> Any:
    if not path.is_file():
        raise CaseError([f"`{what}` file {str(path)!r} does not exist; check the path"])
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise CaseError([f"`{what}` file {str(path)!r} is not valid YAML: {error}"]) from None


def load_template(name_or_path: str | Path) -> CaseTemplate:
    """Read a template: a built-in name or a YAML file.

    Raises
    ------
    CaseError
        Missing file, bad YAML, or invalid fields (each named).

    Examples
    --------
    >>> load_template("vancomycin_aki").event.kind
    'renal_decline'
    """
    path = builtin_templates().get(str(name_or_path), Path(name_or_path))
    data = _read_yaml(Path(path), "template")
    try:
        return CaseTemplate.model_validate(data)
    except SpecError as error:
        raise CaseError(error.problems, title=f"invalid template {str(path)!r}") from None


def load_case_spec(path: str | Path) -> CaseSpec:
    """Read a :class:`CaseSpec` from YAML; a relative template path is taken relative to
    the spec file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "spec.yaml"
    >>> _ = p.write_text("template: theophylline_smoking_cessation\\nn_cases: 1\\n")
    >>> load_case_spec(p).n_cases
    1
    """
    path = Path(path)
    data = _read_yaml(path, "spec")
    if not isinstance(data, dict):
        raise CaseError([f"spec file {str(path)!r} must hold a mapping of fields, got {data!r}"])
    template = data.get("template")
    if isinstance(template, str) and re.search(r"\.ya?ml$", template):
        if not Path(template).is_absolute():
            data = {**data, "template": str((path.parent / template).resolve())}
    try:
        return CaseSpec.model_validate(data)
    except SpecError as error:
        raise CaseError(error.problems, title=f"invalid case spec {str(path)!r}") from None
