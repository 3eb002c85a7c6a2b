"""Pairwise masks of the secure sum (Bonawitz et al. 2017, without dropout recovery).

Each client of a job has a fresh X25519 key pair. For every other client it derives a shared secret
(X25519), turns it into a 256-bit seed bound to the job instance (its jobId and the random instanceId the
service gave it at creation: a jobId used again after its job expired is another instance, so a client that
keeps its key never repeats a mask), the pair and both public keys (HKDF-SHA256),
and expands the seed into a uint64 mask vector (AES-256-CTR keystream). Of each pair, the client whose
id sorts first adds the mask and the other subtracts it, mod 2**64, so every mask cancels in the sum of
all the clients' vectors and each masked vector alone looks uniformly random. Every primitive is from
`cryptography`; numpy does the arithmetic.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

import numpy as np
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PUBLIC_KEY_BYTES = 32
_CONTEXT = b"computations-orchestrator/secure-sum/v2"
_ZERO_NONCE = bytes(16)  # each seed keys exactly one keystream, so a fixed nonce is safe
_FIELD_PRIME = 2**255 - 19
_CHUNK = 1 << 16  # elements per keystream chunk: bounds the memory masking needs besides the vector


class InvalidPublicKey(ValueError):
    """Not the base64 of a usable X25519 public key."""


def generate_private_key() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def public_key_bytes(private_key: X25519PrivateKey) -> bytes:
    return private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def private_key_bytes(private_key: X25519PrivateKey) -> bytes:
    """The raw 32 bytes of a private key (what a key file keeps, and what a client splits into shares)."""
    return private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def encode_key(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def parse_public_key(text: str) -> bytes:
    """The raw 32 bytes of a base64 X25519 public key; InvalidPublicKey if it is not one, or if it is a
    low-order point (every shared secret with it would be zero, so the masks would be public)."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidPublicKey("not valid base64") from None
    if len(raw) != PUBLIC_KEY_BYTES:
        raise InvalidPublicKey(f"{len(raw)} bytes; an X25519 public key has {PUBLIC_KEY_BYTES}")
    # Only the canonical encoding (RFC 7748: top bit clear, u < 2^255 - 19): another spelling of the same
    # point gives the same shared secret but other bytes, and both sides must bind the same bytes.
    if raw[31] & 0x80 or int.from_bytes(raw, "little") >= _FIELD_PRIME:
        raise InvalidPublicKey("not the canonical encoding of an X25519 public key")
    key = X25519PublicKey.from_public_bytes(raw)
    try:
        X25519PrivateKey.generate().exchange(key)
    except ValueError:
        raise InvalidPublicKey("a low-order point, not a usable X25519 public key") from None
    return raw


def pair_seed(
    private_key: X25519PrivateKey,
    job_id: str,
    client_id: str,
    peer_id: str,
    peer_public_key: bytes,
    *,
    instance_id: str,
) -> bytes:
    """The 32-byte seed ``client_id`` shares with ``peer_id`` for this instance of ``job_id`` (both derive the
    same one)."""
    if not instance_id:
        raise ValueError("a mask must be bound to the job instance: instance_id is empty")
    shared = private_key.exchange(X25519PublicKey.from_public_bytes(peer_public_key))
    own = (client_id, public_key_bytes(private_key))
    (first_id, first_key), (second_id, second_key) = sorted([own, (peer_id, peer_public_key)])
    info = _CONTEXT + b"".join(
        _framed(part)
        for part in (
            job_id.encode(),
            instance_id.encode(),
            first_id.encode(),
            first_key,
            second_id.encode(),
            second_key,
        )
    )
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


def apply_mask(vector: np.ndarray, seed: bytes, *, subtract: bool) -> None:
    """Add (or subtract) the mask expanded from ``seed`` to the uint64 ``vector``, in place, mod 2**64."""
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(_ZERO_NONCE)).encryptor()
    zeros = bytes(min(vector.size, _CHUNK) * 8)
    out = bytearray(len(zeros) + 15)  # update_into needs room for one block more
    for start in range(0, vector.size, _CHUNK):
        part = vector[start : start + _CHUNK]
        n = encryptor.update_into(memoryview(zeros)[: part.size * 8], out)
        mask = np.frombuffer(out, dtype="<u8", count=n // 8)
        if subtract:
            part -= mask
        else:
            part += mask


def mask_vector(
    values: np.ndarray,
    *,
    job_id: str,
    instance_id: str,
    client_id: str,
    private_key: X25519PrivateKey,
    public_keys: Mapping[str, bytes],
) -> np.ndarray:
    """``values`` (int64) masked with a pairwise mask for every other client in ``public_keys``
    (clientId -> raw public key, this client included or not): uint64, little-endian."""
    masked = np.ascontiguousarray(values, dtype="<i8").view("<u8").copy()
    for peer_id, peer_key in public_keys.items():
        if peer_id == client_id:
            continue
        seed = pair_seed(private_key, job_id, client_id, peer_id, peer_key, instance_id=instance_id)
        apply_mask(masked, seed, subtract=client_id > peer_id)
    return masked


def _framed(part: bytes) -> bytes:
    return len(part).to_bytes(4, "big") + part
