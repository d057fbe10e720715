"""The one exception type raised for broken or inconsistent dataset files."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset file is missing, unreadable, corrupt or inconsistent; the message names the file."""
