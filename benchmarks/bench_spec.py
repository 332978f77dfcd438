"""bench: constants, options and model specs (``[NAME=]TARGET[@VARIANTS]``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from anyecg_edge.datadir import data_dir

FORMAT = "anyecg-edge-bench/1"
DEFAULT_DATA = data_dir()  # --data-dir / $ANYECG_DATA / beside the checkout
DEFAULT_MODELS = ("ecgfounder", "teacher", "student-s")
VARIANTS = (
    "torch-fp32",
    "onnxruntime-fp32",
    "onnxruntime-int8",
    "litert-fp32",
    "litert-int8",
    "tflite-runtime-int8",
)
# Architectures too large to be worth a LiteRT/int8 export by default (the baseline).
FOUNDATION_ARCHES = ("ecgfounder",)
FOUNDATION_VARIANTS = ("torch-fp32", "onnxruntime-fp32")
TEACHER_NAMES = ("teacher", "ecgfounder-lora")
_WINDOW_S = 10.0
_FS = 500.0


class BenchError(ValueError):
    """A bench option or model spec cannot be used (one-line message naming it)."""


# --------------------------------------------------------------------------- options


@dataclass
class BenchOptions:
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    threads: int = 1
    iterations: int | None = None  # None: auto (>= min_iterations, ~budget_s per row)
    warmup: int | None = None
    batch: int = 32
    quick: bool = False
    runtimes: list[str] | None = None
    data_dir: Path | None = None
    work_dir: Path | None = None
    accuracy: dict[str, Path] = field(default_factory=dict)
    # A corpus: every row is evaluated on its split with the row's own runtime (the
    # accuracy columns are then the file's, not its checkpoint's evaluate --json).
    corpus: Path | None = None
    truth: Path | None = None  # the cohort's truth.json: planted / unplanted means
    eval_split: str = "test"
    stream_s: float | None = None  # None: 60 s (quick: 12 s); 0: no stream session
    stream_jsonl: Path | None = None
    stream_speed: float = 20.0
    budget_s: float = 6.0
    min_iterations: int = 300
    max_iterations: int = 3000

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise BenchError(f"--threads must be >= 1, got {self.threads}")
        if self.iterations is not None and self.iterations < 1:
            raise BenchError(f"--iterations must be >= 1, got {self.iterations}")
        if self.warmup is not None and self.warmup < 0:
            raise BenchError(f"--warmup must be >= 0, got {self.warmup}")
        if self.batch < 1:
            raise BenchError(f"--batch must be >= 1, got {self.batch}")
        if self.stream_s is not None and self.stream_s < 0:
            raise BenchError(f"--stream-s must be >= 0, got {self.stream_s}")
        if not self.stream_speed > 0:
            raise BenchError(f"--stream-speed must be > 0, got {self.stream_speed}")
        for key, path in self.accuracy.items():
            if not Path(path).is_file():
                raise BenchError(f"--accuracy {key}={path}: evaluation JSON not found")
        if self.corpus is not None:
            if not (Path(self.corpus) / "index.parquet").is_file():
                raise BenchError(
                    f"--corpus {self.corpus}: no index.parquet (expected a corpus from "
                    "`anyecg-edge data build`)"
                )
            if self.accuracy:
                raise BenchError(
                    "--accuracy and --corpus: give one (with --corpus every row is evaluated "
                    "itself; --accuracy copies an evaluation file's numbers)"
                )
        if self.truth is not None:
            if self.corpus is None:
                raise BenchError("--truth needs --corpus (it labels the corpus's planted labs)")
            if not Path(self.truth).is_file():
                raise BenchError(f"--truth {self.truth}: file not found")
        if self.eval_split not in ("train", "val", "test"):
            raise BenchError(f"eval split must be train, val or test, got {self.eval_split!r}")
        if self.stream_jsonl is not None and not Path(self.stream_jsonl).is_file():
            raise BenchError(f"--stream-jsonl {self.stream_jsonl}: file not found")

    @property
    def warmup_calls(self) -> int:
        return self.warmup if self.warmup is not None else (3 if self.quick else 10)

    @property
    def stream_seconds(self) -> float:
        if self.stream_s is not None:
            return self.stream_s
        return 20.0 if self.quick else 60.0


# --------------------------------------------------------------------------- model specs


@dataclass
class ModelSpec:
    key: str  # the row's "model" name (stable across runs: --compare matches on it)
    kind: str  # arch | teacher | checkpoint | lora-run | file
    target: str  # architecture name or path
    variants: list[str] | None = None  # from "@..."; None = the kind's defaults


def split_tokens(items: Sequence[str]) -> list[str]:
    """Comma-separated and/or repeated option values -> tokens."""
    return [t.strip() for item in items for t in str(item).split(",") if t.strip()]


def match_variants(tokens: Sequence[str], candidates: Sequence[str], what: str) -> list[str]:
    """Variants named by ``tokens`` (whole names or their parts: ``int8``, ``litert``)."""
    chosen: list[str] = []
    for tok in tokens:
        t = tok.lower()
        hits = [v for v in VARIANTS if v == t or t in v.split("-") or v.startswith(t + "-")]
        if t == "tflite":  # the file type names LiteRT too
            hits = [v for v in VARIANTS if v.startswith("litert")]
        if not hits:
            raise BenchError(
                f"{what}: unknown runtime/variant {tok!r}; expected parts of {', '.join(VARIANTS)}"
            )
        chosen += [v for v in hits if v in candidates and v not in chosen]
    return [v for v in candidates if v in chosen]


def parse_model_spec(text: str) -> ModelSpec:
    """``[NAME=]TARGET[@VARIANTS]`` -> ModelSpec (see the module docstring)."""
    raw = text.strip()
    variants = None
    if "@" in raw:
        raw, _, var = raw.rpartition("@")
        variants = [v for v in var.split("+") if v]
        if not variants:
            raise BenchError(
                f"--models {text!r}: nothing after '@' (e.g. @torch or @onnxruntime-int8)"
            )
    name, sep, target = raw.partition("=")
    if not sep:
        name, target = "", raw
    name, target = name.strip(), target.strip()
    if not target:
        raise BenchError(f"--models {text!r}: empty model")
    if target.lower() in TEACHER_NAMES:
        return ModelSpec(name or "ecgfounder+lora", "teacher", "ecgfounder", variants)
    path = Path(target)
    if path.exists():
        suffix = path.suffix.lower()
        if suffix in (".onnx", ".tflite"):
            return ModelSpec(name or path.stem, "file", str(path), variants)
        if path.is_dir() and (path / "train_config.json").is_file() and (path / "adapter").is_dir():
            return ModelSpec(name or path.name, "lora-run", str(path), variants)
        if suffix in (".pt", ".pth") or (path.is_dir() and (path / "model.pt").is_file()):
            return ModelSpec(
                name or (path.name if path.is_dir() else path.stem),
                "checkpoint",
                str(path),
                variants,
            )
        raise BenchError(
            f"--models {target}: expected a .onnx/.tflite export, a .pt/.pth checkpoint, a folder "
            "with model.pt, or a LoRA run folder (train_config.json + adapter/)"
        )
    if "/" in target or target.endswith((".onnx", ".tflite", ".pt", ".pth")):
        raise BenchError(f"--models {target}: file not found")
    try:
        from anyecg_edge.training.models import list_models
    except ImportError:
        raise BenchError(
            f"--models {target}: registry architectures need torch "
            '(pip install "anyecg-edge[export]"); on a device pass exported .onnx/.tflite files'
        ) from None
    if target not in list_models():
        raise BenchError(
            f"--models {target}: not a registry model ({', '.join(list_models())}), 'teacher', "
            "or an existing file/folder"
        )
    return ModelSpec(name or target, "arch", target, variants)


def _is_foundation(arch: str | None) -> bool:
    return bool(arch) and any(str(arch).startswith(a) for a in FOUNDATION_ARCHES)


def role_of(kind: str, arch: str | None) -> str:
    if kind in ("teacher", "lora-run"):
        return "teacher"
    if _is_foundation(arch):
        return "foundation"
    if arch and str(arch).startswith("student"):
        return "student"
    return "other"
