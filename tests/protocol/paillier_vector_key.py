"""The `paillier` vector's task, key, shares and aggregate (tests/vectors/protocol.json), for the
edge-case tests of packing, threshold decryption and its wire forms: a real 512-bit dealt key
without dealing one (safe primes take seconds)."""

import json
import pathlib

from edge_sdk.chain.rules import validate_genesis
from edge_sdk.privacy import threshold
from edge_sdk.protocol.decryption import PartialDecryption

VECTORS = json.loads((pathlib.Path(__file__).resolve().parents[1] / "vectors" / "protocol.json").read_text())
P = VECTORS["paillier"]


def num(hex_text: str) -> int:
    return int.from_bytes(bytes.fromhex(hex_text), "big")


TASK = validate_genesis(bytes.fromhex(P["chain"]["genesis"]))[1]
KEY = TASK.privacy.threshold.key
PACKING = TASK.privacy.packing
N, N2 = KEY.n, KEY.n * KEY.n
PRIME_P, PRIME_Q = num(P["key"]["p"]), num(P["key"]["q"])
ORDER = N * (PRIME_P - 1) * (PRIME_Q - 1)  # a multiple of every element's order in Z*_{n^2}
SHARES = [threshold.KeyShare(s["index"], num(s["value"])) for s in P["key"]["shares"]]
AGGREGATE = [num(c) for c in P["aggregate"]["ciphertexts"]]
PARTIALS = {v["share"]: [num(x) for x in v["partials"]] for v in P["partials"]}


def proven(share_index: int, ciphertexts=None) -> PartialDecryption:
    """Share `share_index`'s partial decryption of `ciphertexts` (the vector's aggregate by default)
    with a fresh proof."""
    ciphertexts = AGGREGATE if ciphertexts is None else ciphertexts
    share = SHARES[share_index - 1]
    partials = threshold.partial_decrypt(share, KEY, ciphertexts)
    return PartialDecryption(share_index, tuple(partials), threshold.prove(share, KEY, ciphertexts, partials))
