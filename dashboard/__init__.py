"""The Dash app: clinician, trial-designer and educator pages."""
