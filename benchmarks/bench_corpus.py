"""Corpus build throughput and peak memory on synthetic MC-MED cohorts of two sizes.

    python -m anyecg_edge.benchmarks.bench_corpus [--sizes 60 240] [--workers 1]

For each size it writes a synthetic cohort (not timed), then runs ``build_corpus`` in a
fresh subprocess (so imports, table reading and process start-up are counted, and peak
memory is that build's alone) and reports:

* windows ("segments": standardized 10 s windows) per second per core, end to end
  (wall time x workers) and inside the workers only (sum of work-unit times), and per
  CPU-second used by the build and its workers (``seg/cpu-s``: the same rate on an idle
  machine, but much less sensitive to other load on a shared one);
* peak RSS of the build's main process (VmHWM), of its largest worker and of the
  whole process tree (sampled from /proc every 50 ms; workers=1 builds in-process, so
  the tree is the main process and nothing is sampled);
* the extrapolated time for 20 M segments (the AnyECG-Lab corpus size) on 1 core and on
  16/64 cores at the measured per-core rate.

Goal (issue 4): >= 1,000 segments/s per core; peak memory flat as the cohort grows.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from anyecg_edge.fileio import write_json

TARGET_SEGMENTS = 20_000_000
GOAL_PER_CORE = 1000.0


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def _children(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (Linux /proc scan; empty elsewhere)."""
    kids = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return kids
    for e in entries:
        if not e.isdigit():
            continue
        try:
            with open(f"/proc/{e}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # Field 4 (ppid) follows the parenthesised command name, which may hold spaces.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            kids.append(int(e))
    return kids


def _tree_sampler(stop: threading.Event, peak: dict[str, float]) -> None:
    me = os.getpid()
    while not stop.is_set():
        kids = [_rss_mb(k) for k in _children(me)]
        peak["tree_mb"] = max(peak.get("tree_mb", 0.0), _rss_mb(me) + sum(kids))
        peak["worker_mb"] = max([peak.get("worker_mb", 0.0), *kids])
        stop.wait(0.05)


def _cpu_s() -> float:
    """CPU seconds of this process and its reaped children (the build's workers)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        total += ru.ru_utime + ru.ru_stime
    return total


def _build_child(mcmed_dir: str, out_dir: str, workers: int) -> None:
    """Runs in the measuring subprocess: build, then print one JSON line of numbers."""
    peak: dict[str, float] = {}
    stop = threading.Event()
    from anyecg_edge.benchmarks.bench_machine import peak_rss_mb

    # The /proc scan costs ~3 ms per sample: with workers=1 the build runs in this
    # process, whose peak VmHWM reports exactly, so do not steal its CPU and GIL.
    th = None
    if workers > 1:
        th = threading.Thread(target=_tree_sampler, args=(stop, peak), daemon=True)
        th.start()
    cpu0 = _cpu_s()
    t0 = time.perf_counter()
    from anyecg_edge.training.data.corpus import build_corpus

    manifest = build_corpus(mcmed_dir, out_dir, workers=workers, progress=False)
    wall = time.perf_counter() - t0
    cpu = _cpu_s() - cpu0
    stop.set()
    if th is not None:
        th.join()
    unit_s = 0.0
    for p in Path(out_dir, "done").glob("*.json"):
        unit_s += json.loads(p.read_text())["seconds"]
    # Not ru_maxrss: Linux carries it over fork+exec, so this subprocess would report
    # the benchmark parent's peak when that is larger.
    self_mb = peak_rss_mb()
    print(
        json.dumps(
            {
                "windows": manifest["counts"]["windows"],
                "rejected": manifest["counts"]["windows_rejected"],
                "segments_read": manifest["counts"]["segments_read"],
                "wall_s": wall,
                "cpu_s": cpu,
                "unit_s": unit_s,
                "peak_main_mb": self_mb,
                # Sampled: RUSAGE_CHILDREN's maxrss also counts the parent's pages that
                # a forked child held before exec, so it overstates small workers.
                "peak_worker_mb": peak.get("worker_mb", 0.0) if workers > 1 else 0.0,
                "peak_tree_mb": peak.get("tree_mb", 0.0) if workers > 1 else self_mb,
            }
        )
    )


def _measure(mcmed_dir: Path, out_dir: Path, workers: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "anyecg_edge.benchmarks.bench_corpus", "--_build",
           str(mcmed_dir), str(out_dir), str(workers)]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"corpus build failed (exit {res.returncode}): {res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _fmt_duration(s: float) -> str:
    if s < 3600:
        return f"{s / 60:.1f} min"
    if s < 86400 * 2:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="bench_corpus", description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[60, 240], help="cohort sizes (visits)")
    ap.add_argument("--workers", type=int, default=1, help="build processes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temp dir)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--_build", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._build:
        _build_child(args._build[0], args._build[1], int(args._build[2]))
        return {}

    from anyecg_edge.training.data.synth import synth_cohort

    tmp = None
    if args.out is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_corpus_")
        work = Path(tmp.name)
    else:
        work = args.out
        work.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for n in args.sizes:
            cohort = work / f"cohort_{n}"
            t0 = time.perf_counter()
            if not (cohort / "truth.json").is_file():
                synth_cohort(cohort, n, seed=args.seed)
            synth_s = time.perf_counter() - t0
            out = work / f"corpus_{n}_w{args.workers}"
            if out.exists():
                import shutil

                shutil.rmtree(out)
            r = _measure(cohort, out, args.workers)
            r.update(visits=n, workers=args.workers, synth_s=synth_s)
            r["per_core_end_to_end"] = r["windows"] / (r["wall_s"] * args.workers)
            r["per_core_in_workers"] = r["windows"] / max(r["unit_s"], 1e-9)
            r["per_cpu_s"] = r["windows"] / max(r["cpu_s"], 1e-9)
            results.append(r)
    finally:
        if tmp is not None:
            tmp.cleanup()

    print(f"corpus build, synthetic MC-MED cohorts, workers={args.workers}, "
          f"cpu_count={os.cpu_count()}")  # fmt: skip
    print(f"{'visits':>7} {'windows':>8} {'wall s':>7} {'seg/s/core':>11} {'(in workers)':>12} "
          f"{'seg/cpu-s':>10} {'main MB':>8} {'worker MB':>9} {'tree MB':>8}")  # fmt: skip
    for r in results:
        print(f"{r['visits']:>7} {r['windows']:>8} {r['wall_s']:>7.2f} "
              f"{r['per_core_end_to_end']:>11.0f} {r['per_core_in_workers']:>12.0f} "
              f"{r['per_cpu_s']:>10.0f} {r['peak_main_mb']:>8.0f} {r['peak_worker_mb']:>9.0f} "
              f"{r['peak_tree_mb']:>8.0f}")  # fmt: skip
    big = max(results, key=lambda r: r["windows"])
    rate = big["per_core_end_to_end"]
    print(f"extrapolated time for {TARGET_SEGMENTS / 1e6:.0f} M segments at "
          f"{rate:.0f} segments/s per core: 1 core {_fmt_duration(TARGET_SEGMENTS / rate)}, "
          f"16 cores {_fmt_duration(TARGET_SEGMENTS / rate / 16)}, "
          f"64 cores {_fmt_duration(TARGET_SEGMENTS / rate / 64)}")  # fmt: skip
    verdict = "meets" if rate >= GOAL_PER_CORE else "misses"
    print(f"goal >= {GOAL_PER_CORE:.0f} segments/s per core: {verdict} ({rate:.0f})")
    if len(results) >= 2:
        small = min(results, key=lambda r: r["windows"])
        print(
            f"peak memory, {small['visits']} -> {big['visits']} visits "
            f"(x{big['windows'] / max(small['windows'], 1):.1f} windows): main "
            f"{small['peak_main_mb']:.0f} -> {big['peak_main_mb']:.0f} MB, tree "
            f"{small['peak_tree_mb']:.0f} -> {big['peak_tree_mb']:.0f} MB"
        )
    summary = {
        "results": results,
        "per_core": rate,
        "goal_per_core": GOAL_PER_CORE,
        "extrapolated_s_20M_1core": TARGET_SEGMENTS / rate,
    }
    if args.json is not None:
        write_json(args.json, summary)
    return summary


if __name__ == "__main__":
    main()
