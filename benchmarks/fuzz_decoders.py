"""Fuzz every decoder a peer's bytes reach, and the local file readers (issue 10).

Plain-Python mutation engine: input i is built from `random.Random(f"{seed}/{i}")` alone, so
`--seed S --only I` rebuilds and re-runs just that input and prints it with its traceback. Seeds:
tests/vectors/protocol.json, plus sync, rejection and revocation messages signed by the vectors'
`Identity.from_seed` keys. Structure-aware mutations (70%) change a decoded seed (types, keys,
boundary integers, huge/empty strings and lists, deep nesting, dtypes, shapes, NaN/inf/out-of-range
floats, truncated data, swapped/duplicated/foreign updates, nested certificates and updates), then
RE-SIGN it with the signer's key; blocks get their Merkle root, often their model hash, and are
RE-MINED (the vector targets take ~64 hashes), so mutations reach the body and block rules. Raw
mutations (30%) flip, set, insert, delete, truncate, duplicate, splice seeds, insert huge CBOR heads.

Accepted and ProtocolError are fine; anything else is a CRASH, except that the file readers
(broker.json, manifest.json: local files, not peer input) may refuse with ValueError/OSError.
HANG: one call over 1 s. BLOW-UP: a tracemalloc peak over 10x the input + 1 MiB (local files,
refused above a size cap, over 32 MiB), measured for every 50th input and every input over 64 KiB
in a second, traced call (tracing slows the timed one down). A call that never returns is ended by
faulthandler at --max-seconds + 120 s, printing where it was. Exit status 1 on any crash, hang or
blow-up.

    .venv/bin/python benchmarks/fuzz_decoders.py [--inputs 100000] [--seed 1] [--max-seconds 3600] [--only I]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import faulthandler
import json
import random
import re
import struct
import sys
import tempfile
import time
import traceback
import tracemalloc
from collections import Counter
from hashlib import sha256
from pathlib import Path

import cbor2

from coordinator.miner.assembly import search_nonce
from edge_sdk.chain.block_model import apply_updates
from edge_sdk.chain.memory import MemoryChain
from edge_sdk.chain.rules import validate_block, validate_genesis
from edge_sdk.protocol import codec, envelope, sync
from edge_sdk.protocol.block import Block, Header, Update, body_root
from edge_sdk.protocol.cert import Certificate
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.extras import Extras
from edge_sdk.protocol.fixedpoint import model_hash
from edge_sdk.protocol.identity import Identity
from edge_sdk.protocol.revocations import make_revocations, parse_revocations
from edge_sdk.protocol.task import Task
from edge_sdk.training.package import ModelPackage
from edge_sdk.transport.mqtt import BrokerConfig

VECTORS = Path(__file__).resolve().parents[1] / "tests" / "vectors" / "protocol.json"
T0 = 1_767_225_600_000  # the vectors' time
NOW = T0 + 10_000  # the receiver's clock for validate_block
HANG_SECONDS, BLOWUP_FACTOR, BLOWUP_SLACK = 1.0, 10, 1 << 20
# local files (not peer input) are refused above their size cap (16 KiB, 256 KiB): their bound is absolute
LOCAL_FILE_PEAK = 32 << 20
SAMPLE_EVERY, ALWAYS_MEASURE = 50, 64 * 1024
BROKER = b'{"url": "mqtts://broker.example:8883", "username": "d1", "password": "pw", "ca_file": "ca.pem"}'
MANIFEST = (
    b'{"format": 1, "model": "mlp:2-3", "loss": "cross-entropy", "optimizer": {"kind": "sgd", "momentum": 0.0},'
    b' "num_outputs": 3, "params": ["W", "b"], "param_shapes": {"W": [2, 3], "b": [3]}, "files": {"forward":'
    b' "forward.onnx", "params": "params.npz"}, "forward": {"inputs": {"features": "features"}, "output": "y"}}'
)
NAN, INF = float("nan"), float("inf")
SCALARS = (  # other types, boundaries, and what the codec refuses (bignums, NaN, int keys)
    (None, True, False),
    (0, 1, -1, 23, 24, 255, 2**32, 2**63, 2**64 - 1, -(2**64), 2**64, -(2**64) - 1),
    (0.0, 1.5, -2.5, 1e308, NAN, INF, -INF),
    ("", "x", "é" * 40, "a" * 65, "../etc", "\x00"),
    (b"", bytes(31), bytes(32), bytes(33), bytes(64), bytes(220), bytes(4097)),
)
SPECIAL_F4 = [NAN, INF, -INF, 64.0, -64.0, 63.99, 3e38, -0.0, 1e-45]
HUGE_HEADS = [b"\x5b" + b"\xff" * 8, b"\x9b" + b"\xff" * 8, b"\xbb" + b"\x7f" * 8, b"\x7a\xff\xff\xff\xff", b"\x9f"]
HEAD_BYTES = [0x00, 0xFF, 0x7F, 0x80, 0x18, 0x19, 0x1B, 0x40, 0x58, 0x5B, 0x60, 0x98, 0xA0, 0xC2, 0xF7, 0xF9]


class World:
    """The vector task, its keys, a chain holding genesis and block 1, and seeds of every message."""

    def __init__(self):
        v = json.loads(VECTORS.read_text())
        self.genesis = bytes.fromhex(v["chain"]["genesis"])
        self.blocks = [bytes.fromhex(b) for b in v["chain"]["blocks"]]
        self.headers = [bytes.fromhex(h["header_bytes"]) for h in v["block_header"]]
        self.cbor = [bytes.fromhex(c["cbor"]) for c in v["canonical_cbor"]]
        names = [b"vector-coordinator", b"vector-miner"] + [b"vector-device-%d" % i for i in range(3)]
        ids = [Identity.from_seed(s) for s in names]
        self.keys = {i.public.sign_pk: i for i in ids}
        coordinator, miner, device = ids[0], ids[1], ids[2]
        _, t = validate_genesis(self.genesis)
        self.task, self.chain = t, MemoryChain(self.genesis)
        state1 = self.chain.add(self.blocks[0], now=T0 + 2000)
        self.updates = list(Block.parse(self.blocks[0], 1 << 30).update_bytes)
        self.certs = [codec.decode(u)[3]["cert"] for u in self.updates]
        hashes = [self.chain.genesis_hash, state1.hash, Block.parse(self.blocks[1], 1 << 30).hash]
        self.hashes = [*hashes, bytes(32), b"\xff" * 32]
        self.requests = [sync.make_request(device, t, hashes, 8), sync.make_request(device, t, hashes[:1], 64, True)]
        snapshot = sync.Snapshot(self.headers[:2], state1.model, state1.base, None)
        self.responses = [sync.make_response(miner, t, self.blocks), sync.make_response(miner, t, [], snapshot)]
        digest = sha256(self.updates[0]).digest()
        self.rejection = sync.make_rejection(miner, t, digest, Reason.STALE_BASE, hashes[1])
        self.revocations = make_revocations(coordinator, t, [device.public.sign_pk], T0 + 5000)
        plain = t.to_wire()
        dp_privacy = {"mode": "dp", "dp": {"clip": 1.0, "noise_multiplier": 1.1}, "paillier": None, "threshold": None}
        dp = {**plain, "privacy": dp_privacy}
        packing = {"n": (1 << 511 | 31).to_bytes(64, "big"), "precision": 16, "clip_exp": 0, "max_quota": 1000}
        packing["max_updates"] = 256
        squares = [(4**k).to_bytes(128, "big") for k in range(1, 2 + len(plain["miners"]))]
        threshold = {"t": 1, "min_participants": 2, "v": squares[0], "vks": squares[1:]}
        paillier = {
            **plain,
            "privacy": {"mode": "paillier", "dp": None, "paillier": packing, "threshold": threshold},
            "aggregation": {**plain["aggregation"], "weight_cap": 0},
        }
        self.manifests = [codec.encode(m) for m in (plain, dp, paillier)]
        self.envelopes = [self.genesis, *self.blocks, *self.updates, *self.certs, *self.requests, *self.responses]
        self.envelopes += [self.rejection, self.revocations]


def targets(w: World, tmp: Path) -> dict:
    """name -> (call on bytes, seeds, kind): kind "wire" (ProtocolError only) or "file" (ValueError, OSError too)."""
    t, chain, broker, manifest = w.task, w.chain, tmp / "broker.json", tmp / "manifest.json"
    return {
        "codec.decode": (codec.decode, w.cbor + w.manifests + w.envelopes[:3], "wire"),
        "open_envelope": (envelope.open_envelope, w.envelopes, "wire"),
        "Update.parse": (lambda d: Update.parse(d, t), w.updates, "wire"),
        "Block.parse": (lambda d: Block.parse(d, t.chain.max_block_bytes), w.blocks, "wire"),
        "Header.decode": (Header.decode, w.headers, "wire"),
        "validate_block": (lambda d: validate_block(d, task=t, chain=chain, now_ms=NOW), w.blocks, "wire"),
        "sync.parse_request": (lambda d: sync.parse_request(d, t), w.requests, "wire"),
        "sync.parse_response": (lambda d: sync.parse_response(d, t), w.responses, "wire"),
        "sync.parse_reply": (lambda d: sync.parse_reply(d, t), [*w.responses, w.rejection], "wire"),
        "sync.parse_rejection": (lambda d: sync.parse_rejection(d, t), [w.rejection], "wire"),
        "parse_revocations": (lambda d: parse_revocations(d, t), [w.revocations], "wire"),
        "Task.from_wire": (lambda d: Task.from_wire(codec.decode(d)), w.manifests, "wire"),
        "validate_genesis": (validate_genesis, [w.genesis], "wire"),
        "Certificate.parse": (lambda d: Certificate.parse(d, t), w.certs, "wire"),
        "BrokerConfig.load": (lambda d: (broker.write_bytes(d), BrokerConfig.load(broker)), [BROKER], "file"),
        "ModelPackage.load": (lambda d: (manifest.write_bytes(d), ModelPackage.load(tmp)), [MANIFEST], "file"),
    }


def interesting(rng: random.Random):
    """A value of another type, at a boundary, refused by the codec, a long list or deep nesting."""
    k = rng.randrange(len(SCALARS) + 3)
    if k < len(SCALARS):
        return rng.choice(SCALARS[k])
    if k == len(SCALARS):
        many = rng.choice([[0], [{}], [[]], [b""]]) * rng.choice([65, 2049, 65500, 65537])
        return rng.choice([[], [0], [b""] * 3, {}, {"": 0}, {1: 2}, many])
    value = 0
    for _ in range(rng.randint(12, 40)):
        value = [value] if rng.random() < 0.5 else {"k": value}
    return value


def mutate_bytes(rng: random.Random, b: bytes) -> bytes:
    n, op = len(b), rng.randrange(8)
    if op == 0:
        return b[: rng.randrange(n + 1)]
    if op == 1:
        return b + rng.randbytes(rng.choice([1, 4, 32, 100]))
    if op == 2 and n:
        i = rng.randrange(n)
        return b[:i] + bytes([b[i] ^ (1 << rng.randrange(8))]) + b[i + 1 :]
    if op == 4:
        return rng.randbytes(rng.choice([0, 32, 64, 220, 1 << 16, 1 << 20]) if rng.random() < 0.05 else n)
    return [b * 2, b"", bytes(n)][op % 3]


def mutate_array(rng: random.Random, a: dict) -> dict:
    """An {"dtype", "shape", "data"} map with a wrong dtype or shape, or data with NaN, inf, big values, cut."""
    op = rng.randrange(7)
    if op == 0:
        a["dtype"] = rng.choice(["f4", "f8", "i4", "i8", "f2", "F4", "", 4, None])
    elif op == 1:
        a["shape"] = rng.choice([[], [0], [6], [3, 2], [2, 3, 1], [-1, 3], [2**26] * 2, [1] * 9, [2**64 - 1], [True]])
    elif op in (2, 3) and isinstance(a.get("data"), bytes) and len(a["data"]) >= 8:
        data, at = bytearray(a["data"]), 4 * rng.randrange(len(a["data"]) // 4)
        fmt = "<f" if a.get("dtype") == "f4" else rng.choice(["<f", "<i", "<q"])
        packed = struct.pack(fmt, rng.choice(SPECIAL_F4) if fmt == "<f" else rng.choice([-1, 2**31 - 1, -(2**31)]))
        data[at : at + len(packed)] = packed
        a["data"] = bytes(data)
    elif op == 4:
        a["data"] = mutate_bytes(rng, a.get("data") if isinstance(a.get("data"), bytes) else b"")
    elif op == 5:
        a[rng.choice(["extra", "dtype", "data"])] = interesting(rng)
    else:
        a.pop(rng.choice(sorted(a)), None)
    return a


def mutate_node(rng: random.Random, x):
    if isinstance(x, dict) and {"dtype", "shape", "data"} <= set(x) and rng.random() < 0.7:
        return mutate_array(rng, x)
    if rng.random() < 0.25:
        return interesting(rng)
    if isinstance(x, bool) or x is None:
        return not x
    if isinstance(x, int):
        return rng.choice([0, 1, -1, x + 1, x - 1, x * 2**20, 2**64 - 1, 2**63, -(2**64), x - T0])
    if isinstance(x, float):
        return rng.choice([NAN, INF, -INF, 0.0, -0.0, -x, x * 1e300, 5e-324])
    if isinstance(x, bytes):
        return mutate_bytes(rng, x)
    if isinstance(x, str):
        return rng.choice(["", x + "x", x[:-1], x * 40, x.upper(), "/" + x, "\udc80" if rng.random() < 0.1 else "é"])
    if isinstance(x, list):
        return rng.choice([[], [interesting(rng)], x + x, x[:-1], x[::-1], x * rng.choice([65, 257, 2049])])
    key, op = (rng.choice(sorted(x)) if x else "k"), rng.randrange(4)
    if op == 0:
        x.pop(key, None)
    elif op == 1:
        x[rng.choice(["extra", key + "_", "", "é"])] = interesting(rng)
    elif op == 2:
        x[key + "x"] = x.pop(key, None)
    return x if op < 3 else {}


def mutate_value(rng: random.Random, root):
    """Mutate 1-3 random nodes of a value tree (in place where possible); return the new root."""
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        paths, stack = [], [((), root)]
        while stack and len(paths) < 4096:
            path, node = stack.pop()
            paths.append(path)
            items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
            stack.extend((path + (k,), v) for k, v in items)
        path, parent = rng.choice(paths), root
        for key in path[:-1]:
            parent = parent[key]
        if path:
            parent[path[-1]] = mutate_node(rng, parent[path[-1]])
        else:
            root = mutate_node(rng, root)
    return root


def encode(value) -> bytes:
    """Canonical CBOR, or cbor2's encoding of what the codec refuses to encode (bignums, NaN, int keys)."""
    try:
        return codec.encode(value)
    except (TypeError, ValueError):
        return cbor2.dumps(value, canonical=True)


def mutate_header(rng: random.Random, w: World, h: Header) -> Header:
    c = w.task.chain
    field = rng.choice([f.name for f in dataclasses.fields(Header)])
    choices = {
        "version": [0, 2, 2**32 - 1],
        "height": [0, 1, 2, 3, 2**64 - 1],
        "timestamp_ms": [0, T0, T0 + 1999, T0 + 2000, NOW + c.max_skew_ms, NOW + c.max_skew_ms + 1, 2**64 - 1],
        "target": [0, 1, c.initial_target, c.initial_target * 4, c.pow_limit, c.pow_limit + 1, 2**256 - 1],
        "nonce": [0, 2**64 - 1],
        "miner": [*w.keys, bytes(32)],
    }.get(field, w.hashes)
    return dataclasses.replace(h, **{field: rng.choice(choices)})


def mutate_block(rng: random.Random, w: World, body: dict) -> None:
    """Header fields or the update list; then mostly a matching Merkle root, model hash and nonce."""
    header, ups = Header.decode(body["header"]), list(body["updates"])
    op = rng.randrange(7)
    if op == 0:
        header = mutate_header(rng, w, header)
    elif op == 1 and ups:
        i = rng.randrange(len(ups))
        ups[i] = mutate_message(rng, w, ups[i])
    elif op == 2:
        ups.append(rng.choice(w.updates + w.certs + ups[:1]))  # a foreign, a non-update or a repeated one
    elif op == 3:
        ups = ups[::-1] if rng.random() < 0.5 else ups[1:]  # swapped or dropped
    elif op == 4:
        ups = (ups or w.updates) * rng.choice([2, 129])  # duplicate devices; more than max_updates
    elif op == 5:
        ups = [mutate_message(rng, w, u) for u in w.updates]  # re-signed mutated updates in a fresh block
    else:
        body[rng.choice(["updates", "header", "extras"])] = interesting(rng)
        return
    if rng.random() < 0.8:
        with contextlib.suppress(ProtocolError):
            extras = Extras.from_wire(body["extras"], len(ups))
            header = dataclasses.replace(header, merkle_root=body_root(ups, extras))
    parent = w.chain.get(header.prev_hash)
    if rng.random() < 0.5 and parent is not None:
        with contextlib.suppress(ProtocolError):  # the model hash of what the block's updates would give
            updates = [Update.parse(u, w.task) for u in ups]
            header = dataclasses.replace(header, model_hash=apply_updates(w.task, parent.model, updates)[0])
    if rng.random() < 0.9 and header.target >= 1 << 240:
        header = search_nonce(header, limit=1 << 18) or header
    body["header"], body["updates"] = header.encode(), ups


def mutate_genesis(rng: random.Random, w: World, body: dict) -> None:
    """The manifest or a header field; then half the time a header that matches the mutated task."""
    if rng.random() < 0.7:
        body["task"] = mutate_value(rng, body["task"])
    else:
        body["header"] = mutate_header(rng, w, Header.decode(body["header"])).encode()
    if rng.random() < 0.5:
        try:
            task = Task.from_wire(codec.decode(codec.encode(body["task"])))
        except (ValueError, TypeError):  # ProtocolError is a ValueError
            return
        frac, header = task.chain.frac_bits, Header.decode(body["header"])
        fixed = {"task_id": task.id, "model_hash": model_hash(task.initial_model, frac), "miner": task.coordinator}
        fixed |= {"target": task.chain.initial_target, "timestamp_ms": task.created_ms}
        body["header"] = dataclasses.replace(header, **fixed).encode()


def mutate_message(rng: random.Random, w: World, data: bytes) -> bytes:
    """Mutate an envelope's fields or body, and sign it again with the signer's own key (mostly)."""
    version, kind, signer, body, signature = codec.decode(data)
    r = rng.random()
    if r < 0.1:
        version, kind, signer = rng.choice(
            [(rng.choice([0, 2, True]), kind, signer), (version, rng.choice(["block", "updat", "", 1]), signer)]
            + [(version, kind, rng.choice([bytes(31), *w.keys]))]
        )
    elif kind == "block" and r < 0.8:
        mutate_block(rng, w, body)
    elif kind == "genesis" and r < 0.7:
        mutate_genesis(rng, w, body)
    elif isinstance(body, dict) and isinstance(body.get("cert"), bytes) and r < 0.3:
        body["cert"] = mutate_message(rng, w, body["cert"])  # a re-signed mutated certificate
    else:
        body = mutate_value(rng, body)
    key = w.keys.get(signer) if isinstance(signer, bytes) else None
    if key is not None and rng.random() < 0.95:
        if rng.random() < 0.03:
            key = rng.choice(list(w.keys.values()))  # the wrong key
        signature = key.sign(envelope.DOMAIN + encode([version, kind, signer, body]))
    elif rng.random() < 0.3:
        signature = mutate_bytes(rng, signature)
    return encode([version, kind, signer, body, signature])


def mutate_json(rng: random.Random, data: bytes) -> bytes:
    text = json.dumps(mutate_value(rng, json.loads(data)), default=lambda o: o.hex() if isinstance(o, bytes) else 0)
    if rng.random() < 0.1:  # what json.dumps does not write: deep nesting, huge numbers, bad escapes, NaN
        junk = rng.choice(["[" * (n := rng.choice([100, 999, 1000, 5000, 100_000])) + "]" * n, "1" * 5000, "1e999"])
        junk = rng.choice([junk, '"\\ud800"', '"\\u00"', "NaN", "-Infinity", '{"a": 1, "a": 2}'])
        text = text.replace("{", '{"x": ' + junk + ", ", 1) if text.startswith("{") else junk
    return text.encode()


def make_input(rng: random.Random, w: World, name: str, seeds: list, kind: str) -> tuple[bytes, str]:
    data = rng.choice(seeds)
    if rng.random() < 0.7:
        try:
            if kind == "file":
                return mutate_json(rng, data), "json"
            if name == "Header.decode":
                return mutate_header(rng, w, Header.decode(data)).encode(), "header"
            if name in ("codec.decode", "Task.from_wire"):
                value = mutate_value(rng, codec.decode(data))
                return (cbor2.dumps(value) if rng.random() < 0.1 else encode(value)), "value"
            return mutate_message(rng, w, data), "message"
        except (ValueError, TypeError, OverflowError, struct.error):
            pass  # a mutation with no encoding (a lone surrogate, a 2^64 height): raw bytes instead
    other, b = rng.choice(w.envelopes + w.headers + w.cbor), bytearray(data)
    for _ in range(rng.choice([1, 1, 1, 2, 3, 8])):
        i, j = sorted(rng.randrange(len(b) + 1) for _ in range(2))
        op = rng.randrange(8)
        if op < 2 and b:
            i = min(i, len(b) - 1)
            b[i] = b[i] ^ (1 << rng.randrange(8)) if op == 0 else rng.choice(HEAD_BYTES)
        elif op == 2:
            b[i:i] = rng.randbytes(rng.choice([1, 2, 8, 64]))
        elif op in (3, 4):
            del b[i : j if op == 3 else len(b)]
        elif op == 5:
            b[j:j] = b[i:j]
        elif op == 6:
            b = b[:i] + other[rng.randrange(len(other) + 1) :]
        else:
            b[i:i] = rng.choice(HUGE_HEADS)
    return bytes(b), "raw"


@dataclasses.dataclass
class Report:
    seed: int
    outcomes: dict = dataclasses.field(default_factory=dict)  # target -> Counter of outcome labels
    findings: list = dataclasses.field(default_factory=list)  # (kind, target, index, input summary, what)
    inputs, measured, seconds = 0, 0, 0.0

    def summary(self) -> str:
        lines = [f"{'target':22} {'inputs':>7} {'accepted':>8} {'refused':>8}  refusals"]
        for name, c in self.outcomes.items():
            top = ", ".join(f"{k} {v}" for k, v in c.most_common() if k != "accepted")
            lines.append(f"{name:22} {c.total():>7} {c['accepted']:>8} {c.total() - c['accepted']:>8}  {top}")
        total = sum(self.outcomes.values(), Counter())
        lines.append(f"all outcomes: {dict(total.most_common())}")
        lines.append(f"inputs {self.inputs}, accepted {total['accepted']}, refused {self.inputs - total['accepted']}")
        kinds = Counter(f[0] for f in self.findings)
        lines.append(f"crashes {kinds['CRASH']}, hangs {kinds['HANG']}, blow-ups {kinds['BLOW-UP']}")
        groups = Counter((k, target, what[:60] if k == "CRASH" else "") for k, target, _, _, what in self.findings)
        lines += [f"  {n} x {kind} {target} {what}" for (kind, target, what), n in groups.most_common()]
        for kind, target, index, shown, what in self.findings[:200]:
            lines.append(f"  {kind} {target} (--seed {self.seed} --only {index}): {what}; input {shown}")
        lines.append(f"tracemalloc-measured inputs {self.measured}; total time {self.seconds:.1f} s")
        return "\n".join(lines)


def classify(kind: str, exc: Exception | None) -> str | None:
    """The outcome's label (a reason code, with the inner one of bad_update/bad_cert), or None for a crash."""
    if exc is None:
        return "accepted"
    if isinstance(exc, ProtocolError):
        inner = re.match(r"(?:update \d+: |certificate: )(\w+)", exc.detail)
        return exc.reason.value + (f"/{inner.group(1)}" if inner else "")
    return type(exc).__name__ if kind == "file" and isinstance(exc, (ValueError, OSError)) else None


def run(inputs: int, seed: int, max_seconds: float | None = None, progress=None, only: int | None = None) -> Report:
    report, start, w = Report(seed), time.perf_counter(), World()
    with tempfile.TemporaryDirectory() as tmp:
        table = targets(w, Path(tmp))
        for call, seeds, _ in table.values():  # every seed is accepted (the harness is right), caches are warm
            for data in seeds:
                call(data)
        names = list(table)
        for i in [only] if only is not None else range(inputs):
            if max_seconds is not None and time.perf_counter() - start > max_seconds:
                break
            rng, name = random.Random(f"{seed}/{i}"), names[i % len(names)]
            call, seeds, kind = table[name]
            data, how = make_input(rng, w, name, seeds, kind)
            measure = i % SAMPLE_EVERY == 0 or len(data) > ALWAYS_MEASURE
            exc, t = None, time.perf_counter()
            try:
                call(data)
            except Exception as e:  # every exception is an outcome to classify
                exc = e
            seconds, peak = time.perf_counter() - t, 0
            if measure:  # again, traced (the calls are pure): tracemalloc would slow the timed call down
                tracemalloc.start()
                with contextlib.suppress(Exception):
                    call(data)
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
            label = classify(kind, exc)
            report.outcomes.setdefault(name, Counter())[label or "CRASH"] += 1
            report.inputs, report.measured = report.inputs + 1, report.measured + measure
            shown = f"{how}, {len(data)} bytes {data[:24].hex()}..."
            if label is None:
                report.findings.append(("CRASH", name, i, shown, f"{type(exc).__name__}: {str(exc)[:100]}"))
            if seconds > HANG_SECONDS:
                report.findings.append(("HANG", name, i, shown, f"{seconds:.2f} s, {label}"))
            limit = LOCAL_FILE_PEAK if kind == "file" else BLOWUP_FACTOR * len(data) + BLOWUP_SLACK
            if peak > limit:
                report.findings.append(("BLOW-UP", name, i, shown, f"peak {peak >> 10} KiB, {label}"))
            if only is not None:
                print(f"input {i} for {name} ({how}, {len(data)} bytes): {label or 'CRASH'} in {seconds:.3f} s")
                print(data.hex() if len(data) <= 4096 else f"sha256 {sha256(data).hexdigest()}")
                if exc is not None:
                    traceback.print_exception(exc)
            if progress and (i + 1) % 10_000 == 0:
                progress(f"{i + 1} inputs, {time.perf_counter() - start:.0f} s, {len(report.findings)} findings")
    report.seconds = time.perf_counter() - start
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="make no new input after this")
    parser.add_argument("--only", type=int, metavar="I", help="rebuild and run input I of the seed alone, verbosely")
    args = parser.parse_args()
    faulthandler.dump_traceback_later(args.max_seconds + 120, exit=True)  # a call that never returns
    report = run(args.inputs, args.seed, args.max_seconds, lambda s: print(s, flush=True), args.only)
    print(report.summary())
    return 1 if report.findings else 0


if __name__ == "__main__":
    sys.exit(main())
