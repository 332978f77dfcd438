"""Export stage (workstation, needs torch): ONNX / LiteRT / C-array exports, int8
calibration, manifests and parity reports. Entry point: `export.export_model`
(`anyecg-edge export`). Modules import torch and the converters lazily."""
