"""The digital twin: individual posterior, latent generative model, virtual populations."""

from ..simulators._lazy import lazy_exports

#: where each public name lives (imported on first use, see twinsim.simulators._lazy)
_EXPORTS = {
    "._clinical": (
        "LabelLimits",
        "Observation",
        "PatientTwinError",
        "Regimen",
        "Safety",
        "Target",
        "default_safety",
        "default_target",
        "label_limits",
    ),
    "._fitting": (
        "FitError",
        "PopulationFit",
        "fit_population",
        "objective_function_value",
        "with_initial",
    ),
    "._latent": (
        "CovariateCopula",
        "CovariateFeatures",
        "LatentConfig",
        "LatentData",
        "LatentModel",
        "LatentModelError",
        "TrainingResult",
        "TrainingSettings",
        "covariate_kind",
        "synthesize_patients",
        "train_latent",
    ),
    "._importance": ("PARETO_K_LIMIT",),
    "._nuts": ("fit_nuts_many",),
    "._patient": ("PatientTwin",),
    "._posterior": ("TwinPosterior",),
    "._prediction": ("Prediction",),
    "._recommend": ("Recommendation",),
    "._virtual": (
        "Demographics",
        "Lifestyle",
        "PopulationReport",
        "VirtualPopulation",
        "VirtualPopulationConfig",
        "apply_criteria",
        "draw_candidates",
        "generate_population",
    ),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
