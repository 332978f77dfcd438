"""`anyecg-edge data ...`: synthetic MC-MED-shaped cohorts and the segment corpus.

The implementations live in `anyecg_edge.training.data` (pandas/pyarrow/wfdb, loaded
inside the commands so `--help` works on a device install).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from anyecg_edge.commands._group import Group
from anyecg_edge.commands._types import (
    Number,
    OutputPath,
    all_cores,
    count,
    emit_json,
    human_echo,
    json_option,
    ordered_pair,
    refuse_clobber,
)
from anyecg_edge.progress import progress_enabled


@click.group(cls=Group)
def data() -> None:
    """MC-MED reading, synthetic cohorts and the segment corpus."""


@data.command("synth")
@click.option("--out", type=OutputPath(folder=True), required=True, help="Output folder.")
@click.option(
    "--visits", type=count(1, 10_000_000), default=100, show_default=True,
    help="Emergency-department visits (patients get one or more).",
)  # fmt: skip
@click.option(
    "--seed", type=count(0), default=0, show_default=True,
    help="Random seed: the same seed writes the same cohort.",
)  # fmt: skip
@click.option(
    "--segments-per-visit",
    nargs=2,
    type=count(1, 1000),
    default=(2, 4),
    show_default=True,
    callback=ordered_pair,
    help="Inclusive range of waveform segments per visit.",
)
@click.option(
    "--segment-s",
    nargs=2,
    # 0 s segments made the writer fail deep inside wfdb; a day is the longest recording.
    type=Number(1.0, 86_400.0),
    default=(60.0, 150.0),
    show_default=True,
    callback=ordered_pair,
    help="Range of segment lengths in seconds (1 to 86400).",
)
@click.option(
    "--no-defects", is_flag=True, help="Do not plant the truncated .dat / wrong-fs header defects."
)
@json_option("the cohort's summary (folder, visits, seed, truth)")
def data_synth(
    out: Path,
    visits: int,
    seed: int,
    segments_per_visit: tuple[int, int],
    segment_s: tuple[float, float],
    no_defects: bool,
    json_out: Path | None,
) -> None:
    """Write a synthetic cohort in MC-MED's exact layout, with planted lab effects.

    Writes visits.csv, labs.csv, split files, WFDB lead-II waveforms and truth.json
    (the planted labs and their effect sizes). Deterministic for a seed.
    """
    from anyecg_edge.training.data import synth_cohort

    truth = synth_cohort(
        out,
        visits,
        seed,
        segments_per_visit=segments_per_visit,
        segment_s=segment_s,
        defects=not no_defects,
    )
    emit_json(
        {"out": str(out), "visits": visits, "seed": seed, "truth_file": str(out / "truth.json"),
         "truth": truth},
        json_out,
    )  # fmt: skip
    echo = human_echo(json_out)
    planted = ", ".join(truth.get("planted_labs", []))
    echo(f"wrote {visits} visits to {out} (seed {seed}); planted labs: {planted}")
    echo(f"truth: {out / 'truth.json'}")


def _duration_s(ctx: click.Context, param: click.Parameter, value: str) -> float:
    """--before/--after text -> seconds at parse time: a bad value is a usage error (exit 2)
    naming the option, not an input error after the cohort was opened."""
    from anyecg_edge.training.data import parse_duration_s

    try:
        return parse_duration_s(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


@data.command("build")
@click.option(
    "--mcmed",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    required=True,
    help="MC-MED root (visits.csv, labs.csv, waveforms/).",
)
@click.option("--out", type=OutputPath(folder=True), required=True, help="Corpus folder.")
@click.option(
    "--workers", type=count(1, 256), default=None,
    help=f"Worker processes (default: all cores, {all_cores()} here).",
)  # fmt: skip
@click.option(
    "--window", "window_s", type=Number(1.0, 600.0), default=10.0, show_default=True,
    help="Window length in s.",
)  # fmt: skip
@click.option(
    "--stride", "stride_s", type=Number(0.0, 3600.0, min_open=True), default=None,
    help="Step between window starts in s (default: --window, no overlap).",
)  # fmt: skip
@click.option(
    "--before", "before_s", default="30m", show_default=True, callback=_duration_s,
    help="Window start before Order_time (90s, 30m, 1h).",
)  # fmt: skip
@click.option(
    "--after", "after_s", default="15m", show_default=True, callback=_duration_s,
    help="Window end after Order_time (90s, 30m, 1h).",
)  # fmt: skip
@click.option(
    "--policy",
    type=click.Choice(["order", "visit"]),
    default="order",
    show_default=True,
    help="order: windows around each lab order; visit: whole visit with its labs.",
)
@click.option(
    "--split-scheme", type=click.Choice(["random", "chrono"]), default="random",
    show_default=True,
    help="Patient split: random (seeded) or chrono (by first visit time).",
)  # fmt: skip
@click.option(
    "--mains",
    type=click.Choice(["50", "60", "none"]),
    default="50",
    show_default=True,
    help="Notch frequency (the authors' chain uses 50 Hz).",
)
@click.option(
    "--shard-size", type=count(1), default=4096, show_default=True, help="Windows per shard file."
)
@click.option(
    "--visits-per-unit", type=count(1), default=16, show_default=True,
    help="Visits per work unit (the unit of resuming and of parallel work).",
)  # fmt: skip
@click.option("--seed", type=count(0), default=0, show_default=True, help="Seed of the split.")
@click.option("--keep-rejected", is_flag=True, help="Keep quality-rejected windows (flagged).")
@click.option(
    "--no-progress", is_flag=True,
    help="No progress bar (it is also off with -q and when stderr is not a terminal).",
)  # fmt: skip
@json_option("the corpus manifest")
def data_build(
    mcmed: Path,
    out: Path,
    workers: int,
    window_s: float,
    stride_s: float | None,
    before_s: float,
    after_s: float,
    policy: str,
    split_scheme: str,
    mains: str,
    shard_size: int,
    visits_per_unit: int,
    seed: int,
    keep_rejected: bool,
    no_progress: bool,
    json_out: Path | None,
) -> None:
    """Cut aligned 10 s windows into a sharded, resumable corpus with index.parquet."""
    from anyecg_edge.training.data import build_corpus

    refuse_clobber(out, [mcmed], "--out")
    refuse_clobber(json_out, [mcmed], "--json")
    with _exclusive(out):
        if not (mcmed / "waveforms").is_dir():
            raise click.ClickException(
                f"{mcmed / 'waveforms'}: missing; an MC-MED folder holds visits.csv, labs.csv "
                "and waveforms/ (the lead-II WFDB records the windows are cut from)"
            )
        manifest = build_corpus(
            mcmed,
            out,
            workers=workers or all_cores(),
            window_s=window_s,
            stride_s=stride_s,
            before_s=before_s,
            after_s=after_s,
            policy=policy,
            split_scheme=split_scheme,
            mains_hz=None if mains == "none" else float(mains),
            shard_size=shard_size,
            visits_per_unit=visits_per_unit,
            seed=seed,
            keep_rejected=keep_rejected,
            progress=progress_enabled(no_progress),
        )
    emit_json(manifest, json_out)
    echo = human_echo(json_out)
    counts = manifest["counts"]
    echo(
        f"corpus {out}: {counts['windows']} windows from {counts['visits_with_windows']} visits "
        f"in {counts['shards']} shards ({counts['windows_rejected']} rejected by the quality gate)"
    )
    for split in ("train", "val", "test"):
        s = manifest["splits"].get(split, {})
        echo(f"  {split:5s} {s.get('windows', 0):7d} windows  {s.get('patients', 0):5d} patients")
    echo(f"  candidate windows by policy: {json.dumps(counts['candidate_windows_by_policy'])}")
    n_skipped = sum(manifest["skipped_records"]["by_reason"].values())
    if n_skipped:
        echo(f"  {n_skipped} records skipped (reasons in {out / 'manifest.json'})")
    if counts["windows"] == 0:
        # An empty corpus is no result: training on it fails later with a misleading
        # "no lab is measured" (exit 0 here hid the cause).
        why = (
            "every candidate window failed the quality gate"
            if counts["windows_rejected"]
            else "no lab result has a waveform segment within --before/--after of it (or "
            "labs.csv has no usable rows)"
        )
        click.echo(f"Error: corpus {out}: 0 windows: {why}", err=True)
        sys.exit(3)


class BuildLockedError(ValueError):
    """Another `data build` is writing the same corpus folder."""


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on the corpus folder for the build: two concurrent builds
    into one folder would interleave shards and index rows. flock on the folder itself:
    released by the kernel when the process dies (a SIGKILLed build leaves no stale lock,
    so the resume still works) and no lock file is left among the corpus files."""
    out.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; builds are not guarded there
        yield
        return
    fd = os.open(out, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BuildLockedError(
                f"{out}: another `anyecg-edge data build` is writing this corpus folder; "
                "wait for it (a later run resumes where it stopped) or choose another --out"
            ) from None
        yield
    finally:
        os.close(fd)  # closing releases the lock


COMMANDS = [data]
