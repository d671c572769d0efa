import hashlib

from hypothesis import given
from hypothesis import strategies as st

from edge_sdk.protocol.merkle import merkle_root


def reference_mth(leaves):
    """RFC 6962 section 2.1, written independently: iterative splitting by bit length."""
    if not leaves:
        return hashlib.sha256().digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\0" + leaves[0]).digest()
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\1" + reference_mth(leaves[:k]) + reference_mth(leaves[k:])).digest()


@given(st.lists(st.binary(min_size=32, max_size=32), max_size=40))
def test_matches_rfc6962_reference(leaves):
    assert merkle_root(leaves) == reference_mth(leaves)


def test_known_shapes():
    d = [bytes([i]) * 32 for i in range(3)]
    h = lambda b: hashlib.sha256(b).digest()
    assert merkle_root([]) == h(b"")
    assert merkle_root(d[:1]) == h(b"\0" + d[0])
    left = h(b"\1" + h(b"\0" + d[0]) + h(b"\0" + d[1]))
    assert merkle_root(d) == h(b"\1" + left + h(b"\0" + d[2]))


@given(st.lists(st.binary(min_size=32, max_size=32), min_size=2, max_size=12, unique=True), st.data())
def test_order_and_content_matter(leaves, data):
    i = data.draw(st.integers(0, len(leaves) - 2))
    swapped = leaves[:i] + [leaves[i + 1], leaves[i]] + leaves[i + 2 :]
    assert merkle_root(swapped) != merkle_root(leaves)
    assert merkle_root(leaves[:-1]) != merkle_root(leaves)
