"""ORT format (.ort) copies of a model package's graphs, for ONNX Runtime Mobile and minimal builds.

Uses the converter that ships in the stock onnxruntime package
(`python -m onnxruntime.tools.convert_onnx_models_to_ort`). The train-step graphs need no
training operators, so a mobile build runs them as they are; the converter also writes the list
of operators a minimal build must include (`required_operators.config`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from edge_sdk.training.package import GRAPH_FILES

GRAPHS = tuple(GRAPH_FILES.values())


def convert_package(package_dir: str | Path) -> list[Path]:
    package_dir = Path(package_dir)
    out = package_dir / "ort"
    out.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in GRAPHS:
            shutil.copy(package_dir / name, Path(tmp) / name)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "onnxruntime.tools.convert_onnx_models_to_ort",
                "--optimization_style",
                "Fixed",
                "--output_dir",
                str(out),
                tmp,
            ],
            capture_output=True,
            text=True,
        )
    if result.returncode != 0:
        raise RuntimeError(f"ORT format conversion failed: {result.stderr[-1000:]}")
    return sorted(out.glob("*.ort")) + sorted(out.glob("*.config"))
