"""`make mutate`: mutation testing (mutmut 3) of the modules that decide correctness.

Each group of modules is mutated against its own fast test files only, in a staging copy
under build/mutate/<group>/ laid out as the installed package (mutmut names a mutant by
its file path, which must be the module's import name: firmware_bridge/ ->
anyecg_edge/firmware_bridge/ ...). The working tree is never touched.

    python tests/mutate.py [GROUP ...] [--report benchmarks/results/mutation]
    python tests/mutate.py GROUP --retest        # only last run's survivors, today's tests
    python tests/mutate.py GROUP --retest --extend-sample 13579   # grow a sampled run

writes <report>.json (per group: counts, survivors) and <report>.md (the table, survivors
with the one-line justification from tests/mutation_survivors.json: by mutant name, or by a
regex over the mutant's diff for a class of equivalent mutants). Groups already in the
JSON and not named on the command line are kept, so groups can be run one at a time.
It nices mutmut to 15 itself (run it without an outer `nice`).
mutmut mutates code inside functions and methods only, not module-level constants (the
quality gate's limits are probed at their boundaries by tests/test_gate_limits.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {"firmware_bridge", "training", "quantization", "benchmarks"}  # -> anyecg_edge/<name>


def _codec_paths() -> list[str]:
    # The wearable codecs: firmware_bridge/devices/ once they moved there (issue 17), else
    # the flat modules.
    names = ("polar", "movesense", "anyecg")
    devices = [f"firmware_bridge/devices/{n}.py" for n in names]
    if all((ROOT / p).is_file() for p in devices):
        return devices
    return [f"firmware_bridge/{n}.py" for n in names]


# group -> (modules, pytest selection)
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "signal": (
        ["anyecg_edge/signal/quality.py", "anyecg_edge/signal/preprocess.py"],
        [
            "tests/test_signal.py",
            "tests/test_gate_limits.py",
            "tests/test_oracle_independence.py",
            "tests/test_mutation_signal.py",
        ],  # fmt: skip
    ),
    # (the C encoder's tests compile firmware_bridge/c from the repository layout: left out)
    "codecs": (
        _codec_paths(),
        ["tests/test_mutation_codecs.py", "tests/test_codecs.py", "-k", "not sequencer and not c_"],
    ),
    "sequencer": (
        ["firmware_bridge/sequencer.py"],
        ["tests/test_mutation_sequencer.py", "tests/test_reorder.py"]
        + [
            f"tests/test_codecs.py::{t}"
            for t in (
                "test_sequencer_exactly_once",
                "test_sequencer_exactly_once_random_faults",
                "test_truncated_frames_are_gaps_never_stitched",
                "test_random_cuts_with_drops_and_reordering_exactly_once",
                "test_anyecg_stream_with_garbage_and_corruption",
            )
        ]
        + [
            f"tests/test_hostile.py::{t}"
            for t in (
                "test_a_stall_at_the_end_of_a_session_is_reported",
                "test_a_timestamp_beyond_the_host_clock_is_a_clock_jump_not_a_gap",
                "test_lost_frames_are_not_counted_as_reordered",
                "test_lost_frames_within_the_host_clock_stay_a_gap_of_their_samples",
            )
        ],  # fmt: skip
    ),
    "parity": (["quantization/parity.py"], ["tests/test_parity.py"]),
    # runtime/manifest.py re-exports what runtime/base.py defines (since fe57eb7): the
    # manifest functions there are mutated (ONLY_FUNCTIONS), not the rest of base.py.
    "manifest": (["anyecg_edge/runtime/base.py"], ["tests/test_mutation_manifest.py"]),
    "calibration": (["training/calibration.py"], ["tests/test_calibration.py"]),
}


# group -> the only functions mutated (mutmut name patterns), where a module holds more.
# codecs: the wearable codecs are the module-level encode/decode/parse functions, the
# profiles' decode and the simulated wearables' frame encoders. The GATT peripheral
# simulation and the profiles' connection start-up (start/stop/_command) share those
# modules since issue 17 but are no codec: test_ble_sim / test_ble_failures cover them
# end to end (minutes a run, not in a mutation selection).
ONLY_FUNCTIONS = {
    "manifest": ["*.x_manifest_path__mutmut_*", "*.x_parity_path__mutmut_*",
                 "*.x_load_manifest__mutmut_*"],
    "codecs": ["*.devices.*.x_*__mutmut_*"] + [
        f"*ǁ{cls}ǁ{meth}__mutmut_*"
        for cls, meth in (
            ("ControlResponse", "*"), ("AnyEcgConfig", "*"),
            ("PolarH10Profile", "__init__"), ("PolarH10Profile", "decode"),
            ("MovesenseProfile", "__init__"), ("MovesenseProfile", "decode"),
            ("AnyEcgProfile", "__init__"), ("AnyEcgProfile", "decode"),
            ("AnyEcgProfile", "describe"),
            ("PolarH10", "*"), ("Movesense", "*"), ("AnyEcgWearable", "*"),
        )
    ],
}  # fmt: skip


# group -> what of its modules is mutated, where not all (ONLY_FUNCTIONS), for the report
SCOPE = {"manifest": "manifest functions", "codecs": "codec functions"}


def _staged(path: str) -> str:
    top = path.split("/", 1)[0]
    return f"anyecg_edge/{path}" if top in MAPPED else path


def _stage(group: str, modules: list[str], selection: list[str]) -> Path:
    stage = ROOT / "build" / "mutate" / group
    shutil.rmtree(stage, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "mutants")
    shutil.copytree(ROOT / "anyecg_edge", stage / "anyecg_edge", ignore=ignore)
    for name in sorted(MAPPED):
        shutil.copytree(ROOT / name, stage / "anyecg_edge" / name, ignore=ignore)
    shutil.copytree(ROOT / "tests", stage / "tests", ignore=ignore)
    # Tests that read data files by their repository path (firmware_bridge/PROFILE.md).
    shutil.copytree(ROOT / "firmware_bridge", stage / "firmware_bridge", ignore=ignore)
    _write_config(stage, modules, selection)
    return stage


def _write_config(stage: Path, modules: list[str], selection: list[str]) -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    config = {
        "source_paths": ["anyecg_edge"],
        "only_mutate": [_staged(m) for m in modules],
        "pytest_add_cli_args_test_selection": selection,
        "pytest_add_cli_args": ["-p", "no:cacheprovider", "-q"],
        "use_git_change_detection": False,
        "also_copy": ["firmware_bridge"],
    }
    lines = ["", "[tool.mutmut]"] + [f"{k} = {json.dumps(v)}" for k, v in config.items()]
    (stage / "pyproject.toml").write_text(pyproject + "\n".join(lines) + "\n")


def _grow_selection(stage: Path, modules: list[str], selection: list[str]) -> None:
    """Give a retest the group's current test files. mutmut would take any change of the
    test selection for a reason to forget every result; test files only added keep the
    old tests' mapping valid (the new tests' coverage is collected as new tests), so the
    stored fingerprint is moved to the grown selection. Anything else: start afresh."""
    stats_path = stage / "mutants" / "mutmut-stats.json"
    stats = json.loads(stats_path.read_text())
    fp = stats.get("config_fingerprint", {})
    if fp.get("test_selection") == _fingerprint(selection):
        return
    text = (stage / "pyproject.toml").read_text()
    m = re.search(r"^pytest_add_cli_args_test_selection = (.+)$", text, re.M)
    old = json.loads(m.group(1)) if m else None
    if old is None or fp.get("test_selection") != _fingerprint(old) or old != selection[: len(old)]:
        raise SystemExit(f"Error: {stage}: the test selection changed beyond added files; "
                         "run the group without --retest")  # fmt: skip
    _write_config(stage, modules, selection)
    fp["test_selection"] = _fingerprint(selection)
    stats_path.write_text(json.dumps(stats))


def _fingerprint(selection: list[str]) -> str:
    # mutmut 3.8's Config.config_fingerprint()["test_selection"]
    return hashlib.sha256(repr(tuple(selection)).encode()).hexdigest()[:12]


def _results(stage: Path) -> dict[str, str]:
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("mutmut")), "results", "--all", "true"],
        cwd=stage, capture_output=True, text=True, check=True,
    )  # fmt: skip
    out = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"\s*(\S+): (.+)$", line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def _diff(stage: Path, mutant: str) -> str:
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("mutmut")), "show", mutant],
        cwd=stage, capture_output=True, text=True,
    )  # fmt: skip
    changed = [
        ln for ln in proc.stdout.splitlines()
        if ln[:1] in "+-" and not ln.startswith(("+++", "---"))
    ]  # fmt: skip
    return " | ".join(ln.strip() for ln in changed)[:300]


def _retest_names(stage: Path) -> list[str]:
    """The mutants of the last run in ``stage`` that were not killed."""
    return [m for m, st in _results(stage).items() if st in ("survived", "no tests")]


def _sample_digits(note: str | None) -> str:
    m = re.search(r"\*\[(\d+)\]", note or "")
    return m.group(1) if m else "0123456789"


def _sample_note(digits: str) -> str | None:
    digits = "".join(sorted(set(digits)))
    if digits == "0123456789":
        return None
    return f"mutants numbered *[{digits}] ({len(digits)} in 10)"


def run_group(
    group: str,
    sample: str | None = None,
    retest: dict | None = None,
    extend: str | None = None,
    only: list[str] | None = None,
) -> dict:
    """Mutate one group; ``sample`` (digits, e.g. "0"): only the mutants whose number ends
    in one of them (a systematic 1-in-10 sample per digit, over every function).

    ``retest`` (the group's previous report): reuse its staging copy, bring in the
    current tests, and run again only the mutants that were not killed (new tests
    killing survivors, without re-running the whole group). The source must be unchanged
    since that run: a changed module is staged and mutated afresh instead.

    ``extend`` (digits, with ``retest``): run the mutants of these digits as well, in the
    same staging copy, so a sampled group grows to a full run in steps. ``only`` (name
    patterns, with ``retest``): re-run only the survivors that match.
    """
    modules, selection = GROUPS[group]
    stage = ROOT / "build" / "mutate" / group
    names: list[str] = []
    reuse = (
        retest is not None
        and (stage / "mutants").is_dir()
        and all((stage / _staged(m)).read_bytes() == (ROOT / m).read_bytes() for m in modules)
    )
    if reuse and extend:
        names = [f"*__mutmut_*[{extend}]"]
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(ROOT / "tests", stage / "tests", ignore=ignore, dirs_exist_ok=True)
        _grow_selection(stage, modules, selection)
        sample = None
    elif reuse:
        names = [
            n for n in _retest_names(stage) if not only or any(fnmatch(n, p) for p in only)
        ]  # fmt: skip
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(ROOT / "tests", stage / "tests", ignore=ignore, dirs_exist_ok=True)
        _grow_selection(stage, modules, selection)
        sample = None
        if not names:
            return retest
    else:
        stage = _stage(group, modules, selection)
    env = dict(os.environ)
    data = (ROOT.parent / "shared" / "data").resolve()
    if data.is_dir():
        env.setdefault("ANYECG_DATA", str(data))
    env.pop("ANYECG_REQUIRE_DATA", None)
    t0 = time.monotonic()
    proc = subprocess.run(
        # nice 15 in all (not 15 more when make or the caller already niced it)
        ["nice", "-n", str(max(0, 15 - os.nice(0))),
         str(Path(sys.executable).with_name("mutmut")), "run",
         "--max-children", os.environ.get("MUTATE_CHILDREN", "1"),
         *(names or ONLY_FUNCTIONS.get(group, [f"*__mutmut_*[{sample}]"] if sample else []))],
        cwd=stage, env=env, capture_output=True, text=True,
    )  # fmt: skip
    wall_s = time.monotonic() - t0
    (stage / "mutmut-run.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-1500:]
        raise SystemExit(f"Error: mutmut run for {group} failed ({proc.returncode}):\n{tail}")
    status = _results(stage)
    per_module: dict[str, dict[str, int]] = {}
    survivors = []
    for mutant, st in sorted(status.items()):
        if st == "not checked":  # outside the sample
            continue
        module = next(
            (m for m in modules if mutant.startswith(_staged(m)[:-3].replace("/", ".") + ".")),
            "?",
        )
        counts = per_module.setdefault(module, {})
        counts[st] = counts.get(st, 0) + 1
        if st not in ("killed", "timeout"):
            survivors.append({"mutant": mutant, "status": st, "diff": _diff(stage, mutant)})
    if names:  # a retest keeps the first run's scope (or extends it) and adds its time
        prev = retest.get("sample") if retest else None
        sample_note = _sample_note(_sample_digits(prev) + (extend or "")) if prev else None
        wall_s += retest.get("wall_s", 0.0) if retest else 0.0
    else:
        sample_note = None if sample is None else _sample_note(sample)
    return {
        "modules": modules,
        "sample": sample_note,
        "tests": selection,
        "wall_s": round(wall_s, 1),
        "per_module": per_module,
        "survivors": survivors,
    }


def _rate(counts: dict[str, int]) -> tuple[int, int]:
    killed = counts.get("killed", 0) + counts.get("timeout", 0)
    return killed, sum(counts.values())


def write_report(report: dict, base: Path) -> None:
    base.parent.mkdir(parents=True, exist_ok=True)
    base.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    just_path = ROOT / "tests" / "mutation_survivors.json"
    just = json.loads(just_path.read_text()) if just_path.is_file() else {}
    by_name: dict[str, str] = just.get("mutants", {})
    patterns = [
        (p.get("field", "diff"), re.compile(p.get("diff") or p["name"]), p["why"])
        for p in just.get("patterns", [])
    ]

    def why(s: dict) -> str:
        if s["mutant"] in by_name:
            return by_name[s["mutant"]]
        field = {"diff": "diff", "name": "mutant"}
        hit = (w for f, rx, w in patterns if rx.search(s[field[f]]))
        return next(hit, "not justified")

    lines = [
        "# Mutation testing (`make mutate`, mutmut 3)",
        "",
        "Each module mutated against its own fast test files only (tests/mutate.py GROUPS).",
        "Killed includes timeouts. Survivors are justified in tests/mutation_survivors.json.",
        "mutmut mutates code inside functions and methods only: module-level constants (the",
        "quality gate's limits, the parity tolerances) are not mutated here; their boundaries",
        "are tested directly (tests/test_gate_limits.py, tests/test_parity.py).",
        "A group marked *sample* ran only the mutants whose number ends in the given digits",
        "(a systematic sample over every function), for lack of CPU time.",
        "",
        "Scope: runtime/base.py is mutated in its manifest functions only (what",
        "runtime/manifest.py re-exports). The three wearable codecs (firmware_bridge/devices/",
        "polar, movesense, anyecg) are mutated in their codec functions only: the module-level",
        "encode/decode/parse functions, the profiles' decode, the config record and the",
        "simulated wearables' frame encoders. The GATT peripheral simulation and the",
        "profiles' connection start-up (start/stop/_command) moved into the same files in",
        "issue 17; they are no codec and are tested end to end by test_ble_sim /",
        "test_ble_failures (minutes a run, outside any mutation selection).",
        "",
        "| module | tests | killed | survived | no tests | total | kill rate | unjustified |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    all_k = all_n = 0
    for group_name, group in report["groups"].items():
        for module, counts in group["per_module"].items():
            k, n = _rate(counts)
            all_k, all_n = all_k + k, all_n + n
            files = sorted({t.split("::")[0].removeprefix("tests/")
                            for t in group["tests"] if t.startswith("tests/")})  # fmt: skip
            prefix = _staged(module)[:-3].replace("/", ".") + "."
            left = sum(
                why(s) == "not justified" for s in group["survivors"]
                if s["mutant"].startswith(prefix)
            )  # fmt: skip
            if group_name in SCOPE:
                module += f" ({SCOPE[group_name]})"
            if group.get("sample"):
                module += f" (sample: {group['sample']})"
            lines.append(
                f"| {module} | {', '.join(files)} | {k} | {counts.get('survived', 0)} | "
                f"{counts.get('no tests', 0)} | {n} | {100 * k / max(n, 1):.1f} % | {left} |"
            )
    lines.append(
        f"| **all that ran** | | **{all_k}** | | | **{all_n}** | "
        f"**{100 * all_k / max(all_n, 1):.1f} %** | |"
    )
    lines += ["", "## Survivors", ""]
    for group in report["groups"].values():
        for s in group["survivors"]:
            lines.append(f"- `{s['mutant']}` ({s['status']}): `{s['diff']}` - {why(s)}")
    base.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("groups", nargs="*", default=list(GROUPS))
    ap.add_argument("--report", default=str(ROOT / "benchmarks" / "results" / "mutation"))
    ap.add_argument("--sample", help="digits: run only mutants whose number ends in one")
    ap.add_argument("--render", action="store_true", help="rewrite the .md from the .json only")
    ap.add_argument(
        "--extend-sample", metavar="DIGITS",
        help="with --retest: also run the mutants numbered *[DIGITS] in the same staging copy",
    )  # fmt: skip
    ap.add_argument(
        "--only", nargs="+", metavar="PATTERN",
        help="with --retest: only the survivors whose mutant name matches (fnmatch)",
    )  # fmt: skip
    ap.add_argument(
        "--retest", action="store_true",
        help="re-run only the last run's surviving mutants of each group, with today's tests",
    )  # fmt: skip
    args = ap.parse_args()
    unknown = [g for g in args.groups if g not in GROUPS]
    if unknown:
        raise SystemExit(f"Error: unknown group(s) {unknown}; expected some of {list(GROUPS)}")
    base = Path(args.report)
    old = base.with_suffix(".json")
    report = json.loads(old.read_text()) if old.is_file() else {"groups": {}}
    if args.render:
        write_report(report, base)
        return
    for group in args.groups:
        print(f"mutate: {group} ...", flush=True)
        prev = report["groups"].get(group) if args.retest else None
        report["groups"][group] = run_group(group, args.sample, prev, args.extend_sample, args.only)
        write_report(report, base)
        g = report["groups"][group]
        for module, counts in g["per_module"].items():
            k, n = _rate(counts)
            print(f"  {module}: {k}/{n} killed ({g['wall_s']} s)", flush=True)


if __name__ == "__main__":
    main()
