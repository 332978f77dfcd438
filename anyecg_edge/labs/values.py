"""Parse MC-MED ``Component_value`` strings into numbers (stdlib only; runs on-device).

MC-MED stores every lab result as text: plain numbers, censored bounds ('>10.0',
'<0.1', '<=5'), thousands separators ('1,234'), Epic flags ('12.3 (H)'), cancellations
and free text ('See comment', 'Positive'). ``parse_lab_value`` turns one such string into
a :class:`ParsedLabValue` and never yields NaN: anything that is not a number comes back
with ``value=None`` and a ``status`` saying why.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = ["LAB_VALUE_STATUSES", "LAB_VALUE_FLAGS", "ParsedLabValue", "parse_lab_value"]

LAB_VALUE_STATUSES = ("ok", "canceled", "non_numeric", "empty")
# Epic result flags: high, low, critical high/low, abnormal (non-directional).
LAB_VALUE_FLAGS = ("H", "L", "HH", "LL", "A", "AA")


@dataclass(frozen=True)
class ParsedLabValue:
    """One parsed ``Component_value``.

    value: the number, or None when ``status`` is not 'ok'. A censored result keeps its
        bound here ('<0.1' -> 0.1 with censored '<').
    censored: '<' (true value below ``value``), '>' (above it) or None.
    flag: the Epic flag suffix in upper case ('H', 'L', 'HH', 'LL', 'A', 'AA') or None.
    status: 'ok', 'canceled', 'non_numeric' or 'empty'.
    inclusive: True when the bound was written '<=' / '>=' (the true value may equal it).
    """

    value: float | None
    censored: str | None = None
    flag: str | None = None
    status: str = "ok"
    inclusive: bool = False

    @property
    def ok(self) -> bool:
        """True when ``value`` holds a usable number (possibly censored)."""
        return self.status == "ok"


_CANCELED = re.compile(r"\bcancell?ed\b", re.IGNORECASE)
# Flag at the end: '12.3 (H)', '12.3(HH)', '12.3 H'. A bare letter needs a space before
# it so that a unit-less token like '5L' is not read as '5' flagged low.
_FLAG = re.compile(
    r"^(?P<body>.*?)\s*(?:\(\s*(?P<paren>HH|LL|AA|H|L|A)\s*\)|(?<=\s)(?P<bare>HH|LL|AA|H|L|A))$",
    re.IGNORECASE,
)
_CENSOR = re.compile(
    r"^(?P<op><=|>=|=<|=>|≤|≥|<|>|less\s+than\s+or\s+equal\s+to|greater\s+than\s+or\s+equal\s+to"
    r"|less\s+than|greater\s+than)\s*(?P<rest>.*)$",
    re.IGNORECASE,
)
# A plain decimal, optionally with ',' thousands groups ('1,234.5'); a trailing '%' is
# allowed because some POC devices write '5.6%'. '1,5' (decimal comma) is ambiguous and
# stays non-numeric.
_NUMBER = re.compile(r"^(?P<num>[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|[+-]?\.\d+)\s*%?$")


def _censor_op(op: str) -> tuple[str, bool]:
    """Map the written comparison to ('<' or '>', inclusive)."""
    o = " ".join(op.lower().split())
    if o in ("<=", "=<", "≤", "less than or equal to"):
        return "<", True
    if o in (">=", "=>", "≥", "greater than or equal to"):
        return ">", True
    if o in ("<", "less than"):
        return "<", False
    return ">", False


def parse_lab_value(text: str | float | int | None) -> ParsedLabValue:
    """Parse one MC-MED ``Component_value``.

    Accepts the raw string; also None and numbers (a pandas column read without
    ``dtype=str`` yields floats and NaN for empty cells), so a missing cell comes back
    as status 'empty' rather than a NaN value. Never raises on content; raises
    ``TypeError`` only for a value of another type (a bug in the caller).
    """
    if text is None:
        return ParsedLabValue(None, status="empty")
    if isinstance(text, bool):
        raise TypeError(f"parse_lab_value expects a string or number, got bool {text!r}")
    if isinstance(text, (int, float)):
        if isinstance(text, float) and math.isnan(text):
            return ParsedLabValue(None, status="empty")
        if not math.isfinite(text):
            return ParsedLabValue(None, status="non_numeric")
        return ParsedLabValue(float(text))
    if not isinstance(text, str):
        raise TypeError(
            f"parse_lab_value expects a string or number, got {type(text).__name__} {text!r}"
        )

    s = " ".join(text.split())
    if not s:
        return ParsedLabValue(None, status="empty")
    if _CANCELED.search(s):
        return ParsedLabValue(None, status="canceled")

    flag = None
    m = _FLAG.match(s)
    if m and m.group("body"):
        flag = (m.group("paren") or m.group("bare")).upper()
        s = m.group("body")

    censored, inclusive = None, False
    m = _CENSOR.match(s)
    if m:
        censored, inclusive = _censor_op(m.group("op"))
        s = m.group("rest")

    m = _NUMBER.match(s)
    if not m:
        return ParsedLabValue(None, flag=flag, status="non_numeric")
    value = float(m.group("num").replace(",", ""))
    return ParsedLabValue(value, censored=censored, flag=flag, status="ok", inclusive=inclusive)
