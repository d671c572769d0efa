"""The model package: what the coordinator compiles and every device trains with.

This module owns the format (file names, manifest version, losses); the coordinator's writer
(coordinator/models/package_writer.py) and every reader use these names. See docs/training.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MANIFEST_FORMAT = 1
MANIFEST_FILE = "manifest.json"
# manifest "files" key -> file name
GRAPH_FILES = {"forward": "forward.onnx", "train_step": "train_step.onnx", "train_epoch": "train_epoch.onnx"}
PARAMS_FILE = "params.npz"
# every file of a package, in the order the task manifest commits to their hashes
PACKAGE_FILES = (*GRAPH_FILES.values(), PARAMS_FILE, MANIFEST_FILE)
ORT_TRAINING_DIR = "ort-training"  # the official artifacts, when built (`blockfl model artifacts`)
LOSSES = ("cross-entropy", "mse", "binary-cross-entropy")
MAX_MANIFEST_BYTES = 256 * 1024  # names and shapes only; the graphs are separate files


@dataclass(frozen=True)
class ModelPackage:
    """A compiled model package as the coordinator wrote it (see manifest.json)."""

    directory: Path
    manifest: dict

    @classmethod
    def load(cls, directory: str | Path) -> ModelPackage:
        directory = Path(directory)
        if (directory / MANIFEST_FILE).stat().st_size > MAX_MANIFEST_BYTES:
            raise ValueError(f"{directory}/{MANIFEST_FILE}: over {MAX_MANIFEST_BYTES} bytes")
        text = (directory / MANIFEST_FILE).read_text()
        try:
            manifest = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"{directory}/{MANIFEST_FILE}: not JSON ({type(exc).__name__})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            found = manifest.get("format") if isinstance(manifest, dict) else None
            raise ValueError(f"{directory}/{MANIFEST_FILE}: unknown format {found!r}")
        if manifest.get("loss") not in LOSSES:
            raise ValueError(f"{directory}/{MANIFEST_FILE}: unknown loss {manifest.get('loss')!r}")
        return cls(directory, manifest)

    def path(self, key: str) -> Path:
        return self.directory / self.manifest["files"][key]

    @property
    def buffers(self) -> list[str]:
        """Model values a train step updates without the optimizer (BatchNormalization's running
        statistics); a federation averages them with the parameters."""
        return self.manifest.get("buffers", [])

    @property
    def model_names(self) -> list[str]:
        """The model a federation averages: trainable parameters, then buffers."""
        return [*self.manifest["params"], *self.buffers]

    @property
    def noise_width(self) -> int:
        """Uniform noise values per sample a train step takes (its dropout masks); 0: none."""
        return self.manifest.get("noise_width", 0)

    def initial_params(self) -> dict[str, np.ndarray]:
        """The initial model: every name in `model_names`."""
        with np.load(self.path("params")) as data:
            return {p: data[p].astype(np.float32) for p in self.model_names}

    def labels(self, labels: np.ndarray) -> np.ndarray:
        """Labels in the dtype and shape the graphs take."""
        width = self.manifest["num_outputs"]
        if self.manifest["label_dtype"] == "int64":
            labels = np.asarray(labels).reshape(-1)
            if labels.size and (
                not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= width
            ):
                raise ValueError(f"class labels must be integers in [0, {width})")
            return labels.astype(np.int64)
        labels = np.asarray(labels, dtype=np.float32)
        if labels.size != len(labels) * width:
            raise ValueError(f"labels must have {width} value(s) per sample")
        return labels.reshape(len(labels), width)

    @property
    def ort_artifacts(self) -> Path:
        return self.directory / ORT_TRAINING_DIR
