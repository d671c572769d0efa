"""`blockfl emulate --ray`: the device workers as Ray actors on a two-node Ray cluster started here.

Both Ray nodes run on this machine, on loopback addresses of their own (127.0.0.2 and 127.0.0.3:
Ray replaces 127.0.0.1 with the machine's outward address, and nothing here may leave 127.0.0.0/8),
sharing one temporary directory that names all their processes. The test stops exactly those
processes by id: `ray stop` would stop every Ray process of this user on the machine.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from coordinator.task.broker import free_port

ROOT = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).with_name("ray")
HEAD, NODE = "127.0.0.2", "127.0.0.3"


def _processes() -> dict[int, tuple[int, bytes]]:
    """Every process: its parent and its command line."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
            parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        found[int(entry)] = (parent, command)
    return found


def cluster_processes(temp: Path) -> set[int]:
    """The processes of our cluster: those whose command line names its temporary directory (the
    GCS, raylets, monitors) and all their descendants (agents, workers, actors)."""
    every = _processes()
    ours = {pid for pid, (_, command) in every.items() if str(temp).encode() in command and pid != os.getpid()}
    while grown := {pid for pid, (parent, _) in every.items() if parent in ours} - ours:
        ours |= grown
    return ours


def _kb(path: str, key: str) -> int:
    try:
        return int(next(x for x in Path(path).read_text().splitlines() if x.startswith(key)).split()[1])
    except (OSError, StopIteration):
        return 0


def memory_mb(pids: set[int]) -> dict:
    """Resident (RSS) and proportional (PSS: shared pages divided among their users) memory, in MB."""
    rss = sum(_kb(f"/proc/{pid}/status", "VmRSS:") for pid in pids)
    pss = sum(_kb(f"/proc/{pid}/smaps_rollup", "Pss:") for pid in pids)
    return {"processes": len(pids), "rss_mb": round(rss / 1024), "pss_mb": round(pss / 1024)}


def stop_cluster(temp: Path) -> None:
    """SIGKILL, as `ray stop --force` does (raylets and the GCS take over 6 s to honour SIGTERM),
    but only our cluster's processes; again for any that appeared meanwhile."""
    for _ in range(3):
        pids = cluster_processes(temp)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_state(p) != "Z" for p in pids):
            time.sleep(0.1)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


@pytest.fixture
def ray_cluster():
    """A Ray head and a second Ray node, one CPU each, no dashboard: (address, temporary directory)."""
    if importlib.util.find_spec("ray") is None or not RAY.exists():
        pytest.fail(f"Ray is not installed in {sys.prefix}: pip install -e '.[cluster]' (deploy/dev/setup.sh does)")
    temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    # Ray's workers import the project as the raylet's environment says (the venv may hold another checkout)
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": path}
    port = free_port()
    common = ["--num-cpus", "1", "--temp-dir", str(temp), "--disable-usage-stats"]
    try:
        for args in (
            ["--head", "--port", str(port), "--node-ip-address", HEAD, "--include-dashboard=false"],
            ["--address", f"{HEAD}:{port}", "--node-ip-address", NODE],
        ):
            started = subprocess.run([str(RAY), "start", *args, *common], env=env, capture_output=True, text=True,
                                     timeout=120)  # fmt: skip
            assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        yield f"{HEAD}:{port}", temp, env
    finally:
        stop_cluster(temp)
        shutil.rmtree(temp, ignore_errors=True)


def test_device_workers_run_as_ray_actors_on_both_nodes_and_agree(tmp_path, ray_cluster):
    address, temp, env = ray_cluster
    idle = memory_mb(cluster_processes(temp))
    out = tmp_path / "r"
    args = ["--ray", address, "--devices", "6", "--miners", "2", "--rounds", "2", "--initial-hashes", "20000",
            "--max-wait-ms", "4000", "--seed", "3", "--out", str(out)]  # fmt: skip
    started, busy = time.monotonic(), idle
    with open(tmp_path / "stdout", "w+") as stdout:
        emulate = subprocess.Popen([sys.executable, "-m", "coordinator.cli", "emulate", *args], cwd=ROOT, env=env,
                                   stdout=stdout, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        while emulate.poll() is None and time.monotonic() - started < 240:
            now = memory_mb(cluster_processes(temp) - set(_actors(temp)))  # Ray itself, without our actors
            busy = max(busy, now, key=lambda m: m["pss_mb"])
            time.sleep(1)
        if emulate.poll() is None:
            emulate.kill()
        returncode = emulate.wait()
        stdout.seek(0)
        result = subprocess.CompletedProcess(emulate.args, returncode, stdout.read(), "")
    seconds = time.monotonic() - started
    print(f"\nemulate --ray: {seconds:.1f}s; the Ray cluster (2 nodes) idle: {idle}; at its peak: {busy}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    print("peak MB:", report["memory"]["peak_mb"])
    assert report["ok"] and report["reached_rounds"] and report["model_hash_agreement"]["ok"]
    assert all(r["updates"] == 6 for r in report["rounds"])
    assert "in 2 Ray actors on 2 nodes" in result.stdout and "devices online: 6/6" in result.stdout
    workers = report["workers"]
    assert set(workers) == {"worker0", "worker1"}
    assert len({w["ray_node_id"] for w in workers.values()}) == 2
    assert {w["node_ip"] for w in workers.values()} == {HEAD, NODE}
    assert sorted(d for w in workers.values() for d in w["devices"]) == sorted(f"d{i}" for i in range(6))
    assert set(report["memory"]["peak_mb"]) >= {"worker0", "worker1", "miner0", "miner1", "broker"}
    assert report["options"]["ray"] == address
    deadline = time.monotonic() + 15  # the actors end with the run: what is left is the cluster itself
    while time.monotonic() < deadline and _actors(temp):
        time.sleep(0.5)
    assert not _actors(temp)


def _actors(temp: Path) -> list[int]:
    every = _processes()
    return [p for p in cluster_processes(temp) if b"AgentsActor" in every.get(p, (0, b""))[1] and _state(p) != "Z"]


def test_only_ray_workers_imports_ray():
    """The extra stays optional: the emulator without --ray never loads Ray."""
    importers = set()
    for path in [*(ROOT / "coordinator").rglob("*.py"), *(ROOT / "edge_sdk").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            if any(n.split(".")[0] == "ray" for n in names):
                importers.add(path.relative_to(ROOT).as_posix())
    assert importers == {"coordinator/emulator/ray_workers.py"}
    modules = "coordinator.cli, coordinator.emulator.run, coordinator.emulator.worker"
    code = f"import sys, {modules}; print('ray' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert loaded.stdout.strip() == "False", loaded.stderr
