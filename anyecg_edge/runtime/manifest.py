"""Where a model file's manifest lives, and checks that the two belong together."""

from __future__ import annotations

from pathlib import Path

from anyecg_edge.fileio import file_sha256  # re-exported: runtime users import it here
from anyecg_edge.runtime.base import ModelError, ModelMetadata

#: Format tag written into every export manifest.
MANIFEST_FORMAT = "anyecg-edge/manifest/1"
MANIFEST_SUFFIX = ".manifest.json"
PARITY_SUFFIX = ".parity.json"


def manifest_path(model_path: str | Path) -> Path:
    """`model.onnx` -> `model.onnx.manifest.json` (the full file name is kept, so an .onnx
    and a .tflite export of the same model can sit side by side)."""
    p = Path(model_path)
    return p.with_name(p.name + MANIFEST_SUFFIX)


def parity_path(model_path: str | Path) -> Path:
    p = Path(model_path)
    return p.with_name(p.name + PARITY_SUFFIX)


def load_manifest(model_path: str | Path) -> ModelMetadata:
    """Read and check the manifest next to an exported model file.

    The manifest records the model file's sha256; a model file replaced after export (a
    different model with the old manifest's labs and thresholds) is refused.
    """
    model_path = Path(model_path)
    mpath = manifest_path(model_path)
    if not mpath.is_file():
        raise ModelError(
            f"{model_path}: its manifest {mpath.name} is missing (every `anyecg-edge export` "
            "writes one next to the model; the device needs it for lab names and thresholds)"
        )
    meta = ModelMetadata.load(mpath)
    expected = meta.extra.get("model_sha256")
    if expected is not None:
        actual = file_sha256(model_path)
        if actual != expected:
            raise ModelError(
                f"{mpath}: model_sha256 {expected[:12]}... does not match {model_path.name} "
                f"({actual[:12]}...): the model file was replaced after export"
            )
    return meta
