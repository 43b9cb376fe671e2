"""Errors a user can fix, with messages meant to be read by that user.

The CLI prints these as one line and exits non-zero; the widget shows them
as napari notifications. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserInputError(ValueError):
    """Bad input from the user (file, annotations, parameters), with a readable message."""


class ModelFileError(UserInputError):
    """A file that is not a napari-unet model, or one this version cannot use."""
