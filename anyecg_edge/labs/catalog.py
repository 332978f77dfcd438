"""The emergency-department lab catalog (re-exported by ``anyecg_edge.labs``): 108 indicators
the model estimates from one ECG lead.

The data lives in ``catalog.csv`` next to this file (one row per indicator, file order =
model output order). Everything here is stdlib only, so it runs on-device.

    >>> from anyecg_edge.labs import load_catalog, parse_lab_value
    >>> cat = load_catalog()
    >>> lab = cat.lookup("POC:LACTATE, ISTAT")          # synonyms resolve to one indicator
    >>> lab.key, lab.is_abnormal(3.1)
    ('lactate', True)
    >>> lab.abnormal_label(parse_lab_value("<1.0"))     # censored results are handled
    False

Reference intervals are adult, sex-combined where the source is sex-specific (see each
row's ``note``), from public references named in ``source``. A value equal to a bound is
normal (reference intervals are closed).
"""

from __future__ import annotations

import csv
import difflib
import functools
import io
import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import overload

from anyecg_edge.labs.values import (
    LAB_VALUE_FLAGS,
    LAB_VALUE_STATUSES,
    ParsedLabValue,
    parse_lab_value,
)

__all__ = [
    "ABNORMAL_DIRECTIONS",
    "CATALOG_COLUMNS",
    "HEADLINE_BASES",
    "LAB_GROUPS",
    "LAB_VALUE_FLAGS",
    "LAB_VALUE_STATUSES",
    "Lab",
    "LabCatalog",
    "LabCatalogError",
    "LabError",
    "ParsedLabValue",
    "UnknownLabError",
    "load_catalog",
    "normalize_component_name",
    "parse_lab_value",
]

ABNORMAL_DIRECTIONS = ("low", "high", "both")
LAB_GROUPS = (
    "electrolytes",
    "renal",
    "cbc",
    "differential",
    "liver",
    "cardiac",
    "coagulation",
    "blood_gas",
    "metabolic",
    "inflammation",
    "lipids",
    "endocrine",
    "urinalysis",
    "toxicology",
    "other",
)
# Why a lab is a headline lab: named in the AnyECG-Lab summaries ('paper', DESIGN.md §8)
# or a well-known ECG-predictable lab from other published work ('literature').
HEADLINE_BASES = ("paper", "literature")
CATALOG_COLUMNS = (
    "key",
    "component_name",
    "synonyms",
    "display_name",
    "unit",
    "low",
    "high",
    "abnormal",
    "group",
    "headline",
    "headline_basis",
    "source",
    "note",
)
_OPTIONAL_COLUMNS = frozenset({"headline_basis", "note"})
_KEY_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_PACKAGED_NAME = "catalog.csv"
# The CSV ships in the package, next to this module.
_PACKAGE = "anyecg_edge.labs"


class LabError(ValueError):
    """Bad lab data or a bad value handed to a lab; the message is one line."""


class LabCatalogError(LabError):
    """The catalog CSV is invalid; the message names the file, row, line and field."""


class UnknownLabError(LabError, KeyError):
    """``LabCatalog.by_key`` got a key that is not in the catalog."""

    # KeyError.__str__ would repr-quote the message; keep it a plain line.
    __str__ = BaseException.__str__


class _FieldError(LabError):
    """A Lab field is invalid; ``field`` lets the CSV loader say which column."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"field {field!r}: {message}")
        self.field = field
        self.detail = message


_PUNCT_SPACE = re.compile(r"\s*([,:;()/\-])\s*")


def normalize_component_name(name: str) -> str:
    """Canonical form used to match Component_name strings.

    Upper case, any whitespace run (MC-MED names can hold newlines) collapsed to one
    space, and no spaces around , : ; ( ) / - so 'POC: LACTATE ,ISTAT' matches
    'POC:LACTATE, ISTAT'.
    """
    s = " ".join(name.upper().split())
    return _PUNCT_SPACE.sub(r"\1", s)


@dataclass(frozen=True)
class Lab:
    """One lab indicator of the catalog (one row of catalog.csv)."""

    key: str
    component_name: str
    synonyms: tuple[str, ...]
    display_name: str
    unit: str
    low: float | None
    high: float | None
    abnormal: str
    group: str
    headline: bool
    source: str
    note: str = ""
    headline_basis: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not _KEY_RE.match(self.key):
            raise _FieldError("key", f"expected a snake_case id like 'potassium', got {self.key!r}")
        for name in ("component_name", "display_name", "unit", "source"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise _FieldError(name, "must not be empty")
        if not isinstance(self.synonyms, tuple) or not all(
            isinstance(s, str) and s.strip() for s in self.synonyms
        ):
            raise _FieldError("synonyms", "expected a tuple of non-empty names")
        for name in ("low", "high"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
            ):
                raise _FieldError(name, f"expected a finite number or empty, got {value!r}")
        if self.low is None and self.high is None:
            raise _FieldError("low", "both bounds are missing; give low, high or both")
        if self.low is not None and self.high is not None and self.low >= self.high:
            raise _FieldError("low", f"low {self.low:g} must be below high {self.high:g}")
        if self.abnormal not in ABNORMAL_DIRECTIONS:
            raise _FieldError(
                "abnormal",
                f"expected one of {', '.join(ABNORMAL_DIRECTIONS)}, got {self.abnormal!r}",
            )
        if self.abnormal in ("low", "both") and self.low is None:
            raise _FieldError("low", f"abnormal direction {self.abnormal!r} needs a low bound")
        if self.abnormal in ("high", "both") and self.high is None:
            raise _FieldError("high", f"abnormal direction {self.abnormal!r} needs a high bound")
        if self.group not in LAB_GROUPS:
            raise _FieldError(
                "group", f"expected one of {', '.join(LAB_GROUPS)}, got {self.group!r}"
            )
        if not isinstance(self.headline, bool):
            raise _FieldError("headline", f"expected a bool, got {self.headline!r}")
        if self.headline and self.headline_basis not in HEADLINE_BASES:
            raise _FieldError(
                "headline_basis",
                f"a headline lab needs one of {', '.join(HEADLINE_BASES)}, "
                f"got {self.headline_basis!r}",
            )
        if not self.headline and self.headline_basis:
            raise _FieldError(
                "headline_basis", f"must be empty when headline is 0, got {self.headline_basis!r}"
            )

    @property
    def names(self) -> tuple[str, ...]:
        """The canonical Component_name followed by its synonyms."""
        return (self.component_name, *self.synonyms)

    def is_abnormal(self, value: float) -> bool:
        """True when ``value`` lies outside the reference interval in the abnormal direction.

        'high': value > high; 'low': value < low; 'both': either. A value on a bound is
        normal. ``value`` must be a finite number: None, NaN or inf raise ``LabError``
        (missing results must never turn into a silent 'normal'; check
        ``ParsedLabValue.status`` first, or use :meth:`abnormal_label`).
        """
        if (
            value is None
            or isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise LabError(
                f"lab {self.key!r}: is_abnormal needs a finite number, got {value!r} "
                "(check ParsedLabValue.status before labelling)"
            )
        too_low = self.abnormal in ("low", "both") and value < self.low  # type: ignore[operator]
        too_high = self.abnormal in ("high", "both") and value > self.high  # type: ignore[operator]
        return too_low or too_high

    def abnormal_label(self, parsed: ParsedLabValue) -> bool | None:
        """Binary training target for a parsed result, or None when it is not decidable.

        None for results without a number (canceled, non-numeric, empty) and for censored
        results whose interval straddles the bound ('<0.1' for a lab with high 0.04).
        Otherwise True/False exactly as :meth:`is_abnormal` would say for every value the
        censored interval allows (eGFR '>60' with low 60 -> False; troponin '<0.01'
        with high 0.04 -> False; potassium '>10.0' -> True).
        """
        if not parsed.ok or parsed.value is None:
            return None
        if parsed.censored is None:
            return self.is_abnormal(parsed.value)
        x, inclusive = parsed.value, parsed.inclusive
        # For each side in the abnormal direction: True (all allowed values abnormal on
        # that side), False (none are), None (mixed).
        sides: list[bool | None] = []
        if parsed.censored == "<":  # true value in (-inf, x) or (-inf, x]
            if self.abnormal in ("high", "both"):
                sides.append(False if x <= self.high else None)  # type: ignore[operator]
            if self.abnormal in ("low", "both"):
                all_low = x < self.low if inclusive else x <= self.low  # type: ignore[operator]
                sides.append(True if all_low else None)
        elif parsed.censored == ">":  # true value in (x, inf) or [x, inf)
            if self.abnormal in ("high", "both"):
                all_high = x > self.high if inclusive else x >= self.high  # type: ignore[operator]
                sides.append(True if all_high else None)
            if self.abnormal in ("low", "both"):
                sides.append(False if x >= self.low else None)  # type: ignore[operator]
        else:
            raise LabError(
                f"lab {self.key!r}: censored must be '<', '>' or None, got {parsed.censored!r}"
            )
        if any(s is True for s in sides):
            return True
        if all(s is False for s in sides):
            return False
        return None


class LabCatalog(Sequence[Lab]):
    """The labs in file order (= model output order), with name lookup."""

    def __init__(self, labs: Iterable[Lab], source: str = "<memory>") -> None:
        self._labs: tuple[Lab, ...] = tuple(labs)
        self.source = source
        self._by_key: dict[str, Lab] = {}
        self._by_name: dict[str, Lab] = {}
        for lab in self._labs:
            if not isinstance(lab, Lab):
                raise LabCatalogError(f"{source}: expected Lab objects, got {type(lab).__name__}")
            if lab.key in self._by_key:
                raise LabCatalogError(f"{source}: duplicate key {lab.key!r}")
            self._by_key[lab.key] = lab
            for name in lab.names:
                norm = normalize_component_name(name)
                other = self._by_name.get(norm)
                if other is not None:
                    raise LabCatalogError(
                        f"{source}: name {name!r} of lab {lab.key!r} is already used by "
                        f"lab {other.key!r}"
                    )
                self._by_name[norm] = lab

    @overload
    def __getitem__(self, index: int) -> Lab: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[Lab, ...]: ...
    def __getitem__(self, index: int | slice) -> Lab | tuple[Lab, ...]:
        return self._labs[index]

    def __len__(self) -> int:
        return len(self._labs)

    def __iter__(self) -> Iterator[Lab]:
        return iter(self._labs)

    def __repr__(self) -> str:
        return f"LabCatalog({len(self)} labs from {self.source})"

    @property
    def keys(self) -> tuple[str, ...]:
        """Lab keys in file order."""
        return tuple(lab.key for lab in self._labs)

    def by_key(self, key: str) -> Lab:
        """The lab with this key; ``UnknownLabError`` (a KeyError) names close matches."""
        lab = self._by_key.get(key)
        if lab is None:
            close = difflib.get_close_matches(str(key), self._by_key, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UnknownLabError(f"unknown lab key {key!r} in {self.source}{hint}")
        return lab

    def get(self, key: str, default: Lab | None = None) -> Lab | None:
        """The lab with this key, or ``default``: a plain lookup, for keys that may be
        outside the catalog (``by_key`` spends time on close-match hints for its error)."""
        return self._by_key.get(key, default)

    def position(self, key: str) -> int:
        """Index of the lab in file order (its model output column)."""
        return self._labs.index(self.by_key(key))

    def lookup(self, component_name: str) -> Lab | None:
        """The lab a MC-MED Component_name belongs to (canonical name or synonym).

        Case-insensitive and whitespace-normalised (see ``normalize_component_name``).
        None for names outside the catalog, and for non-strings such as a pandas NaN.
        """
        if not isinstance(component_name, str):
            return None
        return self._by_name.get(normalize_component_name(component_name))

    def groups(self) -> dict[str, tuple[Lab, ...]]:
        """Labs per group, groups in order of first appearance, labs in file order."""
        out: dict[str, list[Lab]] = {}
        for lab in self._labs:
            out.setdefault(lab.group, []).append(lab)
        return {group: tuple(labs) for group, labs in out.items()}

    def headline(self, basis: str | None = None) -> tuple[Lab, ...]:
        """Headline labs, optionally only those with this ``headline_basis``."""
        if basis is not None and basis not in HEADLINE_BASES:
            raise LabError(f"headline basis must be one of {', '.join(HEADLINE_BASES)}")
        return tuple(
            lab
            for lab in self._labs
            if lab.headline and (basis is None or lab.headline_basis == basis)
        )


# --- loading -------------------------------------------------------------------------


def _parse_bound(text: str) -> float | None:
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise _FieldError("?", f"expected a number or empty, got {text!r}") from None
    if not math.isfinite(value):
        raise _FieldError("?", f"expected a finite number, got {text!r}")
    return value


def _parse_catalog(text: str, where: str) -> LabCatalog:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise LabCatalogError(f"{where}: file is empty, expected a header row") from None
    header = [h.strip() for h in header]
    unknown = [h for h in header if h not in CATALOG_COLUMNS]
    if unknown:
        raise LabCatalogError(
            f"{where}: unknown column(s) {', '.join(map(repr, unknown))}; "
            f"expected {', '.join(CATALOG_COLUMNS)}"
        )
    missing = [c for c in CATALOG_COLUMNS if c not in header and c not in _OPTIONAL_COLUMNS]
    if missing:
        raise LabCatalogError(f"{where}: missing column(s) {', '.join(map(repr, missing))}")
    if len(set(header)) != len(header):
        raise LabCatalogError(f"{where}: a column name appears twice in the header")

    labs: list[Lab] = []
    seen_keys: dict[str, int] = {}
    seen_names: dict[str, tuple[str, int]] = {}
    row_no = 0
    for row in reader:
        if not row or all(not cell.strip() for cell in row):
            continue  # blank line
        row_no += 1
        at = f"{where}: row {row_no} (line {reader.line_num})"

        def fail(field: str, message: str, at: str = at) -> LabCatalogError:
            return LabCatalogError(f"{at}, field {field!r}: {message}")

        if len(row) != len(header):
            raise LabCatalogError(f"{at}: expected {len(header)} fields, got {len(row)}")
        rec = {name: cell.strip() for name, cell in zip(header, row, strict=True)}

        bounds: dict[str, float | None] = {}
        for name in ("low", "high"):
            try:
                bounds[name] = _parse_bound(rec[name])
            except _FieldError as e:
                raise fail(name, e.detail) from None
        headline_text = rec["headline"]
        if headline_text not in ("0", "1"):
            raise fail("headline", f"expected 0 or 1, got {headline_text!r}")
        synonyms_text = rec["synonyms"]
        synonyms = tuple(s.strip() for s in synonyms_text.split("|")) if synonyms_text else ()
        if any(not s for s in synonyms):
            raise fail("synonyms", f"empty name in {synonyms_text!r} (stray '|')")
        try:
            lab = Lab(
                key=rec["key"],
                component_name=rec["component_name"],
                synonyms=synonyms,
                display_name=rec["display_name"],
                unit=rec["unit"],
                low=bounds["low"],
                high=bounds["high"],
                abnormal=rec["abnormal"],
                group=rec["group"],
                headline=headline_text == "1",
                source=rec["source"],
                note=rec.get("note", ""),
                headline_basis=rec.get("headline_basis", ""),
            )
        except _FieldError as e:
            raise fail(e.field, e.detail) from None

        if lab.key in seen_keys:
            raise fail("key", f"duplicate key {lab.key!r} (first on row {seen_keys[lab.key]})")
        seen_keys[lab.key] = row_no
        for field, name in [("component_name", lab.component_name)] + [
            ("synonyms", s) for s in lab.synonyms
        ]:
            norm = normalize_component_name(name)
            if norm in seen_names:
                other_key, other_row = seen_names[norm]
                raise fail(
                    field,
                    f"name {name!r} is already used by lab {other_key!r} (row {other_row})",
                )
            seen_names[norm] = (lab.key, row_no)
        labs.append(lab)

    if not labs:
        raise LabCatalogError(f"{where}: no lab rows after the header")
    return LabCatalog(labs, source=where)


@functools.lru_cache(maxsize=1)
def _load_packaged() -> LabCatalog:
    resource = resources.files(_PACKAGE).joinpath(_PACKAGED_NAME)
    return _parse_catalog(resource.read_text(encoding="utf-8"), f"{_PACKAGE}/{_PACKAGED_NAME}")


@functools.lru_cache(maxsize=8)
def _load_file(path: str, mtime_ns: int, size: int) -> LabCatalog:
    # mtime/size are part of the cache key so that an edited file is read again.
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise LabCatalogError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return _parse_catalog(text, path)


def load_catalog(path: str | os.PathLike[str] | None = None) -> LabCatalog:
    """Load and validate the lab catalog (cached).

    ``path=None`` reads the CSV packaged with ``anyecg_edge.labs``; a path reads that file
    (re-read when its size or modification time changes). Any invalid row raises
    ``LabCatalogError`` naming the file, row, line and field.
    """
    if path is None:
        return _load_packaged()
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise LabCatalogError(f"{p}: lab catalog file not found") from None
    if not p.is_file():
        raise LabCatalogError(f"{p}: lab catalog path is not a file")
    return _load_file(str(p.resolve()), st.st_mtime_ns, st.st_size)
