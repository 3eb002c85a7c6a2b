"""The dropout-tolerant secure sum's building blocks (Bonawitz et al. 2017): secret shares, share bundles,
self masks and the server's unmasking.

Every client splits two secrets among all the key registrants: its mask-agreement private key (32 bytes, so
the pairwise masks of a client that drops out can be rebuilt and removed) and a fresh self-mask seed b
(16 bytes, so the self mask of a client whose input arrived can be removed, and only then). Shamir's scheme
is pycryptodome's (GF(2^128), 16-byte secrets; a 32-byte secret is two of them with the same indexes). The
shares travel to their holders through the server in bundles that only the recipient can open
(ChaCha20Poly1305 under a key agreed with X25519 and derived with HKDF). A self mask is an AES-256-CTR
keystream like the pairwise masks of masking.py. The server, holding the masked sum and the rebuilt
secrets, removes the masks chunk by chunk, so it needs the sum plus one chunk of memory whatever the number
of clients.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from Crypto.Protocol import SecretSharing
from Crypto.Protocol.SecretSharing import Shamir
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from orchestrator.securesum.masking import (
    PUBLIC_KEY_BYTES,
    InvalidPublicKey,
    _framed,
    apply_mask,
    pair_seed,
    public_key_bytes,
)

if TYPE_CHECKING:
    from Crypto.Protocol.SecretSharing import _Element

logger = logging.getLogger(__name__)

SHAMIR_BYTES = 16  # pycryptodome shares 16-byte secrets (elements of GF(2^128))
KEY_SHARE_BYTES = 32  # a share of a mask-agreement private key: two Shamir shares
SEED_SHARE_BYTES = 16  # a share of a self-mask seed
SEED_BYTES = 16
PRIVATE_KEY_BYTES = 32  # a raw X25519 private key
MAX_INDEX = 0xFFFF  # a share index travels in two bytes
_NONCE_BYTES = 12
_BUNDLE_CONTEXT = b"computations-orchestrator/secure-sum/v2/share-bundle"
_SELF_MASK_CONTEXT = b"computations-orchestrator/secure-sum/v2/self-mask"
_CHUNK = 1 << 15  # elements per keystream chunk of the server's unmasking (256 KiB: stays in the L2 cache)
_OPEN_STREAMS = 256  # keystreams the unmasking runs at once (a cipher context each, ~1 KiB)


class InvalidBundle(ValueError):
    """A share bundle that does not open: wrong key, tampered, or sealed for another job, instance or pair."""


@dataclass(frozen=True)
class Bundle:
    """What a sender's bundle gives its recipient: (index, value) shares of the sender's mask-agreement private
    key (32-byte value) and of its self-mask seed (16-byte value)."""

    key_share: tuple[int, bytes]
    seed_share: tuple[int, bytes]


def split_secret(secret: bytes, threshold: int, count: int) -> list[tuple[int, bytes]]:
    """``count`` shares (index 1..count, value) of ``secret`` (16 or 32 bytes), any ``threshold`` of which
    rebuild it. A 32-byte secret is split as its two 16-byte halves with the same indexes, each share value
    the two halves' values concatenated."""
    if len(secret) not in (SHAMIR_BYTES, 2 * SHAMIR_BYTES):
        raise ValueError(f"a secret has 16 or 32 bytes, not {len(secret)}")
    if not 1 <= threshold <= count <= MAX_INDEX:
        raise ValueError(f"need 1 <= threshold <= count <= {MAX_INDEX}: threshold {threshold}, count {count}")
    halves = [Shamir.split(threshold, count, secret[i : i + SHAMIR_BYTES]) for i in range(0, len(secret), SHAMIR_BYTES)]
    return [(shares[0][0], b"".join(value for _, value in shares)) for shares in zip(*halves, strict=True)]


class Combiner:
    """Rebuilds secrets from the shares of one set of holders: the Lagrange coefficients at 0 depend only on
    the share indexes, so they are computed once for every secret the same holders share (the server rebuilds
    a seed per survivor and a key per dropped client from the same t answers).

    The field arithmetic is pycryptodome's (its private GF(2^128) element type). Its multiplication is a
    128-step loop (~0.2 ms here), so k of them per secret would take the server over a second for 100
    clients; instead each coefficient c gets a table of c * (n << 4w) for every 4-bit window w and n in
    0..15, built with the library's multiplication, and c * y is the library's sum of the 32 entries y's
    nibbles pick (multiplying by c is linear). Without a usable element type, Shamir.combine does the work.
    """

    def __init__(self, indexes: Sequence[int]) -> None:
        if not indexes:
            raise ValueError("no share index")
        if len(set(indexes)) != len(indexes):
            raise ValueError("share indexes must be distinct")
        if not all(1 <= i <= MAX_INDEX for i in indexes):
            raise ValueError(f"share indexes lie in 1..{MAX_INDEX}")
        self.indexes = tuple(indexes)
        self._field = field = _field()
        self._tables = [] if field is None else [_product_table(c) for c in _lagrange_at_zero(field, indexes)]

    def combine(self, values: Sequence[bytes]) -> bytes:
        """The secret (16 or 32 bytes) whose share values are ``values``, in the order of the indexes."""
        if len(values) != len(self.indexes):
            raise ValueError(f"{len(values)} share values for {len(self.indexes)} indexes")
        width = len(values[0])
        if width not in (SHAMIR_BYTES, 2 * SHAMIR_BYTES) or any(len(v) != width for v in values):
            raise ValueError("share values must all have 16 or all 32 bytes")
        return b"".join(
            self._combine_half([v[i : i + SHAMIR_BYTES] for v in values]) for i in range(0, width, SHAMIR_BYTES)
        )

    def _combine_half(self, values: list[bytes]) -> bytes:
        if self._field is None:
            return Shamir.combine(list(zip(self.indexes, values, strict=True)))
        total = self._field(0)
        for table, value in zip(self._tables, values, strict=True):
            y = int(self._field(value))
            for row in table:
                total += row[y & 15]
                y >>= 4
        return total.encode()


@functools.cache
def _field() -> type[_Element] | None:
    """pycryptodome's GF(2^128) element type, if it is there and still combines as Shamir.combine does (the
    type is private: a release may drop or change it); None makes Combiner use Shamir.combine."""
    element: type[_Element] | None = getattr(SecretSharing, "_Element", None)
    if element is None:
        logger.warning("pycryptodome has no SecretSharing._Element: secrets are rebuilt with Shamir.combine")
        return None
    shares = [(1, bytes(range(16))), (2, bytes(range(16, 32))), (7, bytes(range(32, 48)))]
    try:
        coefficients = _lagrange_at_zero(element, [i for i, _ in shares])
        total = element(0)
        for c, (_, value) in zip(coefficients, shares, strict=True):
            total += c * element(value)
        usable = total.encode() == Shamir.combine(shares)
    except (AttributeError, TypeError, ValueError):
        usable = False
    if not usable:
        logger.warning("pycryptodome's SecretSharing._Element changed: secrets are rebuilt with Shamir.combine")
        return None
    return element


def _lagrange_at_zero(field: type[_Element], indexes: Sequence[int]) -> list[_Element]:
    """l_j(0) = prod_{m != j} x_m / (x_j - x_m) for each index x_j (subtraction is addition in GF(2^128))."""
    points = [field(i) for i in indexes]
    coefficients = []
    for j, x_j in enumerate(points):
        numerator, denominator = field(1), field(1)
        for m, x_m in enumerate(points):
            if m != j:
                numerator *= x_m
                denominator *= x_j + x_m
        coefficients.append(numerator * denominator.inverse())
    return coefficients


def _product_table(c: _Element) -> list[list[_Element]]:
    """Row w holds c * (n << 4w) for n in 0..15, w in 0..31 (the lowest window first)."""
    x = type(c)(2)  # the polynomial x: multiplying by it shifts by one bit
    rows = []
    power = c  # c * x^(4w)
    for _ in range(SHAMIR_BYTES * 2):
        basis = [power]
        for _ in range(3):
            basis.append(basis[-1] * x)
        row = [type(c)(0)]
        for n in range(1, 16):
            lowest = (n & -n).bit_length() - 1
            row.append(row[n & (n - 1)] + basis[lowest])
        rows.append(row)
        power = basis[-1] * x
    return rows


def seal_bundle(
    own_encryption_key: X25519PrivateKey,
    peer_encryption_key: bytes,
    *,
    job_id: str,
    instance_id: str,
    sender: str,
    recipient: str,
    key_share: tuple[int, bytes],
    seed_share: tuple[int, bytes],
) -> bytes:
    """The bundle ``sender`` (holding ``own_encryption_key``) posts for ``recipient`` (whose raw public
    encryption key is ``peer_encryption_key``; itself included) with the recipient's share of the sender's key
    and seed: nonce || ChaCha20Poly1305 ciphertext. The plaintext repeats both ids, and the key and the
    associated data bind the job instance and the ordered pair, so the server can neither read it nor pass it
    off to another client, pair, job or instance."""
    for (index, value), size in ((key_share, KEY_SHARE_BYTES), (seed_share, SEED_SHARE_BYTES)):
        if not 1 <= index <= MAX_INDEX or len(value) != size:
            raise ValueError(f"a share here has an index in 1..{MAX_INDEX} and a {size}-byte value")
    try:
        peer = X25519PublicKey.from_public_bytes(peer_encryption_key)
        shared = own_encryption_key.exchange(peer)
    except ValueError:
        raise InvalidPublicKey("the peer's encryption key is not a usable X25519 public key") from None
    binding = _bundle_binding(
        job_id, instance_id, (sender, public_key_bytes(own_encryption_key)), (recipient, peer_encryption_key)
    )
    plaintext = b"".join(
        (_bundle_prefix(sender, recipient), *(i.to_bytes(2, "big") + v for i, v in (key_share, seed_share)))
    )
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + _aead(shared, binding).encrypt(nonce, plaintext, binding)


def open_bundle(
    own_encryption_key: X25519PrivateKey,
    peer_encryption_key: bytes,
    *,
    job_id: str,
    instance_id: str,
    sender: str,
    recipient: str,
    ciphertext: bytes,
) -> Bundle:
    """The shares in the bundle ``sender`` (raw public encryption key ``peer_encryption_key``) sealed for
    ``recipient`` (holding ``own_encryption_key``); InvalidBundle if it does not open or is not that."""
    try:
        shared = own_encryption_key.exchange(X25519PublicKey.from_public_bytes(peer_encryption_key))
    except ValueError:
        raise InvalidBundle("the sender's encryption key is not a usable X25519 public key") from None
    binding = _bundle_binding(
        job_id, instance_id, (sender, peer_encryption_key), (recipient, public_key_bytes(own_encryption_key))
    )
    nonce, sealed = ciphertext[:_NONCE_BYTES], ciphertext[_NONCE_BYTES:]
    try:
        plaintext = _aead(shared, binding).decrypt(nonce, sealed, binding)
    except (InvalidTag, ValueError):
        raise InvalidBundle(f"the bundle from {sender!r} to {recipient!r} does not open") from None
    prefix = _bundle_prefix(sender, recipient)
    if not plaintext.startswith(prefix) or len(plaintext) != len(prefix) + 4 + KEY_SHARE_BYTES + SEED_SHARE_BYTES:
        raise InvalidBundle(f"the bundle from {sender!r} to {recipient!r} holds something else")
    body = memoryview(plaintext)[len(prefix) :]
    key_index, seed_index = int.from_bytes(body[:2], "big"), int.from_bytes(body[34:36], "big")
    if not key_index or not seed_index:
        raise InvalidBundle("a share index of 0")
    return Bundle(key_share=(key_index, bytes(body[2:34])), seed_share=(seed_index, bytes(body[36:])))


def _bundle_binding(job_id: str, instance_id: str, sender: tuple[str, bytes], recipient: tuple[str, bytes]) -> bytes:
    """The HKDF info and AEAD associated data of a bundle: the job instance and the ordered pair, each with
    its encryption key."""
    parts = (job_id.encode(), instance_id.encode(), sender[0].encode(), sender[1], recipient[0].encode(), recipient[1])
    return _BUNDLE_CONTEXT + b"".join(_framed(p) for p in parts)


def _bundle_prefix(sender: str, recipient: str) -> bytes:
    return _framed(sender.encode()) + _framed(recipient.encode())


def _aead(shared: bytes, binding: bytes) -> ChaCha20Poly1305:
    return ChaCha20Poly1305(HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=binding).derive(shared))


def self_mask_seed() -> bytes:
    """A fresh self-mask seed b (16 random bytes from the OS)."""
    return os.urandom(SEED_BYTES)


def apply_self_mask(
    vector: np.ndarray, seed: bytes, *, job_id: str, instance_id: str, client_id: str, subtract: bool
) -> None:
    """Add (or subtract) ``client_id``'s self mask expanded from ``seed`` to the uint64 ``vector``, in place,
    mod 2**64: AES-256-CTR keyed by HKDF(seed) bound to the job instance and the client, as masking.apply_mask
    expands a pair's seed."""
    apply_mask(vector, _self_mask_key(seed, job_id, instance_id, client_id), subtract=subtract)


def _self_mask_key(seed: bytes, job_id: str, instance_id: str, client_id: str) -> bytes:
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a self-mask seed has {SEED_BYTES} bytes, not {len(seed)}")
    if not instance_id:
        raise ValueError("a mask must be bound to the job instance: instance_id is empty")
    info = _SELF_MASK_CONTEXT + b"".join(_framed(p.encode()) for p in (job_id, instance_id, client_id))
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(seed)


def unmask_total(
    total: np.ndarray,
    *,
    job_id: str,
    instance_id: str,
    survivors: Mapping[str, bytes],
    self_seeds: Mapping[str, bytes],
    dropped_keys: Mapping[str, bytes],
) -> None:
    """Turn ``total``, the uint64 sum of the survivors' masked inputs, into the sum of their inputs, in place:
    remove each survivor's self mask (``self_seeds``: its rebuilt seed) and the pairwise mask each survivor
    (``survivors``: its raw mask-agreement public key) applied for each dropped client (``dropped_keys``: its
    rebuilt raw mask-agreement private key); the survivors' masks among themselves cancel in the sum.
    ValueError, before ``total`` is touched, for arguments that do not fit together."""
    if total.ndim != 1 or total.dtype != np.dtype("<u8"):
        raise ValueError("total must be a one-dimensional little-endian uint64 array")
    if set(self_seeds) != set(survivors):
        raise ValueError("a self-mask seed is needed for every survivor, and only for them")
    if overlap := set(survivors) & set(dropped_keys):
        raise ValueError(f"clients both survived and dropped: {sorted(overlap)}")
    for what, secrets, size in (
        ("survivor's public key", survivors, PUBLIC_KEY_BYTES),
        ("self-mask seed", self_seeds, SEED_BYTES),
        ("dropped client's private key", dropped_keys, PRIVATE_KEY_BYTES),
    ):
        if wrong := sorted(c for c, secret in secrets.items() if len(secret) != size):
            raise ValueError(f"a {what} has {size} bytes; not those of {wrong}")
    masks = _masks_to_remove(job_id, instance_id, survivors, self_seeds, dropped_keys)
    while batch := list(itertools.islice(masks, _OPEN_STREAMS)):
        _remove_masks(total, batch)


def _masks_to_remove(
    job_id: str,
    instance_id: str,
    survivors: Mapping[str, bytes],
    self_seeds: Mapping[str, bytes],
    dropped_keys: Mapping[str, bytes],
) -> Iterator[tuple[bytes, bool]]:
    """(AES key, subtract?) of every mask to take out of the sum: the survivors' self masks, and the pairwise
    mask of each survivor and dropped client."""
    for u in survivors:
        yield _self_mask_key(self_seeds[u], job_id, instance_id, u), True
    for v, raw_key in dropped_keys.items():
        key = X25519PrivateKey.from_private_bytes(raw_key)
        for u, public_key in survivors.items():
            # u added the pair's mask when it sorts first (masking.mask_vector): take it back out.
            yield pair_seed(key, job_id, v, u, public_key, instance_id=instance_id), u < v


def _remove_masks(total: np.ndarray, masks: Sequence[tuple[bytes, bool]], chunk: int = _CHUNK) -> None:
    """Apply the (key, subtract) masks to ``total`` a chunk at a time for all their keystreams together (the
    chunk stays in the cache: 1.6 times as fast as one mask after another here); the memory beyond ``total``
    is one chunk and the streams' cipher contexts."""
    # masking.apply_mask's keystream: AES-256-CTR from the zero counter block.
    streams = [(Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor(), subtract) for key, subtract in masks]
    zeros = memoryview(bytes(min(total.size, chunk) * 8))
    out = bytearray(len(zeros) + 15)  # update_into needs room for one block more
    for start in range(0, total.size, chunk):
        piece = total[start : start + chunk]
        for stream, subtract in streams:
            stream.update_into(zeros[: piece.size * 8], out)
            mask = np.frombuffer(out, dtype="<u8", count=piece.size)
            if subtract:
                piece -= mask
            else:
                piece += mask
