"""The device SDK stands alone: it never imports the server side or server-only libraries."""

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
SERVER_ONLY = {"coordinator", "onnx", "sklearn", "matplotlib", "torch"}


def test_edge_sdk_source_never_imports_server_code():
    offenders = []
    for path in (ROOT / "edge_sdk").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in SERVER_ONLY]
    assert not offenders


def test_importing_every_edge_sdk_module_loads_no_server_code():
    code = (
        "import pkgutil, sys, edge_sdk\n"
        "for m in pkgutil.walk_packages(edge_sdk.__path__, 'edge_sdk.'): __import__(m.name)\n"
        f"bad = sorted(n for n in sys.modules if n.split('.')[0] in {sorted(SERVER_ONLY)!r})\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_console_scripts_are_declared():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'blockfl-device = "edge_sdk.cli:main"' in text and 'blockfl = "coordinator.cli:main"' in text


def test_every_reason_code_is_documented_in_protocol_md():
    from edge_sdk.protocol.errors import Reason

    text = (ROOT / "PROTOCOL.md").read_text()
    table = text[text.index("## 11. Reason codes") : text.index("## 12.")]
    assert [r.value for r in Reason if f"| `{r.value}` |" not in table] == []
