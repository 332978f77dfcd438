"""Errors of the export stage: one line naming the file/option and what was expected."""

from __future__ import annotations


class ExportError(ValueError):
    """An export cannot be made as asked (bad option, model, data, or a tool failed)."""


class WindowsError(ExportError):
    """A calibration / held-out source is missing, unreadable or gives no usable window."""


class ParityError(ExportError):
    """The export is outside the parity tolerance (the parity report says by how much)."""
