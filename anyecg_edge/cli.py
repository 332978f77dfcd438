"""`anyecg-edge`: one CLI for the whole path (data -> train -> export -> device).

Heavy dependencies (torch, peft, onnx, wfdb) are imported inside the commands that need
them, so the device install runs `predict`/`stream` without them.
"""

from __future__ import annotations

import logging

import click

from anyecg_edge import __version__
from anyecg_edge.commands._group import EXIT_CODES, Group, exit_at_once_on_signals, set_verbosity

# Third-party loggers that warn at import about what a user cannot act on (torchao's optional
# CUDA/Triton kernels, torch's pytree enum registration, pulled in by peft and litert-torch):
# set before those libraries import; -v brings them back.
_IMPORT_NOISE = ("torchao", "torch.utils._pytree")


def _setup_logging(verbose: int, quiet: bool) -> None:
    """-q: warnings and errors only. Default: the project's own INFO lines, other libraries'
    warnings (onnxruntime's "Performing symbolic shape inference..." is not the user's
    business). -v: every library's INFO too; -vv: DEBUG everywhere."""
    own = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    others = logging.WARNING if quiet or not verbose else own
    logging.basicConfig(level=others, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("anyecg_edge").setLevel(own)
    if not verbose:
        for name in _IMPORT_NOISE:
            logging.getLogger(name).setLevel(logging.ERROR)


_EPILOG = "\b\nExit status:\n" + "\n".join(
    f"  {code:>3}  {text}" for code, text in EXIT_CODES.items()
)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]}, epilog=_EPILOG)
@click.version_option(__version__, prog_name="anyecg-edge")
@click.option("-v", "--verbose", count=True, help="More logging (-vv: debug, full tracebacks).")
@click.option(
    "-q", "--quiet", is_flag=True, help="Only warnings and errors (and no progress bars)."
)
@click.option(
    "--no-progress",
    is_flag=True,
    help="No progress bars (they go to stderr, and only when it is a terminal).",
)
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool, no_progress: bool) -> None:
    """AnyECG-Edge: lab-value estimates from one ECG lead, from GPU training to the wearable.

    Outputs are research estimates with calibration and uncertainty, never diagnoses.
    """
    _setup_logging(verbose, quiet)
    set_verbosity(verbose)
    ctx.obj = {"quiet": quiet, "verbose": verbose, "no_progress": no_progress}


def _register() -> None:
    # Each area's commands live in anyecg_edge/commands/<area>.py; none imports torch at
    # module level, so `--help` and the device commands work on a device install.
    from anyecg_edge.commands import bench, ble, data, demo, export, predict, stream, train

    for module in (data, train, export, predict, stream, ble, bench, demo):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main() -> None:
    """The process entry point (`anyecg-edge`, `python -m anyecg_edge[.cli]`)."""
    try:
        cli(prog_name="anyecg-edge")
    finally:
        exit_at_once_on_signals()


# `python -m anyecg_edge.cli ...` is the form the torchrun lines (README, demo) launch; without
# this guard that module import defined the group and exited 0 having run nothing.
if __name__ == "__main__":
    main()
