"""The end of a corpus build (see `anyecg_edge.training.data.corpus`): the finished units'
index parts concatenated into ``index.parquet`` (fresh segment ids, row groups of about
``_INDEX_ROW_GROUP`` windows) and their done markers aggregated into the manifest (counts,
per-split windows / visits / patients, per-lab prevalence, skips).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from anyecg_edge.training.data.corpus_spec import (
    _INDEX_ROW_GROUP,
    _MAX_LISTED_SKIPS,
    FORMAT,
    SPLIT_ORDER,
    CorpusConfig,
    CorpusError,
    _unit_name,
)

from anyecg_edge.fileio import file_sha256

__all__: list[str] = []


class _IndexWriter:
    """index.parquet written through a tmp file: unit tables gathered into row groups of at
    least ``_INDEX_ROW_GROUP`` windows (far fewer column chunks than a group per unit)."""

    def __init__(self, path: Path) -> None:
        self.tmp = path.with_name(path.name + ".tmp")
        self.writer: Any = None
        self.pending: list = []
        self.n_pending = 0

    def add(self, table: Any) -> None:
        self.pending.append(table)
        self.n_pending += table.num_rows
        if self.n_pending >= _INDEX_ROW_GROUP:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.pending:
            return
        table = pa.concat_tables(self.pending) if len(self.pending) > 1 else self.pending[0]
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.tmp, table.schema, compression="zstd")
        self.writer.write_table(table, row_group_size=table.num_rows)
        self.pending, self.n_pending = [], 0

    def finish(self, cfg: CorpusConfig) -> None:
        """Write what is left; an empty corpus still gets a well-formed index."""
        import pyarrow.parquet as pq

        self.flush()
        if self.writer is None:
            empty = _empty_index_schema(cfg)
            self.writer = pq.ParquetWriter(self.tmp, empty, compression="zstd")
            self.writer.write_table(empty.empty_table())

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class _SplitTally:
    """Per split: windows, visits, patients and, per lab, measured and abnormal windows."""

    def __init__(self, n_labs: int) -> None:
        self.windows: Counter = Counter()
        self.visits: dict[str, set] = {s: set() for s in SPLIT_ORDER}
        self.patients: dict[str, set] = {s: set() for s in SPLIT_ORDER}
        self.measured = {s: np.zeros(n_labs, np.int64) for s in SPLIT_ORDER}
        self.positive = {s: np.zeros(n_labs, np.int64) for s in SPLIT_ORDER}

    def add(self, table: Any, lab_keys: tuple[str, ...]) -> None:
        n = table.num_rows
        split = np.asarray(table.column("split").to_numpy(zero_copy_only=False), dtype=object)
        csn = np.asarray(table.column("csn").to_numpy(zero_copy_only=False), dtype=object)
        mrn = np.asarray(table.column("mrn").to_numpy(zero_copy_only=False), dtype=object)
        abn = (
            np.stack([table.column(k).to_numpy() for k in lab_keys], axis=1)
            if lab_keys
            else np.zeros((n, 0))
        )
        for s in SPLIT_ORDER:
            m = split == s
            if not m.any():
                continue
            self.windows[s] += int(m.sum())
            self.visits[s].update(csn[m].tolist())
            self.patients[s].update(mrn[m].tolist())
            a = abn[m]
            self.measured[s] += np.isfinite(a).sum(axis=0)
            self.positive[s] += (a == 1).sum(axis=0)

    def check_no_leak(self, out: Path) -> None:
        tr, va, te = (self.patients[s] for s in SPLIT_ORDER)
        leaked = (tr & va) | (tr & te) | (va & te)
        if leaked:  # cannot happen by construction; refuse to hand out a leaking corpus
            raise CorpusError(f"{out}: {len(leaked)} patient(s) in more than one split")

    def prevalence(self, lab_keys: tuple[str, ...]) -> dict[str, Any]:
        out = {}
        tot_m = sum(self.measured.values())
        tot_p = sum(self.positive.values())
        for j, key in enumerate(lab_keys):
            if tot_m[j] == 0:
                continue
            out[key] = {
                "n_measured": int(tot_m[j]),
                "n_abnormal": int(tot_p[j]),
                "prevalence": round(float(tot_p[j] / tot_m[j]), 6),
                "by_split": {
                    s: {
                        "n_measured": int(self.measured[s][j]),
                        "n_abnormal": int(self.positive[s][j]),
                    }
                    for s in SPLIT_ORDER
                },
            }
        return out

    def by_split(self) -> dict[str, dict[str, int]]:
        return {
            s: {
                "windows": self.windows[s],
                "visits": len(self.visits[s]),
                "patients": len(self.patients[s]),
            }
            for s in SPLIT_ORDER
        }


class _MarkerTotals:
    """The done markers' counts summed over units (skip listings capped)."""

    def __init__(self) -> None:
        # The counts every unit's marker carries, 0 when there is no unit at all (a labs.csv
        # without rows): the manifest always states them.
        self.counts: Counter = Counter(
            dict.fromkeys(
                ("windows", "visits_with_windows", "windows_rejected", "segments_read"), 0
            )
        )
        self.candidates: Counter = Counter()
        self.rejected: Counter = Counter()
        self.skipped_by: Counter = Counter()
        self.skipped_list: list = []
        self.shards: list[str] = []

    def add(self, marker: dict[str, Any]) -> None:
        self.counts.update(marker["counts"])
        self.candidates.update(marker["candidate_windows"])
        self.rejected.update(marker["rejected_by_reason"])
        self.skipped_by.update(marker["skipped_records_by_reason"])
        room = _MAX_LISTED_SKIPS - len(self.skipped_list)
        self.skipped_list += marker["skipped_records"][: max(0, room)]
        self.shards += [f"shards/{s}" for s in marker["shards"]]


def _finalize(
    out: Path,
    units: list,
    cfg: CorpusConfig,
    counts: dict,
    lab_stats,
    skipped_rows: Counter,
    from_files: bool,
) -> dict[str, Any]:
    """Concatenate the unit parts into index.parquet and aggregate the manifest."""
    import pyarrow as pa

    index_path = out / "index.parquet"
    totals = _MarkerTotals()
    tally = _SplitTally(len(cfg.lab_keys))
    index = _IndexWriter(index_path)
    next_id = 0
    try:
        for u in range(len(units)):
            marker = json.loads((out / "done" / f"{_unit_name(u)}.json").read_text())
            totals.add(marker)
            table = _read_part(out / marker["part"])
            n = table.num_rows
            if n == 0:
                continue
            ids = pa.array(np.arange(next_id, next_id + n, dtype=np.int64))
            next_id += n
            table = table.add_column(0, "segment_id", ids)
            index.add(table)
            tally.add(table, cfg.lab_keys)
        index.finish(cfg)
    finally:
        index.close()
    os.replace(index.tmp, index_path)

    tally.check_no_leak(out)
    return {
        "format": FORMAT,
        "config": {**asdict(cfg), "lab_keys": list(cfg.lab_keys)},
        "window_samples": cfg.window_samples,
        "counts": {
            **counts,
            **dict(sorted(totals.counts.items())),
            "candidate_windows_by_policy": dict(sorted(totals.candidates.items())),
            "shards": len(totals.shards),
        },
        "splits": {
            "source": (
                f"split_{cfg.split_scheme}_*.csv"
                if from_files
                else f"seeded MRN split 80/10/10 (seed {cfg.seed})"
            ),
            **tally.by_split(),
        },
        "prevalence": tally.prevalence(cfg.lab_keys),
        "quality_rejections": dict(sorted(totals.rejected.items())),
        "skipped_records": {
            "by_reason": dict(sorted(totals.skipped_by.items())),
            "records": totals.skipped_list,
        },
        "skipped_visits_and_rows": {k: v for k, v in sorted(skipped_rows.items()) if v},
        "labs_csv": lab_stats.as_dict(),
        "shards": totals.shards,
        "index_sha256": file_sha256(index_path),
    }


def _read_part(path: Path):
    """A unit's index rows: Arrow IPC (this version) or parquet (older partial builds)."""
    import pyarrow as pa

    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    else:
        with pa.OSFile(str(path), "rb") as f:
            table = pa.ipc.open_file(f).read_all()
    return table.replace_schema_metadata(None)


def _empty_index_schema(cfg: CorpusConfig):
    import pyarrow as pa

    fields = [
        ("segment_id", pa.int64()),
        ("csn", pa.string()),
        ("mrn", pa.string()),
        ("split", pa.string()),
        ("shard", pa.string()),
        ("offset", pa.int32()),
        ("start_time", pa.timestamp("ms")),
        ("quality", pa.float32()),
        ("quality_ok", pa.bool_()),
        ("heart_rate_bpm", pa.float32()),
        ("record", pa.string()),
        ("sample_offset", pa.int64()),
    ]
    for k in cfg.lab_keys:
        fields += [(k, pa.float32()), (f"{k}_value", pa.float32())]
    return pa.schema(fields)
