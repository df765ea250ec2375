"""The project's own exceptions and warnings, in one place.

Every warning lse-material issues derives from ``LSEMaterialWarning`` (a ``UserWarning``), so a
caller can silence or escalate all of them at once, e.g.
``warnings.simplefilter("error", LSEMaterialWarning)`` (the test suite does this).
"""

from __future__ import annotations

__all__ = [
    "LSEMaterialWarning",
    "LegacyModelFileWarning",
    "ModelFileError",
    "TrainingBoxWarning",
]


class ModelFileError(ValueError):
    """A model file that cannot be loaded; the message names the file and the problem."""

    def __init__(self, path, problem: str):
        super().__init__(f"{path}: {problem}")


class LSEMaterialWarning(UserWarning):
    """Base class of every warning lse-material issues."""


class LegacyModelFileWarning(LSEMaterialWarning):
    """A model file written before integrity hashes (format version 1): loaded unverified."""


class TrainingBoxWarning(LSEMaterialWarning):
    """A law is evaluated outside the box of its training data (extrapolation)."""
