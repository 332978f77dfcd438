"""Lab catalog: packaged data, lookup, abnormal labelling, validation, value parsing."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from anyecg_edge.labs import (
    CATALOG_COLUMNS,
    LAB_GROUPS,
    Lab,
    LabCatalog,
    LabCatalogError,
    LabError,
    ParsedLabValue,
    UnknownLabError,
    load_catalog,
    normalize_component_name,
    parse_lab_value,
)

pytestmark = pytest.mark.device  # no torch: also run on arm64 by make test-arm64

PACKAGED_CSV = Path(__file__).resolve().parents[1] / "anyecg_edge" / "labs" / "catalog.csv"


@pytest.fixture(scope="module")
def cat() -> LabCatalog:
    return load_catalog()


# --- the packaged catalog -------------------------------------------------------------


def test_catalog_size_and_order(cat: LabCatalog) -> None:
    assert 100 <= len(cat) <= 115
    with PACKAGED_CSV.open(newline="", encoding="utf-8") as fh:
        file_keys = [row["key"] for row in csv.DictReader(fh)]
    assert list(cat.keys) == file_keys  # file order is model output order
    assert len(set(cat.keys)) == len(cat)
    assert [lab.key for lab in cat] == file_keys
    assert cat[0].key == file_keys[0] and cat.position(file_keys[5]) == 5


def test_catalog_is_cached(cat: LabCatalog) -> None:
    assert load_catalog() is cat


def test_every_row_valid(cat: LabCatalog) -> None:
    seen: set[str] = set()
    for lab in cat:
        assert isinstance(lab, Lab)
        assert lab.group in LAB_GROUPS
        assert lab.low is not None or lab.high is not None
        if lab.low is not None and lab.high is not None:
            assert lab.low < lab.high, lab.key
        if lab.abnormal in ("low", "both"):
            assert lab.low is not None, lab.key
        if lab.abnormal in ("high", "both"):
            assert lab.high is not None, lab.key
        assert lab.unit and lab.display_name and lab.source
        assert lab.component_name == lab.component_name.upper()
        for name in lab.names:
            norm = normalize_component_name(name)
            assert norm not in seen, f"{name} used twice"
            seen.add(norm)
            assert cat.lookup(name) is lab


def test_required_panels_covered(cat: LabCatalog) -> None:
    required = [
        # BMP/CMP and friends
        "sodium", "potassium", "chloride", "bicarbonate", "bun", "creatinine", "glucose",
        "calcium", "anion_gap", "egfr", "total_protein", "albumin", "bilirubin_total",
        "bilirubin_direct", "ast", "alt", "alkaline_phosphatase", "magnesium", "phosphorus",
        "ionized_calcium",
        # CBC + differential
        "wbc", "rbc", "hemoglobin", "hematocrit", "mcv", "mch", "mchc", "rdw", "platelets",
        "mpv", "nrbc", "neutrophils_abs", "neutrophils_pct", "lymphocytes_abs",
        "lymphocytes_pct", "monocytes_abs", "monocytes_pct", "eosinophils_abs",
        "eosinophils_pct", "basophils_abs", "basophils_pct", "immature_granulocytes_abs",
        "immature_granulocytes_pct",
        # coagulation, cardiac, misc
        "pt", "inr", "ptt", "fibrinogen", "d_dimer", "troponin_i", "troponin_i_hs",
        "troponin_t_hs", "bnp", "nt_probnp", "ck", "ck_mb", "ldh", "lipase", "amylase",
        "lactate", "ph_venous", "pco2_venous", "po2_venous", "hco3_venous",
        "base_excess_venous", "o2_sat_venous", "ph_arterial", "pco2_arterial",
        "po2_arterial", "hco3_arterial", "base_excess_arterial", "o2_sat_arterial",
        "ammonia", "crp", "procalcitonin", "esr", "tsh", "free_t4", "hba1c",
        "cholesterol_total", "ldl", "hdl", "triglycerides", "urine_specific_gravity",
        "urine_ph", "hcg_quant", "ethanol", "acetaminophen", "salicylate", "osmolality",
        "uric_acid", "ggt", "ferritin", "iron",
    ]  # fmt: skip
    missing = [k for k in required if k not in cat.keys]
    assert not missing


def test_groups(cat: LabCatalog) -> None:
    groups = cat.groups()
    assert set(groups) == set(LAB_GROUPS)  # every group is used
    assert sum(len(labs) for labs in groups.values()) == len(cat)
    assert cat.by_key("potassium") in groups["electrolytes"]
    assert cat.by_key("hemoglobin") in groups["cbc"]
    assert cat.by_key("ph_venous") in groups["blood_gas"]
    # within a group, file order is kept
    keys = cat.keys
    for labs in groups.values():
        idx = [keys.index(lab.key) for lab in labs]
        assert idx == sorted(idx)


def test_headline_labs(cat: LabCatalog) -> None:
    assert {lab.key for lab in cat.headline("paper")} == {"ldh", "bnp"}
    literature = cat.headline("literature")
    assert [lab.key for lab in literature] == ["potassium"]
    assert "literature" in literature[0].source
    assert {lab.key for lab in cat.headline()} == {"ldh", "bnp", "potassium"}
    assert not cat.by_key("sodium").headline
    with pytest.raises(LabError, match="headline basis"):
        cat.headline("rumour")


def test_design_synonym_examples_resolve(cat: LabCatalog) -> None:
    hgb = cat.lookup("HEMOGLOBIN (HGB)")
    assert hgb is not None and hgb.key == "hemoglobin"
    assert cat.lookup("HEMOGLOBIN") is hgb
    lactate = cat.lookup("LACTATE")
    assert lactate is not None and lactate.key == "lactate"
    assert cat.lookup("LACTIC ACID") is lactate
    assert cat.lookup("POC:LACTATE, ISTAT") is lactate
    for name in ("POTASSIUM", "SODIUM", "CALCIUM", "GLUCOSE", "ALBUMIN"):
        lab = cat.lookup(name)
        assert lab is not None and lab.component_name == name
    assert cat.lookup("BLOOD UREA NITROGEN (BUN)") is cat.by_key("bun")


def test_lookup_normalises_case_and_whitespace(cat: LabCatalog) -> None:
    lactate = cat.by_key("lactate")
    assert cat.lookup("poc:lactate, istat") is lactate
    assert cat.lookup("  POC: LACTATE ,\n ISTAT ") is lactate  # names can hold newlines
    assert cat.lookup("hemoglobin  (hgb)") is cat.by_key("hemoglobin")
    assert cat.lookup("\tlactic   acid ") is lactate
    assert cat.lookup("UNOBTAINIUM") is None
    assert cat.lookup("") is None
    assert cat.lookup(float("nan")) is None  # type: ignore[arg-type]  # pandas empty cell


def test_by_key_unknown(cat: LabCatalog) -> None:
    with pytest.raises(UnknownLabError, match="did you mean potassium") as ei:
        cat.by_key("potasium")
    assert isinstance(ei.value, KeyError) and isinstance(ei.value, LabError)
    assert str(ei.value).startswith("unknown lab key 'potasium'")


def test_get_is_by_key_without_the_error(cat: LabCatalog) -> None:
    for lab in cat:
        assert cat.get(lab.key) is cat.by_key(lab.key) is lab
    assert cat.get("potasium") is None
    assert cat.get("ecgfounder_class_000", cat[0]) is cat[0]
    assert cat.get("Potassium") is None  # keys are exact; names go through lookup()


def test_reference_ranges_spot_checks(cat: LabCatalog) -> None:
    def rng(key: str) -> tuple[float | None, float | None, str]:
        lab = cat.by_key(key)
        return lab.low, lab.high, lab.unit

    k_low, k_high, k_unit = rng("potassium")
    assert k_low == 3.5 and k_high in (5.0, 5.1) and k_unit == "mmol/L"
    assert rng("sodium") in ((135, 145, "mmol/L"), (136, 145, "mmol/L"))
    assert rng("chloride")[2] == "mmol/L" and 95 <= rng("chloride")[0] <= 100
    assert rng("calcium")[2] == "mg/dL" and 8.4 <= rng("calcium")[0] <= 8.8
    assert rng("magnesium")[2] == "mg/dL" and 1.5 <= rng("magnesium")[0] <= 1.8
    assert rng("bnp") == (None, 100, "pg/mL")
    assert rng("platelets") == (150, 450, "K/uL")
    assert rng("wbc") == (4.0, 11.0, "K/uL")
    assert rng("inr")[1] is not None and 1.0 <= rng("inr")[1] <= 1.2
    assert rng("egfr") == (60, None, "mL/min/1.73m2")
    assert rng("lactate")[1] == 2.0 and rng("lactate")[2] == "mmol/L"
    assert rng("ph_arterial")[:2] == (7.35, 7.45)
    assert rng("d_dimer")[1] == 0.5
    # sex-specific ranges are combined and say so
    for key in ("hemoglobin", "hematocrit", "creatinine"):
        assert "sex-specific" in cat.by_key(key).note


def test_is_abnormal_directions(cat: LabCatalog) -> None:
    k = cat.by_key("potassium")  # both
    assert k.abnormal == "both"
    assert k.is_abnormal(3.4) and k.is_abnormal(5.6) and k.is_abnormal(6)
    assert not k.is_abnormal(3.5) and not k.is_abnormal(4.2) and not k.is_abnormal(k.high)

    bnp = cat.by_key("bnp")  # high only, one-sided range
    assert bnp.abnormal == "high" and bnp.low is None
    assert bnp.is_abnormal(100.1) and not bnp.is_abnormal(100) and not bnp.is_abnormal(0)

    alb = cat.by_key("albumin")  # low only (two-sided range, high side ignored)
    assert alb.abnormal == "low"
    assert alb.is_abnormal(2.9) and not alb.is_abnormal(3.5) and not alb.is_abnormal(7.0)

    egfr = cat.by_key("egfr")  # low only, one-sided range
    assert egfr.is_abnormal(45) and not egfr.is_abnormal(60) and not egfr.is_abnormal(120)


@pytest.mark.parametrize("bad", [None, float("nan"), float("inf"), "4.1", True])
def test_is_abnormal_rejects_missing(cat: LabCatalog, bad: object) -> None:
    with pytest.raises(LabError, match="'potassium': is_abnormal needs a finite number"):
        cat.by_key("potassium").is_abnormal(bad)  # type: ignore[arg-type]


def test_abnormal_label_with_censoring(cat: LabCatalog) -> None:
    k, egfr, trop = cat.by_key("potassium"), cat.by_key("egfr"), cat.by_key("troponin_i")
    lab = cat.by_key("lactate")
    p = parse_lab_value
    assert k.abnormal_label(p("6.1 (H)")) is True
    assert k.abnormal_label(p("4.0")) is False
    assert k.abnormal_label(p(">10.0")) is True  # above the high bound entirely
    assert k.abnormal_label(p("<1.5")) is True  # below the low bound entirely
    assert k.abnormal_label(p("<5.0")) is None  # could be low, normal
    assert k.abnormal_label(p("Canceled")) is None
    assert k.abnormal_label(p("")) is None
    assert egfr.abnormal_label(p(">60")) is False
    assert egfr.abnormal_label(p(">=60")) is False
    assert egfr.abnormal_label(p("<60")) is True  # strict: every allowed value < 60
    assert egfr.abnormal_label(p("<=60")) is None  # 60 itself is normal
    assert egfr.abnormal_label(p(">30")) is None
    assert trop.abnormal_label(p("<0.01")) is False
    assert trop.abnormal_label(p("<0.10")) is None  # straddles the 0.04 cutoff
    assert trop.abnormal_label(p(">50.00")) is True
    assert lab.abnormal_label(p(">=2.0")) is None  # 2.0 is normal, above is not
    assert lab.abnormal_label(p(">2.0")) is True


# --- validation of bad CSVs -----------------------------------------------------------

GOOD_ROWS = [
    ["potassium", "POTASSIUM", "K|POC:POTASSIUM, ISTAT", "Potassium", "mmol/L", "3.5",
     "5.0", "both", "electrolytes", "1", "literature", "ABIM", ""],
    ["bnp", "BNP", "", "BNP", "pg/mL", "", "100", "high", "cardiac", "0", "", "ABIM", ""],
]  # fmt: skip


def _write(path: Path, rows: list[list[str]], header: list[str] | None = None) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header if header is not None else CATALOG_COLUMNS)
        w.writerows(rows)
    return path


def _with(row: list[str], **changes: str) -> list[str]:
    out = list(row)
    for name, value in changes.items():
        out[CATALOG_COLUMNS.index(name)] = value
    return out


def test_load_good_file(tmp_path: Path) -> None:
    cat = load_catalog(_write(tmp_path / "ok.csv", GOOD_ROWS))
    assert cat.keys == ("potassium", "bnp")
    assert cat.lookup("poc:potassium, istat") is cat.by_key("potassium")
    assert cat.by_key("bnp").synonyms == ()
    assert cat.by_key("potassium").headline_basis == "literature"
    # an edited file is read again (cache keyed on mtime and size)
    path = _write(tmp_path / "ok.csv", GOOD_ROWS[:1])
    assert load_catalog(path).keys == ("potassium",)


@pytest.mark.parametrize(
    ("row", "match"),
    [
        (_with(GOOD_ROWS[1], abnormal="up"), r"field 'abnormal': expected one of low, high"),
        (_with(GOOD_ROWS[0], low="5.0", high="3.5"), r"field 'low': low 5 must be below high"),
        (_with(GOOD_ROWS[0], low="5.0", high="5.0"), r"field 'low': low 5 must be below high"),
        (_with(GOOD_ROWS[1], low="", high=""), r"field 'low': both bounds are missing"),
        (_with(GOOD_ROWS[1], high="1O0"), r"field 'high': expected a number or empty, got '1O0'"),
        (_with(GOOD_ROWS[1], high="nan"), r"field 'high': expected a finite number"),
        (_with(GOOD_ROWS[1], abnormal="low"), r"field 'low': abnormal direction 'low' needs a low"),
        (_with(GOOD_ROWS[1], group="cardio"), r"field 'group': expected one of"),
        (_with(GOOD_ROWS[1], key="BNP"), r"field 'key': expected a snake_case id"),
        (_with(GOOD_ROWS[1], unit=""), r"field 'unit': must not be empty"),
        (_with(GOOD_ROWS[1], headline="yes"), r"field 'headline': expected 0 or 1"),
        (_with(GOOD_ROWS[1], headline="1"), r"field 'headline_basis': a headline lab needs"),
        (_with(GOOD_ROWS[1], headline_basis="paper"), r"field 'headline_basis': must be empty"),
        (_with(GOOD_ROWS[1], synonyms="B-TYPE||NP"), r"field 'synonyms': empty name"),
    ],
)
def test_invalid_row_names_file_row_field(tmp_path: Path, row: list[str], match: str) -> None:
    path = _write(tmp_path / "bad.csv", [GOOD_ROWS[0], row])
    with pytest.raises(LabCatalogError, match=match) as ei:
        load_catalog(path)
    msg = str(ei.value)
    assert msg.startswith(f"{path.resolve()}: row 2 (line 3), field ")
    assert "\n" not in msg


def test_duplicate_key(tmp_path: Path) -> None:
    dup = _with(GOOD_ROWS[1], key="potassium", component_name="OTHER", synonyms="")
    path = _write(tmp_path / "dupkey.csv", [GOOD_ROWS[0], dup])
    with pytest.raises(LabCatalogError, match=r"row 2 .*field 'key': duplicate key 'potassium'"):
        load_catalog(path)


def test_duplicate_synonym_across_labs(tmp_path: Path) -> None:
    # same name after normalisation (case, spaces around ',' and ':')
    clash = _with(GOOD_ROWS[1], synonyms="NT|poc: potassium ,istat")
    path = _write(tmp_path / "dupsyn.csv", [GOOD_ROWS[0], clash])
    with pytest.raises(
        LabCatalogError,
        match=r"row 2 \(line 3\), field 'synonyms': name 'poc: potassium ,istat' is already "
        r"used by lab 'potassium' \(row 1\)",
    ):
        load_catalog(path)
    clash = _with(GOOD_ROWS[1], component_name="k")
    with pytest.raises(LabCatalogError, match=r"field 'component_name': name 'k' is already"):
        load_catalog(_write(tmp_path / "dupname.csv", [GOOD_ROWS[0], clash]))


def test_structural_errors(tmp_path: Path) -> None:
    with pytest.raises(LabCatalogError, match="lab catalog file not found"):
        load_catalog(tmp_path / "absent.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(LabCatalogError, match="file is empty"):
        load_catalog(tmp_path / "empty.csv")
    with pytest.raises(LabCatalogError, match="no lab rows"):
        load_catalog(_write(tmp_path / "header_only.csv", []))
    header = [c if c != "unit" else "units" for c in CATALOG_COLUMNS]
    with pytest.raises(LabCatalogError, match=r"unknown column\(s\) 'units'"):
        load_catalog(_write(tmp_path / "badcol.csv", GOOD_ROWS, header))
    header = [c for c in CATALOG_COLUMNS if c != "abnormal"]
    with pytest.raises(LabCatalogError, match=r"missing column\(s\) 'abnormal'"):
        load_catalog(_write(tmp_path / "nocol.csv", [r[:7] + r[8:] for r in GOOD_ROWS], header))
    short = GOOD_ROWS[1][:-1]
    with pytest.raises(LabCatalogError, match=r"row 2 \(line 3\): expected 13 fields, got 12"):
        load_catalog(_write(tmp_path / "short.csv", [GOOD_ROWS[0], short]))
    (tmp_path / "latin1.csv").write_bytes((",".join(CATALOG_COLUMNS) + "\n").encode() + b"k,\xe9\n")
    with pytest.raises(LabCatalogError, match="not UTF-8"):
        load_catalog(tmp_path / "latin1.csv")


def test_optional_columns_may_be_absent(tmp_path: Path) -> None:
    header = [c for c in CATALOG_COLUMNS if c not in ("note", "headline_basis")]
    rows = [_with(GOOD_ROWS[1])[:10] + [GOOD_ROWS[1][11]]]
    cat = load_catalog(_write(tmp_path / "minimal.csv", rows, header))
    assert cat.by_key("bnp").note == "" and cat.by_key("bnp").high == 100


def test_catalog_constructor_rejects_duplicates() -> None:
    lab = load_catalog()[0]
    with pytest.raises(LabCatalogError, match="duplicate key"):
        LabCatalog([lab, lab])


# --- parse_lab_value ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4.1", ParsedLabValue(4.1)),
        (">10.0", ParsedLabValue(10.0, censored=">")),
        ("<0.1", ParsedLabValue(0.1, censored="<")),
        ("Canceled", ParsedLabValue(None, status="canceled")),
        ("CANCELLED", ParsedLabValue(None, status="canceled")),
        ("Test canceled by lab", ParsedLabValue(None, status="canceled")),
        ("12.3 (H)", ParsedLabValue(12.3, flag="H")),
        ("2.9 (L)", ParsedLabValue(2.9, flag="L")),
        ("7.0(HH)", ParsedLabValue(7.0, flag="HH")),
        ("1.9 (LL)", ParsedLabValue(1.9, flag="LL")),
        ("6.2 H", ParsedLabValue(6.2, flag="H")),
        ("13 (a)", ParsedLabValue(13.0, flag="A")),
        (" 7 ", ParsedLabValue(7.0)),
        ("1,234", ParsedLabValue(1234.0)),
        ("12,345.6", ParsedLabValue(12345.6)),
        ("See comment", ParsedLabValue(None, status="non_numeric")),
        ("", ParsedLabValue(None, status="empty")),
        ("   \n", ParsedLabValue(None, status="empty")),
        ("Positive", ParsedLabValue(None, status="non_numeric")),
        ("Positive (A)", ParsedLabValue(None, flag="A", status="non_numeric")),
        ("<=5", ParsedLabValue(5.0, censored="<", inclusive=True)),
        (">=90", ParsedLabValue(90.0, censored=">", inclusive=True)),
        ("> 60", ParsedLabValue(60.0, censored=">")),
        ("<0.01 (L)", ParsedLabValue(0.01, censored="<", flag="L")),
        ("-3.2", ParsedLabValue(-3.2)),
        (".5", ParsedLabValue(0.5)),
        ("5.6%", ParsedLabValue(5.6)),
        ("1,5", ParsedLabValue(None, status="non_numeric")),  # decimal comma: ambiguous
        ("3-5", ParsedLabValue(None, status="non_numeric")),  # urine sediment range
        ("5L", ParsedLabValue(None, status="non_numeric")),
        ("NaN", ParsedLabValue(None, status="non_numeric")),
        ("inf", ParsedLabValue(None, status="non_numeric")),
        (None, ParsedLabValue(None, status="empty")),
        (float("nan"), ParsedLabValue(None, status="empty")),
        (4, ParsedLabValue(4.0)),
        (4.5, ParsedLabValue(4.5)),
    ],
)
def test_parse_lab_value(text: object, expected: ParsedLabValue) -> None:
    got = parse_lab_value(text)  # type: ignore[arg-type]
    assert got == expected
    assert got.ok == (got.status == "ok")
    if got.value is not None:
        assert math.isfinite(got.value)
    else:
        assert got.status != "ok"


def test_parse_lab_value_rejects_other_types() -> None:
    with pytest.raises(TypeError, match="expects a string or number"):
        parse_lab_value(True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expects a string or number"):
        parse_lab_value(["4.1"])  # type: ignore[arg-type]
