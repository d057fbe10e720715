"""Request parameters as text -> checked values, shared by the HTTP API and the Gradio demo:
output, alpha, booleans, the classes field, and BentoML's JSON-decoded form fields back to text.
Each raises InvalidParameter (422) with a message naming the parameter."""

from __future__ import annotations

import json
from typing import Any

from serving.errors import InvalidParameter

OUTPUTS = ("json", "label_png", "labelid_png", "overlay_png", "color_png")
MAX_CLASSES_FIELD_CHARS = 20_000


def form_text(value: Any) -> Any:
    """Undo BentoML's JSON decoding of multipart text fields, so that parameters arrive as text.

    BentoML's multipart parser runs `json.loads` on every text field: `alpha=0.25` arrives as a
    float, `use_captioner=false` as a bool, `classes=["road", "sky"]` as a list, and a parameter
    typed `str` then fails validation. Scalars go back to their text, lists and objects to JSON
    (what `parse_classes` reads); None and strings pass unchanged. Used as a pydantic
    BeforeValidator on the service's text parameters (a caption of only `null` reads as absent).
    """
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return value


def parse_output(value: str | None) -> str:
    output = (value or "json").strip().lower()
    if output not in OUTPUTS:
        raise InvalidParameter(f"unknown output {value!r}; choose one of {', '.join(OUTPUTS)}")
    return output


def parse_alpha(value: str | float | None) -> float:
    if value is None or value == "":
        return 0.5
    try:
        alpha = float(value)
    except (TypeError, ValueError):
        raise InvalidParameter(f"alpha must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= alpha <= 1.0:
        raise InvalidParameter(f"alpha must be in [0, 1], got {alpha}")
    return alpha


def parse_bool(value: str | bool | None, name: str, default: bool = True) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise InvalidParameter(f"{name} must be true or false, got {value!r}")


def parse_classes(value: str | None) -> str | list[str] | None:
    """None/'' -> default set; a set name or 'a, b, c' passes through; a JSON list -> list of prompts."""
    if value is None or not value.strip():
        return None
    if len(value) > MAX_CLASSES_FIELD_CHARS:
        raise InvalidParameter(f"classes field longer than {MAX_CLASSES_FIELD_CHARS} characters")
    text = value.strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as err:
            raise InvalidParameter(f"classes looks like JSON but does not parse: {err.msg}") from None
        if not isinstance(parsed, list) or not all(isinstance(p, str) for p in parsed):
            raise InvalidParameter("classes JSON must be a list of strings")
        return parsed
    return text
