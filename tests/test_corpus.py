"""Corpus builder on synthetic MC-MED cohorts: index, targets, splits, skips, resume, Dataset."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from anyecg_edge.training.data import mcmed
from anyecg_edge.training.data.corpus import (
    INDEX_COLUMNS,
    CorpusError,
    build_corpus,
    lab_columns,
    parse_duration_s,
)
from anyecg_edge.training.data.synth import synth_cohort
from tty_stderr import run_with_tty_stderr

from anyecg_edge.labs import load_catalog, parse_lab_value
from anyecg_edge.signal import preprocess
from anyecg_edge.signal.quality import MIN_BEAT_PROMINENCE

BUILD = {"visits_per_unit": 4, "progress": False}


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _corpus_bytes(out) -> dict[str, str]:
    files = {"index.parquet": _digest(out / "index.parquet")}
    for p in sorted((out / "shards").glob("*.npy")):
        files[f"shards/{p.name}"] = _digest(p)
    return files


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("mcmed")
    truth = synth_cohort(root, 110, seed=3, segment_s=(30.0, 60.0))
    return root, truth


@pytest.fixture(scope="module")
def built(cohort, tmp_path_factory):
    root, truth = cohort
    out = tmp_path_factory.mktemp("corpus")
    manifest = build_corpus(root, out, workers=2, **BUILD)
    return out, manifest


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    synth_cohort(root, 36, seed=8, segment_s=(40.0, 60.0), defects=False)
    return root


# ----------------------------------------------------------------------------- build


def test_index_columns_types_and_shards(built):
    out, manifest = built
    df = pd.read_parquet(out / "index.parquet")
    keys = list(load_catalog().keys)
    assert list(df.columns) == list(INDEX_COLUMNS) + lab_columns(keys)
    assert len(df) == manifest["counts"]["windows"] > 500
    assert df["segment_id"].tolist() == list(range(len(df)))
    assert df["start_time"].dtype == np.dtype("datetime64[ms]")
    # quality = the gate's beat prominence; kept windows passed the gate.
    assert df["quality_ok"].all() and (df["quality"] >= MIN_BEAT_PROMINENCE).all()
    for k in keys:
        v = df[k].dropna()
        assert set(v.unique()) <= {0.0, 1.0}
        assert df[f"{k}_value"].isna().equals(df[k].isna())
    assert df[keys].notna().any(axis=1).all()  # every window has at least one target
    # Shards: float16, memory-mappable, each window z-scored.
    assert sorted(df["shard"].unique()) == sorted(s.split("/")[1] for s in manifest["shards"])
    for name, rows in df.groupby("shard"):
        arr = np.load(out / "shards" / name, mmap_mode="r")
        assert arr.dtype == np.float16 and arr.shape == (len(rows), 5000)
        assert sorted(rows["offset"]) == list(range(len(rows)))
    arr = np.load(out / "shards" / df["shard"].iat[0], mmap_mode="r").astype(np.float32)
    assert np.allclose(arr.mean(axis=1), 0, atol=1e-2) and np.allclose(
        arr.std(axis=1), 1, atol=1e-2
    )


def test_window_is_the_preprocessed_raw_segment(cohort, built):
    root, _ = cohort
    out, _ = built
    df = pd.read_parquet(out / "index.parquet")
    for i in (0, len(df) // 2, len(df) - 1):
        row = df.iloc[i]
        csn, seg = row["record"].rsplit("/", 1)[1].split("_")
        (info,) = [s for s in mcmed.list_segments(root, csn)[0] if s.seg == int(seg)]
        x = mcmed.read_segment(info)[row["sample_offset"] : row["sample_offset"] + 5000]
        want = preprocess(x, 500.0).astype(np.float16)
        got = np.load(out / "shards" / row["shard"], mmap_mode="r")[row["offset"]]
        np.testing.assert_array_equal(got, want)
        step = np.timedelta64(int(row["sample_offset"]) * 2, "ms")  # 2 ms per sample
        assert row["start_time"] == pd.Timestamp(info.start + step)


def test_splits_are_by_patient_and_follow_the_split_files(cohort, built):
    root, _ = cohort
    out, manifest = built
    df = pd.read_parquet(out / "index.parquet", columns=["csn", "mrn", "split"])
    assert df.groupby("mrn")["split"].nunique().max() == 1
    files = mcmed.read_splits(root, "random")
    assert (df["csn"].map(files) == df["split"]).all()
    assert manifest["splits"]["source"] == "split_random_*.csv"
    assert sum(manifest["splits"][s]["windows"] for s in ("train", "val", "test")) == len(df)
    assert manifest["splits"]["test"]["windows"] > 0


def test_bad_records_and_canceled_labs_are_reported(cohort, built):
    _, truth = cohort
    _, manifest = built
    skipped = manifest["skipped_records"]
    assert skipped["by_reason"] == {"truncated or short data file": 1, "wrong fs": 1}
    reported = {r["record"]: r["reason"] for r in skipped["records"]}
    want = {"truncated_dat": "truncated or short data file", "wrong_fs": "wrong fs"}
    assert reported == {d["record"]: want[d["kind"]] for d in truth["defects"]}
    assert manifest["labs_csv"]["skipped"]["canceled"] == truth["n_canceled"] > 0
    assert manifest["labs_csv"]["rows"] == truth["n_lab_rows"]
    prev = manifest["prevalence"]["potassium"]
    assert prev["n_measured"] > 0 and 0 < prev["prevalence"] < 1
    # A rejected window can fail for several reasons at once.
    rejected = manifest["counts"]["windows_rejected"]
    assert 0 < rejected <= sum(manifest["quality_rejections"].values())
    assert manifest["code_version"]["anyecg_edge"]
    assert manifest["config"]["policy"] == "order"


def test_dates_past_2262_survive_into_the_index(built):
    out, _ = built
    t = pd.read_parquet(out / "index.parquet", columns=["start_time"])["start_time"]
    years = t.to_numpy().astype("datetime64[Y]").astype(int) + 1970
    assert years.min() < 2262 < years.max() <= 2295


# ----------------------------------------------------------------------------- targets


def _write_labs(root, rows):
    header = [
        "CSN", "Order_time", "Result_time", "Display_name", "Abnormal", "Component_name",
        "Component_result", "Component_value", "Component_units", "Component_abnormal",
        "Component_nml_low", "Component_nml_high",
    ]  # fmt: skip
    with open(root / "labs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for csn, order, result, name, value in rows:
            w.writerow([csn, order, result, "P", "N", name, value, value, "", "", "", ""])


def _ts(t: np.datetime64) -> str:
    return "" if t is None else str(t.astype("datetime64[s]")).replace("T", " ")


def _oracle(csn, t_ms, rows, window_s, before_s, after_s, policy):
    """Expected {lab_key: (abnormal, value)} for a window starting at t_ms (brute force)."""
    catalog = load_catalog()
    best = {}
    for row_csn, order, result, name, value in rows:
        if row_csn != csn:
            continue
        lab = catalog.lookup(name)
        pv = parse_lab_value(value)
        if lab is None or not pv.ok or order is None:
            continue
        label = lab.abnormal_label(pv)
        if label is None:
            continue
        o = int(order.astype("datetime64[ms]").astype(np.int64))
        if policy == "order":
            if result is None:
                continue
            r = int(result.astype("datetime64[ms]").astype(np.int64))
            if not (
                o - before_s * 1000 <= t_ms and t_ms + window_s * 1000 <= min(o + after_s * 1000, r)
            ):
                continue
        rank = (abs(t_ms - o), o)
        if lab.key not in best or rank < best[lab.key][0]:
            best[lab.key] = (rank, (float(label), pv.value))
    return {k: v[1] for k, v in best.items()}


def test_targets_match_hand_made_lab_rows(small, tmp_path):
    root = tmp_path / "m"
    shutil.copytree(small, root, symlinks=True)
    visits = mcmed.read_visits(root)
    csn = next(c for c in visits["CSN"] if mcmed.list_segments(root, c)[0])
    segs, _ = mcmed.list_segments(root, csn)
    s1, s2 = (s.start.astype("datetime64[s]") for s in segs[:2])
    sec = np.timedelta64(1, "s")
    rows = [
        (csn, s1 + 60 * sec, s1 + 2460 * sec, "POTASSIUM", "5.8"),
        (csn, s1 + 100 * sec, s1 + 1900 * sec, "POTASSIUM", "3.9"),
        (csn, s2 - 100 * sec, s2 + 55 * sec, "CALCIUM", "8.0 (L)"),  # result cuts seg 2
        (csn, s1, s1 + 600 * sec, "SODIUM", "Canceled"),
        (csn, s1, s1 + 600 * sec, "TROPONIN I", "<0.01"),
        (csn, s1, s1 + 600 * sec, "HEMOGLOBIN", "7.9 (L)"),  # synonym
        (csn, s1, s1 + 600 * sec, "GLUCOSE", ">600"),
        (csn, s1, None, "ALBUMIN", "2.1"),  # no result time: unusable for 'order'
        (csn, s1 + 5 * 3600 * sec, s1 + 6 * 3600 * sec, "CHLORIDE", "90"),  # far later
        ("424242", s1, s1 + 600 * sec, "SODIUM", "140"),  # CSN not in visits.csv
    ]
    _write_labs(root, [(c, _ts(o), _ts(r), n, v) for c, o, r, n, v in rows])
    for policy in ("order", "visit"):
        out = tmp_path / policy
        m = build_corpus(root, out, policy=policy, **BUILD)
        df = pd.read_parquet(out / "index.parquet")
        assert set(df["csn"]) == {csn}
        assert m["labs_csv"]["skipped"]["canceled"] == 1
        assert m["skipped_visits_and_rows"]["lab row of a CSN not in visits.csv"] == 1
        n_cand = m["counts"]["candidate_windows_by_policy"][policy]
        assert len(df) + m["counts"]["windows_rejected"] == n_cand >= 8
        keys = list(load_catalog().keys)
        for _, row in df.iterrows():
            t_ms = int(row["start_time"].to_datetime64().astype("datetime64[ms]").astype(np.int64))
            want = _oracle(row["csn"], t_ms, rows, 10.0, 1800.0, 900.0, policy)
            got = {k: (row[k], row[f"{k}_value"]) for k in keys if not np.isnan(row[k])}
            assert got.keys() == want.keys(), (row["start_time"], got, want)
            for k, (a, v) in want.items():
                assert got[k][0] == a and got[k][1] == pytest.approx(v, rel=1e-6)
        if policy == "order":
            assert m["skipped_visits_and_rows"]["lab row without Result_time (order policy)"] == 1
            t = df["start_time"].to_numpy()
            cut = pd.Timestamp(s2 + 45 * sec).to_datetime64()
            assert df.loc[t <= cut, "calcium"].notna().all()
            assert (
                df.loc[(t > cut) & (t >= pd.Timestamp(s2).to_datetime64()), "calcium"].isna().all()
            )
            assert "chloride" not in m["prevalence"]
            assert "albumin" not in m["prevalence"]
            first = df.iloc[0]
            assert first["troponin_i"] == 0.0 and first["troponin_i_value"] == pytest.approx(0.01)
            assert first["glucose"] == 1.0 and first["hemoglobin"] == 1.0
        else:
            assert df["chloride"].notna().all() and df["albumin"].notna().all()


def test_seeded_patient_split_without_split_files(small, tmp_path):
    root = tmp_path / "m"
    shutil.copytree(small, root, symlinks=True)
    for p in root.glob("split_*.csv"):
        p.unlink()
    a = build_corpus(root, tmp_path / "a", seed=5, **BUILD)
    build_corpus(root, tmp_path / "b", seed=5, **BUILD)
    assert a["splits"]["source"].startswith("seeded MRN split")
    df = pd.read_parquet(tmp_path / "a" / "index.parquet")
    assert df.groupby("mrn")["split"].nunique().max() == 1
    assert set(df["split"]) <= {"train", "val", "test"} and df["split"].nunique() >= 2
    assert _corpus_bytes(tmp_path / "a") == _corpus_bytes(tmp_path / "b")


def test_chrono_split_conflicts_are_dropped_not_leaked(small, tmp_path):
    files = mcmed.read_splits(small, "chrono")
    visits = mcmed.read_visits(small)
    prio = {"train": 0, "val": 1, "test": 2}
    patient = visits.assign(s=visits["CSN"].map(files).map(prio)).groupby("MRN")["s"].max()
    conflicts = int((visits["CSN"].map(files).map(prio) != visits["MRN"].map(patient)).sum())
    m = build_corpus(small, tmp_path / "c", split_scheme="chrono", **BUILD)
    assert m["counts"]["split_conflicts_dropped"] == conflicts
    df = pd.read_parquet(tmp_path / "c" / "index.parquet")
    assert df.groupby("mrn")["split"].nunique().max() == 1


# ----------------------------------------------------------------------------- resume


def test_killed_build_resumes_to_the_identical_corpus(cohort, built, tmp_path):
    root, _ = cohort
    ref, ref_manifest = built  # uninterrupted, workers=2
    out = tmp_path / "killed"
    code = (
        "from anyecg_edge.training.data.corpus import build_corpus\n"
        f"build_corpus({str(root)!r}, {str(out)!r}, workers=1, visits_per_unit=4, progress=False)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    done = out / "done"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if done.is_dir() and len(list(done.glob("*.json"))) >= 3:
                break
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # our own child's process group
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the build finished before it could be killed"
    n_done = len(list(done.glob("*.json")))
    n_units = ref_manifest["run"]["units_total"]
    assert 3 <= n_done < n_units and not (out / "index.parquet").exists()
    m = build_corpus(root, out, workers=1, **BUILD)
    assert m["run"]["units_resumed"] == n_done and m["run"]["units_built"] == n_units - n_done
    assert _corpus_bytes(out) == _corpus_bytes(ref)
    assert not list(out.rglob("*.tmp"))
    pd.testing.assert_frame_equal(
        pd.read_parquet(out / "index.parquet"), pd.read_parquet(ref / "index.parquet")
    )
    strip = {"run", "code_version"}
    assert {k: v for k, v in m.items() if k not in strip} == {
        k: v for k, v in ref_manifest.items() if k not in strip
    }
    # A finished corpus: nothing is rebuilt, same bytes; other settings are refused.
    again = build_corpus(root, out, **BUILD)
    assert again["run"]["units_built"] == 0 and _corpus_bytes(out) == _corpus_bytes(ref)
    # The first setting that differs is named with both values (it was the whole config
    # dict, cut at 500 characters before the new value; stride follows the window).
    with pytest.raises(
        CorpusError, match=r"other settings or inputs \(config.stride_s: 10.0 -> 5.0\); use a new"
    ):
        build_corpus(root, out, window_s=5.0, **BUILD)


def test_keep_rejected_and_overlapping_stride(small, tmp_path):
    root = tmp_path / "m"
    shutil.copytree(small, root, symlinks=True)
    base = build_corpus(root, tmp_path / "base", **BUILD)
    # A 2 s run of WFDB-invalid samples (NaN) inside the first kept window: the gate
    # rejects it; with keep_rejected it cannot be preprocessed either and is counted.
    first = pd.read_parquet(tmp_path / "base" / "index.parquet").iloc[0]
    dat = root / (first["record"] + ".dat")
    d = np.fromfile(dat, dtype="<i2")
    d[first["sample_offset"] + 1000 : first["sample_offset"] + 2000] = -32768
    d.tofile(dat)
    kept = build_corpus(root, tmp_path / "kept", keep_rejected=True, stride_s=5.0, **BUILD)
    assert kept["counts"]["windows_unpreprocessable"] >= 1
    assert kept["quality_rejections"]["nan_run"] >= 1
    c0, c1 = base["counts"], kept["counts"]
    # Half the hop: about twice the candidate windows (a segment loses at most one).
    n0 = c0["candidate_windows_by_policy"]["order"]
    assert 2 * n0 - 2 * c0["segments_read"] <= c1["candidate_windows_by_policy"]["order"]
    n_bad = c1["windows_unpreprocessable"]
    assert c1["windows"] + n_bad == c1["candidate_windows_by_policy"]["order"]
    assert c1["windows_rejected"] > n_bad
    df = pd.read_parquet(tmp_path / "kept" / "index.parquet")
    assert (~df["quality_ok"]).sum() == c1["windows_rejected"] - n_bad
    assert (np.diff(df["sample_offset"].to_numpy()) % 2500 == 0).all()
    pytest.importorskip("torch")
    from anyecg_edge.training.data.dataset import CorpusDataset

    assert len(CorpusDataset(tmp_path / "kept", None)) == int(df["quality_ok"].sum())
    assert len(CorpusDataset(tmp_path / "kept", None, quality_ok_only=False)) == len(df)


def test_batching_does_not_change_the_corpus(small, tmp_path, monkeypatch):
    # Windows are gated/preprocessed in batches spanning segments and visits; the corpus
    # must not depend on where the batches cut (incl. the keep_rejected fallback for a
    # window that cannot be preprocessed, and overlapping windows).
    from anyecg_edge.training.data import corpus_unit

    root = tmp_path / "m"
    shutil.copytree(small, root, symlinks=True)
    for dat in sorted(root.glob("waveforms/*/*/II/*.dat"))[::3]:
        d = np.fromfile(dat, dtype="<i2")
        d[1000:2500] = -32768  # 3 s of WFDB-invalid samples: no window over it preprocesses
        d.tofile(dat)
    kw = dict(keep_rejected=True, stride_s=5.0, **BUILD)
    ref = build_corpus(root, tmp_path / "ref", **kw)
    assert ref["counts"]["windows_unpreprocessable"] >= 1
    for size in (1, 7):
        monkeypatch.setattr(corpus_unit, "_WINDOWS_PER_BATCH", size)
        got = build_corpus(root, tmp_path / f"b{size}", **kw)
        assert got["counts"] == ref["counts"]
        assert _corpus_bytes(tmp_path / f"b{size}") == _corpus_bytes(tmp_path / "ref")


def test_bad_options(tmp_path, small):
    with pytest.raises(CorpusError, match="policy must be"):
        build_corpus(small, tmp_path / "x", policy="nearest", **BUILD)
    with pytest.raises(CorpusError, match="MC-MED folder not found"):
        build_corpus(tmp_path / "nope", tmp_path / "x", **BUILD)
    assert parse_duration_s("30m") == 1800 and parse_duration_s("1h") == 3600
    assert parse_duration_s("90s") == 90 and parse_duration_s(15) == 15
    with pytest.raises(CorpusError, match="duration 'soon'"):
        parse_duration_s("soon")


# ----------------------------------------------------------------------------- dataset


def test_dataset_streams_shards_with_masks(built):
    torch = pytest.importorskip("torch")
    from anyecg_edge.training.data.dataset import (
        CorpusDataset,
        ShardAwareSampler,
        corpus_lab_keys,
        make_dataloader,
    )

    out, manifest = built
    df = pd.read_parquet(out / "index.parquet")
    labs = corpus_lab_keys(out)
    assert labs == [k for k in load_catalog().keys if k in manifest["prevalence"]]
    ds = CorpusDataset(out, "train")
    train = df[df["split"] == "train"].reset_index(drop=True)
    assert len(ds) == len(train) and ds.labs == labs
    for i in (0, len(ds) - 1):
        x, y, mask = ds[i]
        assert x.shape == (1, 5000) and x.dtype == torch.float32
        row = train.iloc[i]
        want = np.load(out / "shards" / row["shard"], mmap_mode="r")[row["offset"]]
        np.testing.assert_array_equal(x.numpy()[0], want.astype(np.float32))
        t = row[labs].to_numpy(dtype=float)
        np.testing.assert_array_equal(mask.numpy(), np.isfinite(t).astype(np.float32))
        np.testing.assert_array_equal(y.numpy(), np.nan_to_num(t).astype(np.float32))
    assert not ds._maps or len(ds._maps) <= len(ds.shard_names)  # opened lazily
    # pool_rows=1: a pool is one shard -> rows come one shard at a time.
    s = ShardAwareSampler(ds, seed=1, pool_rows=1)
    order = list(s)
    assert sorted(order) == list(range(len(ds)))
    codes = ds.shard_code[order]
    assert (np.diff(codes) != 0).sum() == len(ds.shard_names) - 1  # one run per shard
    s.set_epoch(1)
    assert list(s) != order
    # Default pools hold >= POOL_ROWS rows: here the whole split is one pool, so shards mix
    # within a batch (small shards hold few visits; one-shard batches stalled training).
    mixed = np.array(list(ShardAwareSampler(ds, seed=1)))
    assert sorted(mixed.tolist()) == list(range(len(ds)))
    assert len(np.unique(ds.shard_code[mixed[:16]])) > 1
    # Pools of ~half the rows: every row of the first pool precedes every row of the second.
    half = ShardAwareSampler(ds, seed=1, pool_rows=len(ds) // 2)
    first = np.array(list(half))
    pool_codes = [set(ds.shard_code[first[: len(first) // 3]])]
    assert pool_codes[0].isdisjoint(set(ds.shard_code[first[-len(first) // 3 :]]))
    dl = make_dataloader(out, "val", batch_size=16, num_workers=2, seed=0)
    n = 0
    for xb, yb, mb in dl:
        assert xb.shape[1:] == (1, 5000) and yb.shape == mb.shape
        assert torch.all(yb[mb == 0] == 0)
        n += xb.shape[0]
    assert n == (df["split"] == "val").sum()
    with pytest.raises(CorpusError, match="not in this corpus"):
        CorpusDataset(out, "train", labs=["unobtainium"])


def test_manifest_is_json_with_counts(built):
    out, manifest = built
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest
    assert set(manifest["counts"]["candidate_windows_by_policy"]) == {"order", "visit"}
    c = manifest["counts"]["candidate_windows_by_policy"]
    assert c["visit"] >= c["order"] > 0


def _cli_build(root, out) -> str:
    from click.testing import CliRunner

    from anyecg_edge.cli import cli

    args = ["data", "build", "--mcmed", str(root), "--out", str(out), "--no-progress"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    return r.output


def test_cli_build_summary_counts(tmp_path):
    # A clean cohort where the gate rejects no window and no record is skipped: the
    # summary still prints (zero counters are in the manifest) and claims no skips.
    clean = tmp_path / "clean"
    synth_cohort(clean, 6, seed=2, segments_per_visit=(1, 1), segment_s=(30.0, 40.0), defects=False)
    out = _cli_build(clean, tmp_path / "clean_corpus")
    counts = json.loads((tmp_path / "clean_corpus" / "manifest.json").read_text())["counts"]
    assert counts["windows_rejected"] == 0 and counts["visits_with_windows"] > 0
    assert f"{counts['windows']} windows from {counts['visits_with_windows']} visits" in out
    assert "(0 rejected by the quality gate)" in out
    assert "skipped" not in out
    # With the two planted defects plus one more truncated .dat: 3 records over 2 reasons.
    bad = tmp_path / "bad"
    truth = synth_cohort(bad, 6, seed=2, segments_per_visit=(1, 1), segment_s=(30.0, 40.0))
    defect = {d["kind"]: d["record"] for d in truth["defects"]}
    other = bad / (defect["truncated_dat"].rsplit("_", 1)[0] + "_1.dat")
    assert other.is_file() and str(other.relative_to(bad))[:-4] not in defect.values()
    other.write_bytes(other.read_bytes()[:1000])
    out = _cli_build(bad, tmp_path / "bad_corpus")
    skipped = json.loads((tmp_path / "bad_corpus" / "manifest.json").read_text())["skipped_records"]
    assert skipped["by_reason"] == {"truncated or short data file": 2, "wrong fs": 1}
    assert "  3 records skipped (reasons in " in out


# ----------------------------------------------------------------------------- benchmark


def test_bench_corpus_smoke(tmp_path, capsys):
    # Tiny cohorts, a few seconds: the benchmark still runs end to end and reports.
    from anyecg_edge.benchmarks.bench_corpus import main

    summary = main(
        ["--sizes", "3", "6", "--out", str(tmp_path), "--json", str(tmp_path / "b.json")]
    )
    out = capsys.readouterr().out
    for line in (
        "seg/s/core",
        "extrapolated time for 20 M segments",
        "goal >= 1000",
        "peak memory",
    ):
        assert line in out
    res = json.loads((tmp_path / "b.json").read_text())
    assert res["per_core"] == summary["per_core"] > 0
    assert [r["visits"] for r in res["results"]] == [3, 6]
    for r in res["results"]:
        assert r["windows"] > 0 and r["segments_read"] > 0 and r["peak_main_mb"] > 0
        assert 0 < r["unit_s"] <= r["wall_s"] and r["cpu_s"] > 0 and r["per_cpu_s"] > 0
        assert r["per_core_end_to_end"] == pytest.approx(r["windows"] / r["wall_s"])
        # It timed a real build: the corpus it leaves has those windows.
        idx = pd.read_parquet(tmp_path / f"corpus_{r['visits']}_w1" / "index.parquet")
        assert len(idx) == r["windows"]


def test_bench_corpus_peak_is_the_build_not_the_parent(tmp_path):
    # ru_maxrss survives fork+exec on Linux: a parent holding 1.5 GB made the measuring
    # subprocess report >= 1.5 GB for a tiny build. VmHWM is the build's own peak.
    from anyecg_edge.benchmarks.bench_corpus import _measure

    ballast = np.ones(1536 * 2**20 // 8)  # touched: resident in this process
    synth_cohort(tmp_path / "c", 3, seed=1, segment_s=(30.0, 40.0), defects=False)
    r = _measure(tmp_path / "c", tmp_path / "o", 1)
    assert ballast[-1] == 1.0
    assert 0 < r["peak_main_mb"] == r["peak_tree_mb"] < 1024


# ----------------------------------------------------------------------------- progress


def test_progress_bar_counts_units_and_windows_on_a_terminal(tmp_path):
    """build_corpus' bar is anyecg_edge.progress' (drawn on a terminal stderr): units done
    of all, resumed ones included, and the windows written; stdout stays clean."""
    root = tmp_path / "mcmed"
    synth_cohort(root, 8, seed=5, segments_per_visit=(1, 1), segment_s=(20.0, 30.0))
    out = tmp_path / "corpus"
    build_corpus(root, out, workers=1, visits_per_unit=2, progress=False)
    resumed_marker = out / "done" / "u000000.json"
    windows_resumed = json.loads(resumed_marker.read_text())["counts"]["windows"]
    for p in (out / "done").glob("*.json"):
        if p != resumed_marker:
            p.unlink()  # units 1.. are built again, unit 0 is resumed
    code = (
        "from anyecg_edge.training.data.corpus import build_corpus\n"
        f"build_corpus({str(root)!r}, {str(out)!r}, workers=1, visits_per_unit=2)\n"
        "print('done')\n"
    )
    proc, drawn = run_with_tty_stderr(code, timeout_s=120)
    assert proc.returncode == 0 and proc.stdout == b"done\n"
    manifest = json.loads((out / "manifest.json").read_text())
    n_units = manifest["run"]["units_total"]
    assert manifest["run"]["units_resumed"] == 1 and n_units >= 2
    built_windows = manifest["counts"]["windows"] - windows_resumed
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn)  # colours
    assert "corpus" in text and "ETA" in text
    assert f"{n_units}/{n_units} units  {built_windows} windows" in text
    assert f"1/{n_units} units  0 windows" in text  # the resumed unit counted from the start
    assert f"0/{n_units}" not in text
