"""Gradio demo for driving scenes (see ui/app.py). Importing `model` first sets offline and
no-telemetry defaults (GRADIO_ANALYTICS_ENABLED=False) before Gradio is imported."""

import model  # noqa: F401
