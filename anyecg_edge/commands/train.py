"""`anyecg-edge train ...` and `evaluate`: the GPU stage (issue 5).

torch, peft and the training package are imported inside the command bodies: this module
must import on a device install (no torch) so that `--help` works everywhere.
Multi-GPU / multi-node: launch the same command line with torchrun, e.g.
``torchrun --nproc_per_node 8 -m anyecg_edge.cli train lora ...`` (gloo on CPU).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import click

from anyecg_edge.commands._group import Group
from anyecg_edge.commands._train_options import (
    DIR,
    EXISTING_DIR,
    TORCH_THREADS,
    apply_config,
    cli_options,
    main_process,
    record_cli,
    train_config,
    training_options,
)
from anyecg_edge.commands._types import (
    Number,
    all_cores,
    count,
    emit_json,
    human_echo,
    json_option,
    json_to_stdout,
    positive,
    refuse_clobber,
)
from anyecg_edge.progress import progress_enabled, progress_session


@contextlib.contextmanager
def _torch_threads(n: int | None):
    """Set torch's intra-op threads for one command, restoring them after (in-process use).
    Default all cores, except under torchrun (or any OMP_NUM_THREADS), whose per-process
    setting stands: N processes with all cores each would thrash."""
    if n is None:
        if os.environ.get("OMP_NUM_THREADS"):
            yield
            return
        n = all_cores()
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# What a training run writes at the top of its --out folder.
_RUN_MARKERS = ("model.pt", "checkpoints", "train_config.json", "metrics.json")


def _refuse_used_out(out: Path, resume: bool) -> None:
    """A second run into a used --out replaced the first one's model and metrics and left
    its checkpoints, which a later --resume then picked up. Every rank checks before any
    writes (torchrun ranks meet in the process group set-up, after this)."""
    if resume or not out.is_dir():
        return
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    if any(name in entries for name in _RUN_MARKERS):
        raise click.ClickException(
            f"--out {out}: holds a training run ({', '.join(n for n in _RUN_MARKERS if n in entries)}); "
            "pass --resume to continue it, or choose a new --out"
        )
    raise click.ClickException(
        f"--out {out}: is not empty ({len(entries)} entries, e.g. {entries[0]!r}) and holds no "
        "training run; choose a new or empty folder"
    )


def _labs(text: str | None) -> list[str] | None:
    if text is None:
        return None
    labs = [t.strip() for t in text.split(",") if t.strip()]
    if not labs:
        raise click.BadParameter("expected comma-separated lab keys", param_hint="--labs")
    return labs


def _report(result: dict[str, Any], out: Path, json_out: Path | None = None) -> None:
    if not main_process():
        return
    emit_json(result, json_out)
    echo = human_echo(json_out)
    best = result.get("best_val_mean_auroc")
    echo(
        f"trainable parameters: {result['trainable_params']:,} of {result['total_params']:,} "
        f"({result['trainable_pct']:.2f} %)"
    )
    echo(
        f"{result['steps']} steps ({result['epochs_completed']} epochs"
        f"{', stopped early' if result['stopped_early'] else ''}); "
        + (
            f"best val mean AUROC {best:.4f} at step {result['best_step']}; "
            if best is not None
            else f"kept the last state ({result.get('selection') or 'val metric undefined'}); "
        )
        + f"{result['segments_per_s_median'] or 0:.1f} segments/s training "
        f"({result['segments_per_s_overall']:.1f}/s with evaluations and checkpoints)"
        + (
            f"; GPU memory {result['gpu_mem_max_mib']:.0f} MiB"
            if "gpu_mem_max_mib" in result
            else ""
        )
    )
    echo(f"wrote {out}/model.pt, metrics.json, train_config.json")


@click.group(cls=Group)
def train() -> None:
    """GPU stage: LoRA fine-tuning of ECGFounder and distillation into a student."""


@train.command("lora")
@click.option(
    "--init",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="ECGFounder checkpoint in the authors' format (the frozen base).",
)
@click.option(
    "--from-hub",
    is_flag=True,
    help="Download the released 1-lead ECGFounder checkpoint from the model hub "
    "(huggingface_hub, network needed) and use it as --init. Opt-in; never used in tests.",
)
@click.option(
    "--arch",
    default=None,
    help="Registry model (ecgfounder, net1d-tiny, ...): random base, or the --init architecture "
    "(detected when omitted).",
)
@click.option("--rank", type=count(1, 4096), default=8, show_default=True, help="LoRA rank.")
@click.option("--alpha", type=positive(), default=16.0, show_default=True, help="LoRA alpha.")
@click.option(
    "--dropout", type=Number(0.0, 1.0, max_open=True), default=0.0, show_default=True,
    help="LoRA dropout.",
)  # fmt: skip
@click.option(
    "--target-modules",
    default=None,
    help="Regex over module names, or comma-separated name suffixes "
    "(default: the 1x1 convs conv1/conv3 and the SE linears; the head is always trained).",
)
@click.option("--full", is_flag=True, help="Train every weight (no adapter): pretraining/baseline.")
@click.option("--keep-head", is_flag=True, help="Keep the --init head when its size fits.")
@click.option(
    "--merge", is_flag=True, help="Also write merged.pth, a plain authors'-format checkpoint."
)
@training_options({"epochs": 10, "batch_size": 256, "lr": 1e-3})
@click.pass_context
def train_lora(ctx: click.Context, **kw: Any) -> None:
    """LoRA fine-tune ECGFounder (peft) on the lab catalog."""
    apply_config(ctx, kw, "lora")
    if kw["full"]:
        # --full trains every weight: the adapter's options would be silently ignored.
        given = [
            f"--{name.replace('_', '-')}"
            for name in ("rank", "alpha", "dropout", "target_modules")
            if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
        ]
        if given:
            verb = "applies" if len(given) == 1 else "apply"
            raise click.UsageError(
                f"{', '.join(given)} only {verb} to the LoRA adapter; --full trains every "
                "weight without one"
            )
    refuse_clobber(kw["out"], [kw["corpus"], kw["init"]], "--out")
    refuse_clobber(kw["json_out"], [kw["corpus"], kw["init"]], "--json")
    _refuse_used_out(kw["out"], kw["resume"])
    from anyecg_edge.training.lora import (
        DEFAULT_TARGET_MODULES,
        LoraRun,
        LoraSettings,
        parse_target_modules,
        train_lora,
    )

    if kw.pop("from_hub"):
        if kw["init"] is not None:
            raise click.UsageError("give either --init or --from-hub, not both")
        from anyecg_edge.training.ecgfounder import download_ecgfounder

        kw["init"] = download_ecgfounder(leads=1)
    if kw["init"] is None and kw["arch"] is None:
        raise click.UsageError(
            "give --init CHECKPOINT (pretrained base) or --arch NAME (random base)"
        )
    targets = (
        parse_target_modules(kw["target_modules"])
        if kw["target_modules"]
        else DEFAULT_TARGET_MODULES
    )
    settings = LoraSettings(
        rank=kw["rank"], alpha=kw["alpha"], dropout=kw["dropout"], target_modules=targets
    )
    run = LoraRun(
        corpus=str(kw["corpus"]),
        out=str(kw["out"]),
        init=None if kw["init"] is None else str(kw["init"]),
        arch=kw["arch"],
        labs=_labs(kw["labs"]),
        settings=settings,
        full=kw["full"],
        keep_head=kw["keep_head"],
        merge=kw["merge"],
    )
    options = cli_options(kw)
    with _torch_threads(kw["threads"]), progress_session(_progress(kw)):
        result = train_lora(run, train_config(kw), resume=kw["resume"])
    record_cli(kw["out"], "lora", options)
    _report(result, kw["out"], kw["json_out"])
    if main_process() and "merge_max_rel_error" in result:
        human_echo(kw["json_out"])(
            f"adapter saved in {kw['out']}/adapter; merged == adapter model "
            f"(max rel. error {result['merge_max_rel_error']:.2e})"
        )


@train.command("distill")
@click.option(
    "--teacher",
    type=EXISTING_DIR,
    default=None,
    help="Teacher run folder (its model.pt), e.g. from `train lora`. Required unless "
    "--config gives it.",
)
@click.option("--student", default="student-s", show_default=True, help="Registry student model.")
@click.option(
    "--temperature", type=positive(), default=2.0, show_default=True,
    help="Softmax/sigmoid temperature of the soft targets.",
)  # fmt: skip
@click.option(
    "--alpha",
    type=Number(0.0, 1.0),
    default=0.5,
    show_default=True,
    help="Weight of the label loss; 1 - alpha goes to matching the teacher.",
)
@click.option(
    "--feature-weight",
    type=Number(0.0),
    default=0.0,
    show_default=True,
    help="Weight of feature matching (student features -> teacher features, MSE); 0: off.",
)
@click.option(
    "--qat-steps",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Quantization-aware fine-tuning steps after distillation (fake int8 weights and "
    "activations, as the int8 exports quantize); 0: off.",
)
@click.option(
    "--qat-lr",
    type=positive(),
    default=None,
    help="Learning rate of the QAT steps (default: a tenth of --lr).",
)
@training_options({"epochs": 20, "batch_size": 256, "lr": 3e-3})
@click.pass_context
def train_distill(ctx: click.Context, **kw: Any) -> None:
    """Distill a LoRA teacher into a small edge student."""
    apply_config(ctx, kw, "distill")
    if kw.get("teacher") is None:
        raise click.UsageError("Missing option '--teacher' (or --config RUN/train_config.json)")
    refuse_clobber(kw["out"], [kw["corpus"], kw["teacher"]], "--out")
    refuse_clobber(kw["json_out"], [kw["corpus"], kw["teacher"]], "--json")
    _refuse_used_out(kw["out"], kw["resume"])
    from anyecg_edge.training.distill import DistillRun, train_distill

    run = DistillRun(
        teacher=str(kw["teacher"]),
        corpus=str(kw["corpus"]),
        out=str(kw["out"]),
        student=kw["student"],
        labs=_labs(kw["labs"]),
        temperature=kw["temperature"],
        alpha=kw["alpha"],
        feature_weight=kw["feature_weight"],
        qat_steps=kw["qat_steps"],
        qat_lr=kw["qat_lr"],
    )
    options = cli_options(kw)
    with _torch_threads(kw["threads"]), progress_session(_progress(kw)):
        result = train_distill(run, train_config(kw), resume=kw["resume"])
    record_cli(kw["out"], "distill", options)
    _report(result, kw["out"], kw["json_out"])
    if main_process():
        echo = human_echo(kw["json_out"])
        echo(
            f"student {kw['student']}: {result['student_params']:,} parameters, "
            f"{result['student_macs'] / 1e6:.2f} M MACs per window"
        )
        w = result["loss_weights"]
        echo(
            f"loss weights: labels {w['labels']:g}, teacher soft targets "
            f"{w['teacher_soft_targets']:g} (T={w['temperature']:g}), features {w['features']:g}"
        )
        f = result.get("fidelity")
        if f:
            echo(
                f"fidelity to the teacher on {f['n_windows']} {f['split']} windows: AUROC vs "
                f"the teacher's calls {_fmt_opt(f['mean_auroc_vs_teacher'])} (mean over labs, "
                f"min {_fmt_opt(f['min_auroc_vs_teacher'])}), mean |dp| {f['mean_abs_dp']:.3f}, "
                f"call agreement {_fmt_opt(f['call_agreement'])}"
            )


def _progress(kw: dict[str, Any]) -> bool:
    return main_process() and progress_enabled(kw["no_progress"])


def _fmt_opt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


@click.command("evaluate")
@click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path, exists=True),
    required=True,
    help="A run folder (its model.pt) or a model.pt file.",
)
@click.option("--corpus", type=EXISTING_DIR, required=True, help="Corpus folder (data build).")
@click.option(
    "--split", type=click.Choice(["train", "val", "test"]), default="test", show_default=True,
    help="Corpus split to score (test: the held-out patients).",
)  # fmt: skip
@json_option("the evaluation (per-lab AUROC, CIs, calibration, buckets)")
@click.option(
    "--out",
    "out_dir",
    type=DIR,
    default=None,
    help="Write everything here: evaluation.json and the report (= --json "
    "OUT/evaluation.json --report OUT/report). --out or --json is required.",
)
@click.option(
    "--report",
    type=DIR,
    default=None,
    help="Folder for the PNG/HTML report (default: OUT/report with --out, else next to the "
    "--json file, <name>_report; none with --json -).",
)
@click.option("--no-report", is_flag=True, help="Write only the JSON.")
@click.option(
    "--labs", default=None, help="Comma-separated lab keys (default: all of the model's)."
)
@click.option(
    "--bootstrap",
    type=count(0, 1_000_000),
    default=1000,
    show_default=True,
    help="Bootstrap resamples (0: no CIs).",
)
@click.option("--seed", type=count(0), default=0, show_default=True, help="Seed of the bootstrap.")
@click.option(
    "--batch-size", type=count(1, 1 << 20), default=256, show_default=True,
    help="Windows per forward pass.",
)  # fmt: skip
@click.option(
    "--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
    help="Where the model runs.",
)  # fmt: skip
@TORCH_THREADS
@click.option(
    "--truth",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="A synthetic cohort's truth.json: adds planted/unplanted means to the summary.",
)
@click.option(
    "--min-visits",
    type=click.IntRange(min=1),
    default=None,
    help="Abnormal and normal visits a lab needs in the split to be scored "
    "(default: MIN_VISITS_PER_CLASS, 5); fewer: reported as insufficient.",
)
def evaluate(**kw: Any) -> None:
    """Per-lab AUROC with bootstrap CIs, calibration and the paper's buckets.

    Exits with an error, writing nothing, when the split can score no lab.
    """
    if kw["out_dir"] is not None:
        kw["json_out"] = kw["json_out"] or kw["out_dir"] / "evaluation.json"
        kw["report"] = kw["report"] or kw["out_dir"] / "report"
    if kw["json_out"] is None:
        raise click.UsageError("give --out DIR or --json PATH|- (where the evaluation goes)")
    refuse_clobber(kw["json_out"], [kw["model_path"], kw["truth"]], "--json")
    refuse_clobber(kw["report"], [kw["model_path"], kw["corpus"]], "--report")
    from anyecg_edge.training.evaluate import (
        MIN_VISITS_PER_CLASS,
        EvaluationError,
        evaluate_model,
        no_lab_evaluated,
        write_json,
        write_report,
    )

    with _torch_threads(kw["threads"]), progress_session(progress_enabled()):
        result = evaluate_model(
            kw["model_path"],
            kw["corpus"],
            kw["split"],
            labs=_labs(kw["labs"]),
            n_boot=kw["bootstrap"],
            seed=kw["seed"],
            batch_size=kw["batch_size"],
            device=kw["device"],
            truth=kw["truth"],
            min_visits=kw["min_visits"] or MIN_VISITS_PER_CLASS,
        )
    failure = no_lab_evaluated(result)
    if failure:
        raise EvaluationError(f"{kw['corpus']}: {failure}")
    if json_to_stdout(kw["json_out"]):
        emit_json(result, "-")
    else:
        write_json(result, kw["json_out"])
    echo = human_echo(kw["json_out"])
    s = result["summary"]
    mean = s["mean_auroc"]
    echo(
        f"{s['n_labs_evaluated']} of {s['n_labs']} labs evaluated on {s['n_segments']} segments "
        f"({s['n_visits']} visits): mean AUROC {'n/a' if mean is None else f'{mean:.3f}'}; "
        + ", ".join(f"{b}: {n}" for b, n in s["buckets"].items())
    )
    if s["labs_insufficient"]:
        echo(
            f"insufficient (fewer than {s['min_visits_per_class']} abnormal or normal visits, "
            f"not scored): {', '.join(s['labs_insufficient'])}"
        )
    if "truth" in s:
        t = s["truth"]
        echo(
            "planted labs mean AUROC "
            + ("n/a" if t["planted_mean_auroc"] is None else f"{t['planted_mean_auroc']:.3f}")
            + ", unplanted "
            + ("n/a" if t["unplanted_mean_auroc"] is None else f"{t['unplanted_mean_auroc']:.3f}")
        )
    if not json_to_stdout(kw["json_out"]):
        echo(f"wrote {kw['json_out']}")
    report_dir = kw["report"]
    if report_dir is None and not json_to_stdout(kw["json_out"]):
        report_dir = kw["json_out"].with_name(kw["json_out"].stem + "_report")
    if not kw["no_report"] and report_dir is not None:
        echo(f"wrote {write_report(result, report_dir)}")


COMMANDS = [train, evaluate]
