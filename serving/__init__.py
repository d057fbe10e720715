"""Serving layer: decoding with limits (`decode`), backends behind one interface (`backends`), the
agreement gate (`agreement`), compiled artefacts and their CLI (`compile`), the `Predictor` used by
the BentoML service and the Gradio demo (`predictor`), and output encoders (`encode`).

Importing a submodule imports `model`, which sets the offline/no-telemetry environment defaults.
"""
