"""`anyecg-edge bench`: all models side by side in one run (issue 8).

The implementation lives in `anyecg_edge.benchmarks.bench` (imported when the command
runs); with exported .onnx/.tflite files as ``--models`` it needs no torch, so the same
command benches a Raspberry Pi or a phone.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from anyecg_edge.commands._types import (
    Number,
    OutputPath,
    all_cores,
    count,
    json_option,
    json_to_stdout,
    positive,
    refuse_clobber,
    threads_option,
)


def _accuracy(items: tuple[str, ...]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise click.BadParameter(
                f"{item!r}: expected MODEL=EVALUATION.json", param_hint="--accuracy"
            )
        out[name.strip()] = Path(path.strip())
    return out


@click.command("bench")
@click.option(
    "--models", multiple=True, metavar="SPEC[,SPEC...]",
    help="Registry architectures at random init (ecgfounder, student-s, student-xs, net1d-tiny), "
    "'teacher' (ECGFounder + LoRA), or [NAME=]PATH of a checkpoint, LoRA run folder or "
    ".onnx/.tflite export; each may end in @VARIANTS (e.g. ecgfounder@torch, "
    "student-s@onnxruntime-int8+litert-int8). Default: ecgfounder,teacher,student-s.",
)  # fmt: skip
@threads_option(1024, "Inference threads per model")
@click.option(
    "--iterations", type=count(1), default=None,
    help="Timed calls per row (default: auto, 300-3000 calls / ~6 s per row; --quick: 10).",
)  # fmt: skip
@click.option(
    "--warmup", type=count(0), default=None, help="Untimed calls first (default 10; --quick 3)."
)
@click.option(
    "--batch",
    type=count(1, 65536),
    default=32,
    show_default=True,
    help="Batch size for throughput.",
)
@click.option(
    "--quick", is_flag=True,
    help="Smoke run: few windows and iterations, short stream (numbers are indicative only).",
)  # fmt: skip
@click.option(
    "--runtimes", multiple=True, metavar="VARIANT[,...]",
    help="Keep only these variants for every model (torch, onnxruntime, litert, tflite-runtime, "
    "fp32, int8, or full names like onnxruntime-int8).",
)  # fmt: skip
@json_option("the rows + machine info")
@click.option("--out", "out_dir", type=OutputPath(folder=True), default=None, help="Write everything here: bench.json, report.md, report.html and PNG plots (= --json OUT/bench.json --report OUT).")  # fmt: skip
@click.option("--report", "report_dir", type=OutputPath(folder=True), default=None, help="Write report.md, report.html and PNG plots here.")  # fmt: skip
@click.option("--compare", "compare_path", type=click.Path(path_type=Path), default=None, help="An earlier bench JSON: show regressions against it.")  # fmt: skip
@click.option("--tolerance", type=positive(), default=0.15, show_default=True, help="Relative slow-down that counts as a regression with --compare.")  # fmt: skip
@click.option(
    "--fail-on-regression", is_flag=True, help="Exit 1 when --compare finds a regression."
)
@click.option("--accuracy", multiple=True, metavar="MODEL=EVAL.json", help="Accuracy columns for a model copied from an `evaluate --json` file (default: an eval*.json next to its checkpoint; on an export row that is its fp32 checkpoint's number). Not with --corpus.")  # fmt: skip
@click.option("--corpus", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None, help="Evaluate every row on this corpus's test split with the row's own runtime (torch, ONNX Runtime, LiteRT), scored like `evaluate`: each row's AUROC is its own file's.")  # fmt: skip
@click.option("--truth", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None, help="The corpus cohort's truth.json (synthetic cohorts): adds planted / unplanted mean AUROC columns. Needs --corpus.")  # fmt: skip
@click.option("--stream-jsonl", type=click.Path(path_type=Path), default=None, help="Use this `stream --jsonl` output for the streaming-latency plot instead of running a session.")  # fmt: skip
@click.option("--stream-s", type=Number(0.0, 86_400.0), default=None, help="Seconds of signal to stream from a simulated Polar H10 for the report (default 60, --quick 12; 0: none).")  # fmt: skip
@click.option("--stream-speed", type=Number(0.0, 1e4, min_open=True), default=20.0, show_default=True, help="Replay speed of that session (x real time).")  # fmt: skip
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False), default=None, envvar="ANYECG_DATA", show_envvar=True, help="Recordings for the timing windows and the stream (default: $ANYECG_DATA, else shared/data beside the checkout; synthetic ECG where absent).")  # fmt: skip
@click.option("--work-dir", type=OutputPath(folder=True), default=None, help="Keep checkpoints, exports and worker files here (default: a temporary folder).")  # fmt: skip
def bench(
    models: tuple[str, ...],
    threads: int | None,
    iterations: int | None,
    warmup: int | None,
    batch: int,
    quick: bool,
    runtimes: tuple[str, ...],
    json_out: Path | None,
    out_dir: Path | None,
    report_dir: Path | None,
    compare_path: Path | None,
    tolerance: float,
    fail_on_regression: bool,
    accuracy: tuple[str, ...],
    corpus: Path | None,
    truth: Path | None,
    stream_jsonl: Path | None,
    stream_s: float | None,
    stream_speed: float,
    data_dir: Path | None,
    work_dir: Path | None,
) -> None:
    """Latency / memory / size / accuracy of every model side by side, in one run.

    Per model and runtime: p50/p95/p99 ms per 10 s window at batch 1, throughput, peak
    RSS, file size, params, MACs, export parity and AUROC (with --corpus: each row's own
    file on the test split; else its checkpoint's evaluation file); the int8 student's
    speed-up over ECGFounder fp32 is printed. Each row runs in its own process.
    """
    from rich.console import Console

    from anyecg_edge.benchmarks.bench import (
        DEFAULT_MODELS,
        BenchError,
        BenchOptions,
        print_result,
        run_bench,
        split_tokens,
        write_json,
    )
    from anyecg_edge.benchmarks.compare import compare_results, load_result, print_comparison
    from anyecg_edge.datadir import data_dir as resolve_data_dir

    if out_dir is not None:
        json_out = json_out or out_dir / "bench.json"
        report_dir = report_dir or out_dir
    # JSON on stdout: the tables and progress go to stderr, stdout is one JSON document.
    to_err = json_to_stdout(json_out)
    stream_ = sys.stderr if to_err else sys.stdout
    # A wide table even when piped (rich would wrap it at 80 columns).
    console = Console(width=None if stream_.isatty() else 200, stderr=to_err)
    quiet = (click.get_current_context().find_root().obj or {}).get("quiet", False)
    inputs = [compare_path, stream_jsonl, truth, *_accuracy(accuracy).values()]
    refuse_clobber(json_out, inputs, "--json")
    old = load_result(compare_path) if compare_path is not None else None
    if tolerance <= 0:
        raise BenchError(f"--tolerance must be > 0, got {tolerance}")
    opts = BenchOptions(
        models=split_tokens(models) or list(DEFAULT_MODELS),
        threads=threads or all_cores(),
        iterations=iterations,
        warmup=warmup,
        batch=batch,
        quick=quick,
        runtimes=split_tokens(runtimes) or None,
        data_dir=resolve_data_dir(data_dir),
        work_dir=work_dir,
        accuracy=_accuracy(accuracy),
        corpus=corpus,
        truth=truth,
        stream_s=stream_s,
        stream_jsonl=stream_jsonl,
        stream_speed=stream_speed,
    )

    def say(msg: str) -> None:
        if not quiet:
            console.print(f"[dim]{msg}[/]", highlight=False)

    from anyecg_edge.progress import progress_enabled, progress_session

    with progress_session(progress_enabled()):
        res = run_bench(opts, say=say)
    comparison = compare_results(res, old, tolerance=tolerance) if old is not None else None
    if comparison is not None:
        res["comparison"] = comparison
    print_result(res, console)
    if comparison is not None:
        print_comparison(comparison, console)
    if to_err:
        from anyecg_edge.jsonsafe import dumps

        click.echo(dumps(res, indent=1, default=str))
    elif json_out is not None:
        console.print(f"JSON → {write_json(res, json_out)}")
    if report_dir is not None:
        from anyecg_edge.benchmarks.report import write_report

        files = write_report(res, report_dir)
        console.print(
            f"report → {files['html']} ({len(files['png'])} PNG plots, Markdown {files['md']})"
        )
    errors = [r for r in res["rows"] if r.get("error")]
    if errors:
        console.print(f"[red]{len(errors)} row(s) failed[/]")
        sys.exit(1)
    if fail_on_regression and comparison is not None and comparison["regressions"]:
        sys.exit(1)


# The single-stage benchmarks under benchmarks/ (each keeps its own argparse options; this
# command is their entry point in the one CLI; `python -m anyecg_edge.benchmarks.X` works too).
BENCH_TOOLS = {
    "runtime": ("bench_runtime", "one model's latency: torch vs ONNX Runtime vs LiteRT, fp32/int8"),
    "preprocess": ("bench_preprocess", "preprocessing per window: fast path vs the authors' chain"),
    "stream": ("bench_stream", "streaming soak: hours of signal, memory sampled throughout"),
    "corpus": ("bench_corpus", "corpus build throughput and peak memory"),
    "compare": ("compare", "two bench JSON results: regressions, improvements"),
    "report": ("report", "a bench JSON -> report.md, report.html and PNG plots"),
    "gpu-lora": ("gpu_lora_throughput", "ECGFounder LoRA training throughput on one GPU"),
    "soak-record": ("soak_record", "stream --record soak: simulated hours, RSS, recording checked"),
}
_TOOLS_HELP = "\b\nTools:\n" + "\n".join(
    f"  {name:<11} {text}" for name, (_, text) in BENCH_TOOLS.items()
)


@click.command(
    "bench-tool",
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
    epilog=_TOOLS_HELP,
)
@click.argument("argv", nargs=-1, type=click.UNPROCESSED, metavar="TOOL [ARGS]...")
@click.pass_context
def bench_tool(ctx: click.Context, argv: tuple[str, ...]) -> None:
    """One single-stage benchmark (`anyecg-edge bench-tool TOOL --help` for its options)."""
    from importlib import import_module

    if not argv or argv[0] in ("-h", "--help"):
        click.echo(ctx.get_help())
        return
    tool, *args = argv
    if tool not in BENCH_TOOLS:
        raise click.BadParameter(
            f"{tool!r}: expected one of {', '.join(BENCH_TOOLS)}", param_hint="'TOOL'"
        )
    module = import_module(f"anyecg_edge.benchmarks.{BENCH_TOOLS[tool][0]}")
    status = module.main(args)
    if isinstance(status, int) and status:  # (some mains return their result instead)
        sys.exit(status)


COMMANDS = [bench, bench_tool]
