"""Real windows for calibration and parity: records, a corpus, or a .npy of model inputs.

Every window comes out as the model's input: preprocessed float32 (n, window_samples),
exactly what `anyecg_edge.predict.predict_record` feeds the model on the device, with the
same quality gate on the raw mV samples. Sources:

* RECORDS: a folder (every ``*.hea`` WFDB record and ``*.edf`` file in it, sorted) or
  single record paths. Every lead of every record gives single-lead windows (10 s, no
  overlap): a 12-lead CinC record gives 12.
* CORPUS: a folder made by ``anyecg-edge data build`` (``manifest.json`` with format
  ``anyecg-edge-corpus/1``): its windows are already preprocessed; calibration reads the
  ``train`` split, parity the ``val`` split, with per-lab targets when present.
* ``.npy``: an array (n, window_samples) or (n, 1, window_samples) of preprocessed windows
  (used as they are: no gate, no preprocessing).

Held-out windows never share a record (or a corpus patient) with calibration windows.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from anyecg_edge.quantization.errors import WindowsError

from anyecg_edge.io import RecordError, list_leads, read_record
from anyecg_edge.predict import model_inputs, model_window, raw_model_windows
from anyecg_edge.runtime import ModelMetadata
from anyecg_edge.signal import SignalError

log = logging.getLogger(__name__)

CORPUS_FORMAT = "anyecg-edge-corpus/1"
# Held-out share of the records when no separate held-out source is given.
HELDOUT_FRACTION = 0.2
_UNIT_TO_MV = {"mv": 1.0, "uv": 1e-3, "μv": 1e-3, "v": 1e3}


@dataclass
class WindowSet:
    """Preprocessed windows (n, samples) float32, the record each came from, optional targets."""

    x: np.ndarray
    groups: list[str]
    sources: list[str]
    # (n, n_labs) float32 with 1/0 targets and NaN where unmeasured, columns = `label_labs`.
    labels: np.ndarray | None = None
    label_labs: list[str] = field(default_factory=list)
    n_rejected: int = 0

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def take(self, idx: np.ndarray) -> WindowSet:
        return WindowSet(
            x=self.x[idx],
            groups=[self.groups[i] for i in idx],
            sources=self.sources,
            labels=None if self.labels is None else self.labels[idx],
            label_labs=self.label_labs,
            n_rejected=self.n_rejected,
        )

    def stats(self) -> dict[str, float]:
        """Summary of the values: preprocessed windows are z-scores (mean ~0, std ~1)."""
        x = self.x
        return {
            "n_windows": len(self),
            "n_records": len(set(self.groups)),
            "n_rejected_by_quality_gate": self.n_rejected,
            "mean": round(float(x.mean()), 4) if x.size else 0.0,
            "std": round(float(x.std()), 4) if x.size else 0.0,
            "abs_max": round(float(np.abs(x).max()), 4) if x.size else 0.0,
        }


def is_corpus(path: Path) -> bool:
    manifest = path / "manifest.json"
    if not (path.is_dir() and manifest.is_file()):
        return False
    try:
        return json.loads(manifest.read_text()).get("format") == CORPUS_FORMAT
    except (OSError, json.JSONDecodeError):
        return False


def _record_paths(path: Path) -> list[Path]:
    if path.is_dir():
        found = sorted(p.with_suffix("") for p in path.glob("*.hea"))
        found += sorted(path.glob("*.edf"))
        if not found:
            raise WindowsError(f"{path}: no WFDB (*.hea) or EDF (*.edf) records in this folder")
        return found
    if path.suffix.lower() == ".hea":
        return [path.with_suffix("")]
    if path.exists() or path.with_suffix(".hea").exists():
        return [path]
    raise WindowsError(f"{path}: not found (expected a record, a folder of records or a corpus)")


def _read_leads(path: Path) -> list[tuple[str, np.ndarray, float]]:
    """(lead, signal_mv, fs) for every lead of a record; one read for WFDB files."""
    if path.suffix.lower() != ".edf":
        try:
            import wfdb
        except ImportError:  # fall through to the project reader, which names the extra
            wfdb = None
        if wfdb is not None:
            try:
                rec = wfdb.rdrecord(str(path))
            except Exception as exc:  # wfdb raises many types for bad files
                raise RecordError(f"{path}: not a readable WFDB record ({exc})") from None
            out = []
            for j, name in enumerate(rec.sig_name or []):
                scale = _UNIT_TO_MV.get(str(rec.units[j]).strip().lower())
                if scale is None:
                    log.warning(
                        "%s lead %s: unit %r is not a voltage; skipped", path, name, rec.units[j]
                    )
                    continue
                out.append((name, rec.p_signal[:, j].astype(np.float32) * scale, float(rec.fs)))
            return out
    leads = []
    for lead in list_leads(path):
        r = read_record(path, lead=lead)
        leads.append((r.lead, r.signal_mv, r.fs))
    return leads


def record_windows(
    paths: Sequence[str | Path], meta: ModelMetadata, *, quality_gate: bool = True
) -> WindowSet:
    """Preprocessed windows of every lead of every record (the device path, model_inputs)."""
    xs: list[np.ndarray] = []
    groups: list[str] = []
    rejected = 0
    records = [r for p in paths for r in _record_paths(Path(p))]
    for rec_path in records:
        try:
            leads = _read_leads(rec_path)
        except RecordError as exc:
            raise WindowsError(str(exc)) from None
        for lead, sig_mv, fs in leads:
            try:
                raw, _ = raw_model_windows(sig_mv, fs, meta)
            except SignalError as exc:
                log.info("%s lead %s: %s; skipped", rec_path, lead, exc)
                continue
            if quality_gate:
                # The device's own gate -> preprocess step (predict_record calls it too).
                reports, x = model_inputs(raw, fs, meta)
                rejected += sum(not r.ok for r in reports)
                if x is None:
                    continue
            else:
                x = model_window(raw, fs, meta, meta.mains_hz)
            xs.append(x)
            groups += [str(rec_path)] * len(x)
    if not xs:
        raise WindowsError(
            f"{', '.join(map(str, paths))}: no window passed the quality gate "
            f"({rejected} rejected, {len(records)} records)"
        )
    x = np.concatenate(xs).astype(np.float32)
    _check_samples(x, meta, ", ".join(map(str, paths)))
    return WindowSet(x=x, groups=groups, sources=[str(p) for p in paths], n_rejected=rejected)


def npy_windows(path: Path, meta: ModelMetadata) -> WindowSet:
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise WindowsError(f"{path}: not a readable .npy array ({exc})") from None
    if x.ndim == 3 and x.shape[1] == 1:
        x = x[:, 0, :]
    if x.ndim != 2 or x.shape[0] == 0:
        raise WindowsError(
            f"{path}: expected windows shaped (n, {meta.window_samples}), got {x.shape}"
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise WindowsError(f"{path}: expected float windows, got dtype {x.dtype}")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise WindowsError(f"{path}: windows contain NaN or inf")
    _check_samples(x, meta, str(path))
    # No record structure: each window is its own group.
    return WindowSet(x=x, groups=[f"{path}#{i}" for i in range(len(x))], sources=[str(path)])


def corpus_windows(
    path: Path, meta: ModelMetadata, split: str, *, max_windows: int | None, seed: int = 0
) -> WindowSet:
    """Windows of one corpus split, with the model's labs as targets where the corpus has them."""
    try:
        from anyecg_edge.training.data.dataset import CorpusDataset, corpus_lab_keys
    except ImportError as exc:
        raise WindowsError(f"{path}: reading a corpus needs the training extra ({exc})") from None
    try:
        labs = [lab for lab in meta.labs if lab in set(corpus_lab_keys(path, measured_only=False))]
        ds = CorpusDataset(path, split=split, labs=labs)
    except ValueError as exc:
        raise WindowsError(str(exc)) from None
    if len(ds) == 0:
        raise WindowsError(f"{path}: the corpus has no quality-passed windows in split {split!r}")
    if ds.window_samples != meta.window_samples:
        raise WindowsError(
            f"{path}: corpus windows have {ds.window_samples} samples, the model takes "
            f"{meta.window_samples}"
        )
    idx = np.arange(len(ds))
    if max_windows is not None and len(ds) > max_windows:
        idx = np.sort(np.random.default_rng(seed).choice(len(ds), max_windows, replace=False))
    items = ds.__getitems__(idx.tolist())
    x = np.stack([it[0].numpy()[0] for it in items]).astype(np.float32)
    labels = None
    if labs:
        t = ds.targets[idx].astype(np.float32)
        labels = np.where(t < 0, np.nan, t).astype(np.float32)
    patients = _corpus_patients(path, split, len(ds))
    groups = (
        [f"{path}:{split}"] * len(x)
        if patients is None
        else [f"{path}:patient {patients[i]}" for i in idx]
    )
    return WindowSet(
        x=x,
        groups=groups,
        sources=[f"{path} (split {split})"],
        labels=labels,
        label_labs=labs,
    )


def _corpus_patients(path: Path, split: str, n: int) -> np.ndarray | None:
    """The patient (``mrn``) of each window `CorpusDataset` yields for ``split`` (same filter,
    same row order), so a corpus's windows group by patient like records do (the
    `--calib-method auto` split, the record counts). None when the index has no ``mrn``."""
    import pyarrow.parquet as pq

    try:
        t = pq.read_table(path / "index.parquet", columns=["split", "quality_ok", "mrn"])
    except (KeyError, ValueError, OSError):
        return None
    keep = (np.asarray(t.column("split").to_pylist(), dtype=object) == split) & np.asarray(
        t.column("quality_ok").to_pylist(), dtype=bool
    )
    mrn = np.asarray(t.column("mrn").to_pylist(), dtype=object)[keep]
    return mrn if len(mrn) == n else None


def _check_samples(x: np.ndarray, meta: ModelMetadata, what: str) -> None:
    if x.shape[-1] != meta.window_samples:
        raise WindowsError(
            f"{what}: windows have {x.shape[-1]} samples, the model takes {meta.window_samples}"
        )


def _stable_rank(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()


def load_windows(
    sources: Sequence[str | Path], meta: ModelMetadata, *, role: str, max_windows: int | None
) -> WindowSet:
    """Windows from one or more sources of the same kind. ``role``: 'calib' or 'heldout'
    (picks the corpus split: train / val)."""
    paths = [Path(s) for s in sources]
    sets: list[WindowSet] = []
    record_like: list[Path] = []
    for p in paths:
        if p.suffix.lower() == ".npy":
            sets.append(npy_windows(p, meta))
        elif is_corpus(p):
            split = "train" if role == "calib" else "val"
            sets.append(corpus_windows(p, meta, split, max_windows=max_windows))
        else:
            record_like.append(p)
    if record_like:
        sets.append(record_windows(record_like, meta))
    ws = concat(sets)
    return subsample(ws, max_windows)


def concat(sets: Sequence[WindowSet]) -> WindowSet:
    if len(sets) == 1:
        return sets[0]
    labeled = [s for s in sets if s.labels is not None]
    labels, label_labs = None, []
    if (
        labeled
        and len(labeled) == len(sets)
        and all(s.label_labs == sets[0].label_labs for s in sets)
    ):
        labels = np.concatenate([s.labels for s in sets])  # type: ignore[misc]
        label_labs = sets[0].label_labs
    return WindowSet(
        x=np.concatenate([s.x for s in sets]),
        groups=[g for s in sets for g in s.groups],
        sources=[src for s in sets for src in s.sources],
        labels=labels,
        label_labs=label_labs,
        n_rejected=sum(s.n_rejected for s in sets),
    )


def subsample(ws: WindowSet, max_windows: int | None, seed: int = 0) -> WindowSet:
    if max_windows is None or len(ws) <= max_windows:
        return ws
    idx = np.sort(np.random.default_rng(seed).choice(len(ws), max_windows, replace=False))
    return ws.take(idx)


def split_heldout(ws: WindowSet, fraction: float = HELDOUT_FRACTION) -> tuple[WindowSet, WindowSet]:
    """(calibration, held-out) by record: a record's windows all go to one side.

    Records are ordered by a hash of their name, so the split does not depend on the
    order the sources were given in. With a single record (or a .npy without records)
    every fifth window is held out instead.
    """
    names = sorted(set(ws.groups), key=_stable_rank)
    if len(names) >= 2:
        n_held = max(1, round(fraction * len(names)))
        held = set(names[:n_held])
        mask = np.array([g in held for g in ws.groups])
    else:
        step = max(2, round(1 / fraction))
        mask = np.arange(len(ws)) % step == step - 1
    if mask.all() or not mask.any():
        raise WindowsError(
            f"{', '.join(ws.sources)}: too few windows ({len(ws)}) to hold some out for parity"
        )
    return ws.take(np.flatnonzero(~mask)), ws.take(np.flatnonzero(mask))
