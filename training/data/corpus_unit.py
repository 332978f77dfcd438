"""The corpus build's worker side: one work unit (a run of visits) cut into windows, gated,
preprocessed and written as shards, an index part and a done marker. `corpus.build_corpus`
runs `_process_unit` in a process pool set up by `_worker_init`.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from anyecg_edge.training.data.corpus_spec import (
    _MAX_LISTED_SKIPS,
    CorpusConfig,
    _atomic_save_npy,
    _atomic_write_json,
    _candidates,
    _select_labels,
    _unit_name,
)
from anyecg_edge.training.data.mcmed import MCMEDError, check_segment, list_segments, read_segment
from numpy.lib.stride_tricks import sliding_window_view

# Windows gated and preprocessed together (across segments and visits, in order): full
# gate blocks and few calls, while the chain's float64 temporaries stay small
# (64 x 5000 x 8 B = 2.6 MB each) whatever the segment length.
_WINDOWS_PER_BATCH = 64

_WORKER: dict[str, Any] = {}


def _worker_init(cfg_dict: dict, mcmed_dir: str, out_dir: str) -> None:
    cfg = dict(cfg_dict)
    cfg["lab_keys"] = tuple(cfg["lab_keys"])
    _WORKER.update(
        cfg=CorpusConfig(**cfg),
        mcmed_dir=mcmed_dir,
        out_dir=Path(out_dir),
        order_cfg=CorpusConfig(**{**cfg, "policy": "order"}),
    )


def _classify(msg: str) -> str:
    low = msg.lower()
    if "expected" in low and " fs " in f" {low}" and "hz" in low:
        return "wrong fs"
    if "truncat" in low or "samples were not loaded" in low or "header says" in low:
        return "truncated or short data file"
    if "not found" in low or "no such file" in low:
        return "missing file"
    if "header" in low or "record line" in low or "base" in low:
        return "bad header"
    return "unreadable record"


_INDEX_LIST_COLUMNS = (
    "csn", "mrn", "split", "start_ms", "quality", "quality_ok", "hr", "record", "sample_offset",
)  # fmt: skip


class _Unit:
    """One work unit being built: the windows queued for the quality gate, the kept ones
    buffered into shards, their index columns, and the unit's counters. `_process_unit`
    feeds it visit by visit; `finish` writes the part file and the done marker."""

    def __init__(self, unit: int, cfg: CorpusConfig, root: Path, out: Path) -> None:
        self.unit = unit
        self.cfg = cfg
        self.root = root
        self.out = out
        self.name = _unit_name(unit)
        self.n_labs = len(cfg.lab_keys)
        self.t0 = time.perf_counter()
        # Counters the summaries read are always in the manifest, zero included.
        self.counts: Counter = Counter(windows_rejected=0, segments_read=0)
        self.rejected: Counter = Counter()
        self.skipped: Counter = Counter()
        self.skipped_list: list[dict[str, str]] = []
        self.cand = {"order": 0, "visit": 0}
        self.cols: dict[str, list] = {c: [] for c in _INDEX_LIST_COLUMNS}
        self.abn_parts: list[np.ndarray] = []
        self.val_parts: list[np.ndarray] = []
        self.buf: list[np.ndarray] = []
        self.buffered = 0
        self.shard_files: list[str] = []
        self.pending: list[tuple] = []  # queued windows: (csn, mrn, split, record, raw, ...)
        self.n_pending = 0
        self.pending_fs = 0.0
        self.visits_with_windows: set[str] = set()

    # --- shards and skips -------------------------------------------------------------------
    def flush(self, final: bool) -> None:
        cfg = self.cfg
        while self.buffered >= cfg.shard_size or (final and self.buffered > 0):
            arr = np.concatenate(self.buf, axis=0) if len(self.buf) > 1 else self.buf[0]
            take = min(cfg.shard_size, arr.shape[0])
            fname = f"{self.name}_{len(self.shard_files):03d}.npy"
            _atomic_save_npy(self.out / "shards" / fname, np.ascontiguousarray(arr[:take]))
            self.shard_files.append(fname)
            rest = arr[take:]
            self.buf = [rest] if rest.shape[0] else []
            self.buffered = rest.shape[0]

    def skip(self, record: str, reason_kind: str, message: str) -> None:
        self.skipped[reason_kind] += 1
        if len(self.skipped_list) < _MAX_LISTED_SKIPS:
            self.skipped_list.append({"record": record, "reason": reason_kind, "detail": message})

    # --- the quality gate and preprocessing, in batches ----------------------------------------
    def _preprocess(self, w64: np.ndarray, take: np.ndarray, fs: float):
        """(preprocessed windows or None, the rows of ``take`` they are)."""
        from anyecg_edge.signal import SignalError, preprocess

        cfg = self.cfg
        try:
            return preprocess(w64[take], fs, mains_hz=cfg.mains_hz, target_fs=cfg.target_fs), take
        except SignalError:
            # Only reachable with keep_rejected (a long NaN gap passes no gate):
            # keep the windows that can be preprocessed, count the others.
            good, zs = [], []
            for t in take.tolist():
                try:
                    zs.append(
                        preprocess(w64[t], fs, mains_hz=cfg.mains_hz, target_fs=cfg.target_fs)
                    )
                    good.append(t)
                except SignalError:
                    self.counts["windows_unpreprocessable"] += 1
            return (np.stack(zs) if zs else None), np.asarray(good, dtype=np.int64)

    def run_pending(self) -> None:
        """Gate and preprocess the queued windows; append the kept ones in queue order."""
        from anyecg_edge.signal import assess_quality_batch

        if not self.pending:
            return
        fs = self.pending_fs
        w64 = np.concatenate([item[4] for item in self.pending]).astype(np.float64)
        reports = assess_quality_batch(w64, fs)
        ok = np.fromiter((q.ok for q in reports), dtype=bool, count=len(reports))
        if not ok.all():
            for q in reports:
                if not q.ok:
                    self.rejected.update(q.reasons)
            self.counts["windows_rejected"] += int(ok.size - ok.sum())
        take = np.arange(ok.size) if self.cfg.keep_rejected else np.flatnonzero(ok)
        z = None
        if take.size:
            z, take = self._preprocess(w64, take, fs)
        if z is not None:
            self._keep(z, take, reports, ok)
        self.pending, self.n_pending = [], 0

    def _keep(self, z: np.ndarray, take: np.ndarray, reports: list, ok: np.ndarray) -> None:
        """Buffer the kept windows ``z`` (rows ``take`` of the queue) and their index rows."""
        cols = self.cols
        self.buf.append(z.astype(self.cfg.dtype))
        self.buffered += take.size
        bounds = np.cumsum([0] + [item[4].shape[0] for item in self.pending])
        cut = np.searchsorted(take, bounds)  # each item's slice of take
        for item, a0, a1, b0 in zip(self.pending, cut[:-1], cut[1:], bounds[:-1], strict=True):
            if a1 == a0:
                continue
            i_csn, i_mrn, i_split, i_rel, _, start_ms, offsets, abn, val = item
            local = take[a0:a1] - b0
            n_new = local.size
            cols["csn"] += [i_csn] * n_new
            cols["mrn"] += [i_mrn] * n_new
            cols["split"] += [i_split] * n_new
            cols["start_ms"].append(start_ms[local])
            cols["record"] += [i_rel] * n_new
            cols["sample_offset"].append(offsets[local])
            self.abn_parts.append(abn[local])
            self.val_parts.append(val[local])
            self.visits_with_windows.add(i_csn)
        kept_reports = [reports[t] for t in take.tolist()]
        cols["quality"] += [q.metrics["beat_prominence"] for q in kept_reports]
        cols["quality_ok"].append(ok[take])
        cols["hr"] += [q.metrics["heart_rate_bpm"] for q in kept_reports]
        self.flush(final=False)

    # --- visits and segments -----------------------------------------------------------------
    def visit(self, csn: str, mrn: str, split: str, labs: Any) -> None:
        self.counts["visits"] += 1
        segs, errs = list_segments(self.root, csn)
        for rec, msg in errs:
            self.skip(os.path.relpath(rec, self.root), _classify(msg), msg)
        if not segs and not errs:
            self.counts["visits_without_waveforms"] += 1
            return
        self.counts["visits_with_waveforms"] += 1
        for seg in segs:
            self.segment(seg, csn, mrn, split, labs)

    def segment(self, seg: Any, csn: str, mrn: str, split: str, labs: Any) -> None:
        cfg = self.cfg
        self.counts["segments"] += 1
        rel = os.path.relpath(seg.record, self.root)
        problem = check_segment(seg, expected_fs=cfg.expected_fs)
        if problem is not None:  # reported even when no window would come from it
            self.skip(rel, _classify(problem), problem)
            return
        n_win, win, hop = _candidates(seg.n_samples, seg.fs, cfg)
        start_ms = seg.start.astype("datetime64[ms]").astype(np.int64)
        k = np.arange(n_win, dtype=np.int64)
        t_ms = start_ms + np.round(k * hop * 1000.0 / seg.fs).astype(np.int64)
        keep, abn, val = _select_labels(t_ms, labs, self.n_labs, cfg)
        if cfg.policy == "order":
            self.cand["order"] += int(keep.sum())
            self.cand["visit"] += n_win if labs["lab"].size else 0
        else:
            self.cand["visit"] += int(keep.sum())
            ocfg = _WORKER["order_cfg"]
            self.cand["order"] += int(_select_labels(t_ms, labs, self.n_labs, ocfg)[0].sum())
        sel = np.flatnonzero(keep)
        if sel.size == 0:
            return  # nothing to cut here: do not even read the samples
        try:
            x = read_segment(seg, checked=True)  # check_segment passed above
        except MCMEDError as e:
            self.skip(rel, _classify(str(e)), str(e))
            return
        self.counts["segments_read"] += 1
        # Queue the selected windows; they are gated and preprocessed in batches
        # that span segments and visits (fuller blocks, fewer calls), in order.
        view = sliding_window_view(x, win)
        for c0 in range(0, sel.size, _WINDOWS_PER_BATCH):
            rows = sel[c0 : c0 + _WINDOWS_PER_BATCH]
            if self.pending and (
                self.pending_fs != seg.fs or self.n_pending + rows.size > _WINDOWS_PER_BATCH
            ):
                self.run_pending()
            self.pending_fs = seg.fs
            self.pending.append(
                (
                    csn,
                    mrn,
                    split,
                    rel,
                    view[rows * hop],
                    t_ms[rows],
                    rows * hop,
                    abn[rows],
                    val[rows],
                )
            )
            self.n_pending += rows.size

    # --- the unit's outputs ----------------------------------------------------------------------
    def _table(self) -> Any:
        import pyarrow as pa

        cfg, cols, name = self.cfg, self.cols, self.name
        n = len(cols["csn"])
        pos = np.arange(n, dtype=np.int64)  # window order = shard order
        arrays = {
            "csn": pa.array(cols["csn"], type=pa.string()),
            "mrn": pa.array(cols["mrn"], type=pa.string()),
            "split": pa.array(cols["split"], type=pa.string()),
            "shard": pa.array(
                [f"{name}_{k:03d}.npy" for k in (pos // cfg.shard_size).tolist()], type=pa.string()
            ),
            "offset": pa.array((pos % cfg.shard_size).astype(np.int32)),
            "start_time": pa.array(
                (np.concatenate(cols["start_ms"]) if n else np.zeros(0, np.int64)).astype(
                    "datetime64[ms]"
                ),
                type=pa.timestamp("ms"),
            ),
            "quality": pa.array(np.asarray(cols["quality"], dtype=np.float32)),
            "quality_ok": pa.array(
                np.concatenate(cols["quality_ok"]) if n else np.zeros(0, dtype=bool)
            ),
            "heart_rate_bpm": pa.array(np.asarray(cols["hr"], dtype=np.float32)),
            "record": pa.array(cols["record"], type=pa.string()),
            "sample_offset": pa.array(
                np.concatenate(cols["sample_offset"]) if n else np.zeros(0, np.int64)
            ),
        }
        abn_all = np.concatenate(self.abn_parts) if n else np.zeros((0, self.n_labs), np.float32)
        val_all = np.concatenate(self.val_parts) if n else np.zeros((0, self.n_labs), np.float32)
        for j, key in enumerate(cfg.lab_keys):
            arrays[key] = pa.array(abn_all[:, j])
            arrays[f"{key}_value"] = pa.array(val_all[:, j])
        return pa.table(arrays)

    def finish(self) -> dict[str, Any]:
        """Process what is queued, write the last shard, the part file and the done marker."""
        import pyarrow as pa

        self.run_pending()
        self.counts["visits_with_windows"] = len(self.visits_with_windows)
        self.flush(final=True)
        n = len(self.cols["csn"])
        self.counts["windows"] = n
        table = self._table()
        # Arrow IPC, uncompressed: a scratch file that finalize reads once; ~10x cheaper to
        # write and read than a zstd parquet of ~230 columns.
        part = self.out / "parts" / f"{self.name}.arrow"
        tmp = part.with_name(part.name + ".tmp")
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        os.replace(tmp, part)
        marker = {
            "unit": self.unit,
            "windows": n,
            "shards": self.shard_files,
            "part": f"parts/{self.name}.arrow",
            "counts": dict(sorted(self.counts.items())),
            "candidate_windows": self.cand,
            "rejected_by_reason": dict(sorted(self.rejected.items())),
            "skipped_records_by_reason": dict(sorted(self.skipped.items())),
            "skipped_records": self.skipped_list,
            "seconds": round(time.perf_counter() - self.t0, 4),
        }
        _atomic_write_json(self.out / "done" / f"{self.name}.json", marker)
        return marker


def _process_unit(unit: int, visits: list[tuple]) -> dict[str, Any]:
    """Cut, gate, preprocess and write one work unit; returns its done-marker dict."""
    cfg: CorpusConfig = _WORKER["cfg"]
    built = _Unit(unit, cfg, Path(_WORKER["mcmed_dir"]), _WORKER["out_dir"])
    for csn, mrn, split, labs in visits:
        built.visit(csn, mrn, split, labs)
    return built.finish()
