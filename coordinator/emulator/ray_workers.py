"""`blockfl emulate --ray ADDRESS`: the device workers as Ray actors spread over a Ray cluster.

Each actor runs the agents of one worker exactly as a worker process does (worker.serve), in a Ray
worker process on whichever node Ray places it; the broker, the miners and the observer stay on
this machine, which must itself be a node of the cluster (a driver attaches to its local raylet).

Only this module imports ray (the optional `cluster` extra). The agents read their bundles,
identities and data and write their state at the paths of their specs, and the emulator reads
their status files back: on a cluster of several machines --out must be on a filesystem every node
mounts at the same path (NFS, for instance), and --broker must name a broker every node reaches.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

try:
    import ray
except ImportError as exc:  # the extra is optional: say how to get it
    raise ImportError("--ray needs Ray: pip install 'blockfl-edge[cluster]' (or: pip install ray)") from exc

from coordinator.emulator.worker import JOIN_S, AgentSpec, serve
from edge_sdk.node.logs import JsonFormatter

ACTOR_CPUS = 0.5  # what each actor reserves at most: agents mostly wait on the network and share a training pool
START_S = 120  # how long the actors get to be placed, start and say where they run
STOP_S = JOIN_S + 5
POLL_S = 1.0  # the observer asks whether anyone died after every message: ask the actors at most this often


@ray.remote(max_restarts=0)
class AgentsActor:
    """One worker's agents. They are served in a thread of their own so that the actor still
    answers alive/peak_mb/stop (actor calls run one at a time, in another thread)."""

    def __init__(self, specs: list[dict], backend: str, log: str):
        self.specs = [AgentSpec(**s) for s in specs]
        self.stopping = threading.Event()
        # a node that does not see --out would fail on every file: refuse clearly instead (where())
        self.sees_out = all(os.path.exists(s.bundle) for s in self.specs)
        self.thread = threading.Thread(target=self._serve, args=(backend, log), name="serve", daemon=True)
        if self.sees_out:
            self.thread.start()

    def _serve(self, backend: str, log: str) -> None:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log)  # as a worker process's log: OUT/logs/workerK.log
        handler.setFormatter(JsonFormatter())
        logging.getLogger().handlers[:] = [handler]
        logging.getLogger().setLevel(logging.WARNING)
        try:
            serve(self.specs, backend, self.stopping)
        except Exception:
            logging.getLogger("blockfl.worker").exception("the agents could not start or run")

    def where(self) -> dict:
        return {
            "ray_node_id": ray.get_runtime_context().get_node_id(),
            "node_ip": ray.util.get_node_ip_address(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "devices": [s.name for s in self.specs],
            "sees_out": self.sees_out,
        }

    def alive(self) -> bool:
        return self.thread.is_alive()

    def peak_mb(self) -> float | None:
        """This process's peak resident memory (VmHWM; Linux), in MB."""
        status = Path("/proc/self/status")
        lines = status.read_text().splitlines() if status.exists() else []
        line = next((x for x in lines if x.startswith("VmHWM:")), None)
        return round(int(line.split()[1]) / 1024, 1) if line else None

    def stop(self) -> None:
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(JOIN_S)


def _absolute(spec: AgentSpec) -> AgentSpec:
    """A Ray worker does not run in our working directory: give it absolute paths."""
    a = os.path.abspath
    return replace(spec, bundle=a(spec.bundle), identity=a(spec.identity), data=a(spec.data), state=a(spec.state))


def _check_reachable(address: str) -> None:
    """ray.init retries an address where nothing listens for minutes: fail at once instead."""
    host, _, port = address.rpartition(":")
    if "://" in address or not port.isdigit():
        return  # ray://, auto: Ray's to resolve
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise RuntimeError(f"no Ray cluster at {address} ({exc}); start one with `ray start --head`") from exc


class RayWorkers:
    """The actors of one emulation, answering what Federation asks of its worker processes."""

    def __init__(self, actors: list, where: list[dict]):
        self.actors, self.names = actors, [f"worker{k}" for k in range(len(actors))]
        self.where = dict(zip(self.names, where, strict=True))
        self.stopped = False
        self._dead: list[str] = []
        self._polled = 0.0

    @classmethod
    def start(cls, address: str, agents: list[AgentSpec], count: Callable[[int], int], logs: Path) -> RayWorkers:
        """Connect to the cluster at `address`, start count(the cluster's CPUs) actors spread over its
        nodes (SPREAD) with the agents dealt round robin, and wait until every one says where it runs."""
        _check_reachable(address)
        handler = signal.getsignal(signal.SIGTERM)
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, handler)  # ray.init sets its own; keep the emulator's (stop cleanly)
        actors: list = []
        try:
            cpus = int(ray.cluster_resources().get("CPU", 0))
            n = count(cpus)
            each = int(1000 * min(ACTOR_CPUS, max(cpus, 1) / n)) / 1000  # even more actors than CPUs fit
            options = AgentsActor.options(num_cpus=each, scheduling_strategy="SPREAD")
            logs = Path(logs).resolve()
            for k in range(n):
                specs = [asdict(_absolute(a)) for a in agents[k::n]]
                actors.append(options.remote(specs, "portable", str(logs / f"worker{k}.log")))
            try:
                where = ray.get([a.where.remote() for a in actors], timeout=START_S)
            except ray.exceptions.GetTimeoutError as exc:
                raise RuntimeError(f"{n} Ray actors ({each} CPU each) did not all start in {START_S}s") from exc
            blind = sorted({w["host"] for w in where if not w["sees_out"]})
            if blind:
                raise RuntimeError(
                    f"Ray node(s) {', '.join(blind)} do not see {agents[0].bundle}: --out must be on a "
                    "filesystem every Ray node mounts at the same path"
                )
            return cls(actors, where)
        except BaseException:
            for actor in actors:
                ray.kill(actor)
            ray.shutdown()
            raise

    def nodes(self) -> int:
        return len({w["ray_node_id"] for w in self.where.values()})

    def dead(self) -> list[str]:
        """Workers whose actor died or whose agents have all stopped (asked at most every POLL_S)."""
        if self.stopped or time.monotonic() - self._polled < POLL_S:
            return self._dead
        refs = [a.alive.remote() for a in self.actors]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=2)
        dead = []
        for name, ref in zip(self.names, refs, strict=True):
            if ref in ready:  # a busy actor is not a dead one
                try:
                    alive = ray.get(ref)
                except ray.exceptions.RayError:
                    alive = False
                if not alive:
                    dead.append(name)
        self._dead, self._polled = dead, time.monotonic()
        return dead

    def peak_memory_mb(self) -> dict[str, float]:
        refs = [a.peak_mb.remote() for a in self.actors]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=10)
        peaks = {}
        for name, ref in zip(self.names, refs, strict=True):
            try:
                peak = ray.get(ref) if ref in ready else None
            except ray.exceptions.RayError:
                peak = None
            if peak is not None:
                peaks[name] = peak
        return peaks

    def stop(self) -> None:
        """Let every actor stop its agents (closing stores and connections), then end the actors."""
        if self.stopped:
            return
        self.stopped = True
        refs = [a.stop.remote() for a in self.actors]
        ray.wait(refs, num_returns=len(refs), timeout=STOP_S)
        for actor in self.actors:
            ray.kill(actor)
        ray.shutdown()
