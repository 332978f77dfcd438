"""Error type of the signal core."""

from __future__ import annotations

__all__ = ["SignalError"]


class SignalError(ValueError):
    """Bad input to a signal function (wrong shape, rate, length, NaN gaps...).

    The message is one line that names the problem and what was expected, so a CLI
    can print it as is.
    """
