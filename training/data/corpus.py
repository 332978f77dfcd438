"""Build the segment corpus: standardized 10 s lead-II windows with lab targets, sharded.

``build_corpus(mcmed_dir, out_dir)`` turns an MC-MED tree (or a synthetic one in the same
layout) into::

    out_dir/
      config.json        build configuration + input fingerprint (checked on resume)
      shards/u{unit}_{k}.npy   float16 (n, window_samples), np.load(mmap_mode='r')-able
      parts/u{unit}.arrow      the index rows of one work unit (Arrow IPC scratch)
      done/u{unit}.json        done marker of one work unit (written last)
      index.parquet      one row per window (see INDEX_COLUMNS + 2 columns per lab)
      manifest.json      counts, per-lab prevalence, skips with reasons, config, version

Alignment (DESIGN.md section 4). ``policy='order'``: a window [t, t+window_s] is kept
for a lab result when it lies in [Order_time - before_s, min(Order_time + after_s,
Result_time)] -- never after the result exists; a result without Result_time cannot be
bounded and is not used. ``policy='visit'``: every window of the visit's recording is
kept, labelled with the visit's results. In both, a window gets, per lab, the result
whose order is nearest to the window start (ties: the earlier order); labs without a
usable result are NaN. Windows come from a grid starting at each segment's start with
hop ``stride_s`` (default: window_s, no overlap) and never cross a segment gap.

Each window runs through the quality gate on the raw mV samples and
:func:`anyecg_edge.signal.preprocess` (the ECGFounder chain, the same code the device
runs), a segment's windows in batches: :func:`anyecg_edge.signal.assess_quality_batch`
gives the reports :func:`anyecg_edge.signal.assess_quality` gives per window, and a
batch's preprocessed rows are bit-identical to preprocessing each window alone.
Rejected windows are counted by reason (and dropped unless ``keep_rejected``).

Splits are by patient: MC-MED's ``split_{scheme}_*.csv`` when present (a patient whose
visits sit in several splits is kept in the highest of test > val > train and the
other visits are dropped and counted -- MC-MED's chrono split does this), else a seeded
80/10/10 split of MRNs.

Resumability: visits (sorted by CSN) are cut into fixed work units of
``visits_per_unit``; a unit writes its shards and its index part atomically (tmp file +
``os.replace``) and then its done marker. Re-running skips units with a marker and
produces the identical corpus (index + shard bytes), whatever ``workers`` is.

Modules: `corpus_spec` (format, config, label alignment), `corpus_unit` (the workers'
side: one work unit), `corpus_index` (index.parquet and the manifest from the finished
units), this one (options, splits, labs, the pool, resume).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from anyecg_edge.training.data.corpus_index import _finalize
from anyecg_edge.training.data.corpus_spec import (
    _MISSING,
    _SPLIT_PRIORITY,
    FORMAT,
    INDEX_COLUMNS,
    CorpusConfig,
    CorpusError,
    _atomic_write_json,
    _unit_name,
    lab_columns,
    parse_duration_s,
)
from anyecg_edge.training.data.corpus_unit import _process_unit, _worker_init
from anyecg_edge.training.data.mcmed import (
    iter_lab_chunks,
    read_splits,
    read_visits,
)

from anyecg_edge.progress import progress_session
from anyecg_edge.progress import report as progress_report

__all__ = [
    "CorpusError",
    "CorpusConfig",
    "INDEX_COLUMNS",
    "build_corpus",
    "parse_duration_s",
    "lab_columns",
]


# ----------------------------------------------------------------------------- helpers


def _stop_workers(ex: ProcessPoolExecutor) -> None:
    """End the pool now (SIGTERM, Ctrl-C, an error in one unit): leaving the ``with`` block
    would otherwise wait for every unit in flight (up to 2 x workers of them), and the
    interpreter's exit too. Safe: a unit writes its files atomically and its done marker
    last, so a killed unit is simply redone on resume."""
    procs = list((getattr(ex, "_processes", None) or {}).values())  # no public API for this
    ex.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.terminate()


def _csn_sort_key(csn: str) -> tuple[int, int, str]:
    return (0, int(csn), "") if csn.isdigit() else (1, 0, csn)


def _git_hash() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _input_fingerprint(root: Path) -> dict[str, list[int]]:
    """Size and mtime of the tabular inputs: a resumed build must read the same files."""
    fp = {}
    for p in sorted(root.glob("*.csv")):
        st = p.stat()
        fp[p.name] = [st.st_size, int(st.st_mtime)]
    return fp


# ----------------------------------------------------------------------------- main side


def _assign_splits(visits, csn_split: dict[str, str] | None, seed: int, skipped: Counter):
    """CSN -> split for every visit that can be placed (patient-level, no MRN in two)."""
    csns = visits["CSN"].tolist()
    mrns = visits["MRN"].tolist()
    out: dict[str, str] = {}
    if csn_split is None:
        uniq = sorted(set(mrns), key=_csn_sort_key)
        perm = np.random.default_rng(seed).permutation(len(uniq))
        n_tr = int(round(0.8 * len(uniq)))
        n_va = int(round(0.1 * len(uniq)))
        side = {}
        for rank, i in enumerate(perm.tolist()):
            side[uniq[i]] = "train" if rank < n_tr else ("val" if rank < n_tr + n_va else "test")
        return {c: side[m] for c, m in zip(csns, mrns, strict=True)}, 0
    # Patient's split = highest-priority split among its listed visits.
    patient: dict[str, str] = {}
    for c, m in zip(csns, mrns, strict=True):
        s = csn_split.get(c)
        if s is not None and (m not in patient or _SPLIT_PRIORITY[s] > _SPLIT_PRIORITY[patient[m]]):
            patient[m] = s
    conflicts = 0
    for c, m in zip(csns, mrns, strict=True):
        s = csn_split.get(c)
        if s is None:
            if m in patient:
                out[c] = patient[m]  # unlisted visit of a placed patient: follow the patient
            else:
                skipped["visit not in any split file"] += 1
            continue
        if s != patient[m]:
            conflicts += 1
            skipped[f"visit's patient is in the {patient[m]} split"] += 1
            continue
        out[c] = s
    return out, conflicts


def _load_labs(
    root: Path, catalog, visit_index: dict[str, int], cfg: CorpusConfig, skipped: Counter
):
    """Compact per-visit lab arrays: (visit_idx, lab, order_ms, result_ms, value, abnormal)."""
    from anyecg_edge.training.data.mcmed import LabReadStats

    key_index = {k: i for i, k in enumerate(cfg.lab_keys)}
    stats = LabReadStats()
    parts = []
    for chunk in iter_lab_chunks(root, catalog, stats=stats):
        vidx = np.array([visit_index.get(c, -1) for c in chunk["CSN"].tolist()], dtype=np.int64)
        unknown_visit = vidx < 0
        skipped["lab row of a CSN not in visits.csv"] += int(unknown_visit.sum())
        res = chunk["Result_time"].to_numpy()
        res_ms = np.where(np.isnat(res), _MISSING, res.astype("datetime64[ms]").astype(np.int64))
        keep = ~unknown_visit
        if cfg.policy == "order":
            no_res = keep & (res_ms == _MISSING)
            skipped["lab row without Result_time (order policy)"] += int(no_res.sum())
            keep &= ~no_res
        lab = np.array([key_index[k] for k in chunk["lab_key"].tolist()], dtype=np.int16)
        parts.append(
            (
                vidx[keep],
                lab[keep],
                chunk["Order_time"].to_numpy().astype("datetime64[ms]").astype(np.int64)[keep],
                res_ms[keep],
                chunk["value"].to_numpy(np.float32)[keep],
                chunk["abnormal"].to_numpy(bool)[keep].astype(np.float32),
            )
        )
    if parts:
        cat = [np.concatenate([p[i] for p in parts]) for i in range(6)]
    else:
        cat = [
            np.zeros(0, t) for t in (np.int64, np.int16, np.int64, np.int64, np.float32, np.float32)
        ]
    vidx, lab, order_ms, result_ms, value, abnormal = cat
    # Sort by visit, lab, order time, then result time/value so ties are deterministic.
    perm = np.lexsort((value, result_ms, order_ms, lab, vidx))
    vidx, lab, order_ms, result_ms, value, abnormal = (a[perm] for a in cat)
    return (vidx, lab, order_ms, result_ms, value, abnormal), stats


def _first_difference(old: dict, new: dict, prefix: str = "") -> str | None:
    """The first setting that differs, by its dotted path ("config.seed: 0 -> 3"): the
    whole nested dict old -> new was cut at 500 characters before the new value showed."""
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            return _first_difference(a, b, f"{prefix}{key}.")
        return f"{prefix}{key}: {a!r} -> {b!r}"
    return None


def _check_or_write_config(out: Path, config_doc: dict) -> None:
    path = out / "config.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            old = None
        if old != config_doc:
            diff = _first_difference(old, config_doc) if isinstance(old, dict) else None
            diff = diff or "unreadable config.json"
            raise CorpusError(
                f"{out}: holds a corpus built with other settings or inputs ({diff}); "
                "use a new output folder or delete this one to rebuild"
            )
        return
    _atomic_write_json(path, config_doc)


def build_corpus(
    mcmed_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    workers: int = 1,
    window_s: float = 10.0,
    stride_s: float | None = None,
    before_s: float = 1800.0,
    after_s: float = 900.0,
    policy: str = "order",
    shard_size: int = 4096,
    visits_per_unit: int = 16,
    split_scheme: str = "random",
    mains_hz: float | None = 50.0,
    seed: int = 0,
    keep_rejected: bool = False,
    progress: bool = True,
    catalog: Any = None,
) -> dict[str, Any]:
    """Build (or resume) the segment corpus of ``mcmed_dir`` in ``out_dir``; returns the manifest.

    See the module docstring for the layout and the alignment rules. ``workers`` > 1
    processes work units in parallel (spawned processes). ``shard_size``: windows per
    shard file (a unit's last shard may be smaller). ``visits_per_unit``: visits per
    resumable work unit. ``mains_hz``: notch of the preprocessing (50 = the authors'
    chain, what the device runs; None skips it). Bad records (unreadable, truncated, wrong
    fs) and unusable lab rows are skipped and reported in the manifest; the build goes on.
    ``progress``: a bar over the units (:mod:`anyecg_edge.progress`, on stderr; the CLI
    passes whether stderr is a terminal and no -q / --no-progress was given).
    """
    from anyecg_edge import __version__
    from anyecg_edge.labs import load_catalog

    root = Path(mcmed_dir)
    out = Path(out_dir)
    if not root.is_dir():
        raise CorpusError(f"{root}: MC-MED folder not found")
    if not (isinstance(workers, int) and workers >= 1):
        raise CorpusError(f"workers must be an integer >= 1, got {workers!r}")
    catalog = load_catalog() if catalog is None else catalog
    cfg = _make_config(
        window_s=window_s,
        stride_s=stride_s,
        before_s=before_s,
        after_s=after_s,
        policy=policy,
        split_scheme=split_scheme,
        mains_hz=mains_hz,
        shard_size=shard_size,
        visits_per_unit=visits_per_unit,
        seed=seed,
        keep_rejected=keep_rejected,
        lab_keys=tuple(lab.key for lab in catalog),
    )
    t_start = time.perf_counter()
    for sub in ("shards", "parts", "done"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    cfg_doc = {"format": FORMAT, "config": asdict(cfg), "inputs": _input_fingerprint(root)}
    cfg_doc["config"]["lab_keys"] = list(cfg.lab_keys)
    _check_or_write_config(out, cfg_doc)

    plan = _Plan.read(root, catalog, cfg)
    pending = [
        u for u in range(len(plan.units)) if not (out / "done" / f"{_unit_name(u)}.json").is_file()
    ]
    n_resumed = len(plan.units) - len(pending)
    with progress_session(progress):
        _run_units(plan, pending, n_resumed, workers, root, out, asdict(cfg), show=progress)

    manifest = _finalize(
        out,
        plan.units,
        cfg,
        plan.counts(),
        plan.lab_stats,
        plan.skipped_rows,
        plan.from_split_files,
    )
    manifest["code_version"] = {"anyecg_edge": __version__, "git": _git_hash()}
    manifest["run"] = {
        "workers": workers,
        "units_total": len(plan.units),
        "units_resumed": n_resumed,
        "units_built": len(pending),
        "seconds": round(time.perf_counter() - t_start, 3),
    }
    _atomic_write_json(out / "manifest.json", manifest)
    return manifest


def _make_config(
    *,
    window_s: float,
    stride_s: float | None,
    before_s: float,
    after_s: float,
    policy: str,
    split_scheme: str,
    mains_hz: float | None,
    shard_size: int,
    visits_per_unit: int,
    seed: int,
    keep_rejected: bool,
    lab_keys: tuple[str, ...],
) -> CorpusConfig:
    """The build options checked (a CorpusError naming the option) and normalised."""
    if policy not in ("order", "visit"):
        raise CorpusError(f"policy must be 'order' or 'visit', got {policy!r}")
    if split_scheme not in ("random", "chrono"):
        raise CorpusError(f"split_scheme must be 'random' or 'chrono', got {split_scheme!r}")
    if not window_s >= 2.0:  # the quality gate needs two beats at 30 bpm
        raise CorpusError(f"window_s must be >= 2 seconds, got {window_s!r}")
    stride = float(window_s if stride_s is None else stride_s)
    if not stride > 0:
        raise CorpusError(f"stride_s must be > 0 seconds, got {stride_s!r}")
    if before_s < 0 or after_s < 0:
        raise CorpusError(f"before_s/after_s must be >= 0, got {before_s!r}/{after_s!r}")
    if shard_size < 1 or visits_per_unit < 1:
        raise CorpusError("shard_size and visits_per_unit must be >= 1")
    return CorpusConfig(
        window_s=float(window_s),
        stride_s=stride,
        before_s=float(before_s),
        after_s=float(after_s),
        policy=policy,
        split_scheme=split_scheme,
        mains_hz=None if mains_hz is None else float(mains_hz),
        shard_size=int(shard_size),
        visits_per_unit=int(visits_per_unit),
        seed=int(seed),
        keep_rejected=bool(keep_rejected),
        lab_keys=lab_keys,
    )


@dataclass
class _Plan:
    """The main process' reading of the tables: visits in CSN order with their split and
    lab arrays (``starts`` cuts them per visit), and the eligible visits cut into units."""

    csns: list[str]
    mrns: list[str]
    split_of: dict[str, str]
    labs: tuple[np.ndarray, ...]  # lab, order_ms, result_ms, value, abnormal (sorted by visit)
    starts: np.ndarray
    units: list[list[int]]
    n_eligible: int
    n_no_labs: int
    conflicts: int
    lab_stats: Any
    skipped_rows: Counter
    from_split_files: bool

    @classmethod
    def read(cls, root: Path, catalog: Any, cfg: CorpusConfig) -> _Plan:
        skipped_rows: Counter = Counter()
        visits = read_visits(root)
        csn_split = read_splits(root, cfg.split_scheme)
        split_of, conflicts = _assign_splits(visits, csn_split, cfg.seed, skipped_rows)
        order_idx = sorted(range(len(visits)), key=lambda i: _csn_sort_key(visits["CSN"].iat[i]))
        csns = [visits["CSN"].iat[i] for i in order_idx]
        mrns = [visits["MRN"].iat[i] for i in order_idx]
        visit_index = {c: i for i, c in enumerate(csns)}
        (vidx, *labs), lab_stats = _load_labs(root, catalog, visit_index, cfg, skipped_rows)
        starts = np.searchsorted(vidx, np.arange(len(csns) + 1))
        eligible = []
        n_no_labs = 0
        for i, csn in enumerate(csns):
            if starts[i] == starts[i + 1]:
                n_no_labs += 1
            elif csn in split_of:
                eligible.append(i)
        step = cfg.visits_per_unit
        return cls(
            csns=csns,
            mrns=mrns,
            split_of=split_of,
            labs=tuple(labs),
            starts=starts,
            units=[eligible[j : j + step] for j in range(0, len(eligible), step)],
            n_eligible=len(eligible),
            n_no_labs=n_no_labs,
            conflicts=conflicts,
            lab_stats=lab_stats,
            skipped_rows=skipped_rows,
            from_split_files=csn_split is not None,
        )

    def payload(self, unit: int) -> list[tuple]:
        """What a worker needs of a unit: per visit CSN, MRN, split and its lab arrays."""
        lab, order_ms, result_ms, value, abnormal = self.labs
        items = []
        for i in self.units[unit]:
            a, b = int(self.starts[i]), int(self.starts[i + 1])
            items.append(
                (
                    self.csns[i],
                    self.mrns[i],
                    self.split_of[self.csns[i]],
                    {
                        "lab": lab[a:b].astype(np.int64),
                        "order_ms": order_ms[a:b],
                        "result_ms": result_ms[a:b],
                        "value": value[a:b],
                        "abnormal": abnormal[a:b],
                    },
                )
            )
        return items

    def counts(self) -> dict[str, int]:
        return {
            "visits_total": len(self.csns),
            "visits_without_labs": self.n_no_labs,
            "visits_eligible": self.n_eligible,
            "patients_total": len(set(self.mrns)),
            "split_conflicts_dropped": self.conflicts,
        }


def _run_units(
    plan: _Plan,
    pending: list[int],
    n_resumed: int,
    workers: int,
    root: Path,
    out: Path,
    cfg_dict: dict,
    *,
    show: bool,
) -> None:
    """Process the ``pending`` units, in this process or a pool of ``workers``; with
    ``show``, the progress bar counts units (resumed ones included) and their windows
    (not drawn for progress=False even inside a command's open progress session)."""
    n_units = len(plan.units)
    done, windows = n_resumed, 0

    def advance(result: dict[str, Any] | None) -> None:
        nonlocal done, windows
        if result is not None:
            done, windows = done + 1, windows + result["windows"]
        if show:
            progress_report("corpus", done, n_units, note=f"units  {windows} windows")

    advance(None)
    if workers == 1 or len(pending) <= 1:
        _worker_init(cfg_dict, str(root), str(out))
        for u in pending:
            advance(_process_unit(u, plan.payload(u)))
        return
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # no fork: safe with threads (rich) and any BLAS
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=ctx,
        initializer=_worker_init,
        initargs=(cfg_dict, str(root), str(out)),
    ) as ex:
        todo = list(pending)
        running = set()
        try:
            while todo or running:
                while todo and len(running) < 2 * workers:  # bounded: flat memory
                    u = todo.pop(0)
                    running.add(ex.submit(_process_unit, u, plan.payload(u)))
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for f in finished:
                    advance(f.result())
        except BrokenProcessPool as exc:
            raise CorpusError(
                f"{out}: a worker process died mid-unit (killed from outside, or out "
                "of memory); the finished units are kept: run the same command again "
                "to resume (fewer --workers need less memory)"
            ) from exc
        except BaseException:
            _stop_workers(ex)
            raise
