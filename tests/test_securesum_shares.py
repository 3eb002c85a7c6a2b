"""orchestrator/securesum/shares.py: Shamir shares and their Combiner, share bundles, self masks, and the
server's unmasking, down to a whole dropout-tolerant round computed in memory."""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
from Crypto.Protocol import SecretSharing
from Crypto.Protocol.SecretSharing import Shamir
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.securesum import shares
from orchestrator.securesum.masking import (
    InvalidPublicKey,
    apply_mask,
    generate_private_key,
    mask_vector,
    private_key_bytes,
    public_key_bytes,
)
from orchestrator.securesum.shares import (
    Bundle,
    Combiner,
    InvalidBundle,
    apply_self_mask,
    open_bundle,
    seal_bundle,
    self_mask_seed,
    split_secret,
    unmask_total,
)

JOB, INSTANCE = "job-1", "instance-1"


@pytest.fixture
def fresh_field() -> Iterator[None]:
    """shares._field computed anew for the test and again after it (it is cached)."""
    shares._field.cache_clear()
    yield
    shares._field.cache_clear()


# Shamir shares


@given(
    secret=st.binary(min_size=16, max_size=16) | st.binary(min_size=32, max_size=32),
    data=st.data(),
)
@settings(max_examples=40, deadline=None)
def test_any_threshold_of_shares_rebuilds_the_secret(secret: bytes, data: st.DataObject) -> None:
    count = data.draw(st.integers(1, 12), label="count")
    threshold = data.draw(st.integers(1, count), label="threshold")
    split = split_secret(secret, threshold, count)
    assert [i for i, _ in split] == list(range(1, count + 1))
    assert all(len(value) == len(secret) for _, value in split)
    chosen = data.draw(st.permutations(split), label="order")[: data.draw(st.integers(threshold, count))]
    assert Combiner([i for i, _ in chosen]).combine([v for _, v in chosen]) == secret
    for half in range(0, len(secret), 16):
        assert Shamir.combine([(i, v[half : half + 16]) for i, v in chosen]) == secret[half : half + 16]


@given(
    indexes=st.lists(st.integers(1, 0xFFFF), min_size=1, max_size=10, unique=True),
    data=st.data(),
)
@settings(max_examples=40, deadline=None)
def test_combine_equals_pycryptodome_on_any_points(indexes: list[int], data: st.DataObject) -> None:
    values = [data.draw(st.binary(min_size=16, max_size=16)) for _ in indexes]
    assert Combiner(indexes).combine(values) == Shamir.combine(list(zip(indexes, values, strict=True)))


def test_fewer_shares_than_the_threshold_do_not_rebuild_it() -> None:
    secret = os.urandom(16)
    split = split_secret(secret, 3, 5)
    assert Combiner([1, 4]).combine([split[0][1], split[3][1]]) != secret


@pytest.mark.parametrize(
    ("secret", "threshold", "count"),
    [(bytes(15), 2, 3), (bytes(24), 2, 3), (bytes(16), 0, 3), (bytes(16), 4, 3), (bytes(16), 2, 0x10000)],
)
def test_split_refuses_what_it_cannot_share(secret: bytes, threshold: int, count: int) -> None:
    with pytest.raises(ValueError):
        split_secret(secret, threshold, count)


@pytest.mark.parametrize("indexes", [[], [1, 1], [0, 2], [1, 0x10000]])
def test_combiner_refuses_bad_indexes(indexes: list[int]) -> None:
    with pytest.raises(ValueError):
        Combiner(indexes)


@pytest.mark.parametrize("values", [[bytes(16)], [bytes(16)] * 3, [bytes(16), bytes(32)], [bytes(8), bytes(8)]])
def test_combine_refuses_values_that_do_not_fit(values: list[bytes]) -> None:
    with pytest.raises(ValueError):
        Combiner([1, 2]).combine(values)


@pytest.mark.usefixtures("fresh_field")
def test_pycryptodome_private_field_type_is_still_usable() -> None:
    """Combiner relies on pycryptodome's private SecretSharing._Element: if a release drops or changes it,
    Combiner falls back to Shamir.combine (7 s instead of 0.2 s for the server of 100 clients): fail here."""
    element = getattr(SecretSharing, "_Element", None)
    assert element is not None, "pycryptodome no longer has SecretSharing._Element"
    for name in ("__mul__", "__add__", "inverse", "encode", "__int__"):
        assert hasattr(element, name), f"pycryptodome's _Element has no {name}"
    assert int(element(bytes(range(16)))) == int.from_bytes(bytes(range(16)), "big")
    assert shares._field() is element, "pycryptodome's _Element no longer combines as Shamir.combine does"


@pytest.mark.usefixtures("fresh_field")
def test_without_the_field_type_combine_falls_back_to_pycryptodome(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(shares, "SecretSharing", SimpleNamespace())  # as if a release had renamed it
    secret = os.urandom(32)
    split = split_secret(secret, 2, 3)
    with caplog.at_level(logging.WARNING, logger=shares.__name__):
        assert Combiner([3, 1]).combine([split[2][1], split[0][1]]) == secret
    assert "Shamir.combine" in caplog.text


@pytest.mark.usefixtures("fresh_field")
def test_a_changed_field_type_falls_back_to_pycryptodome(monkeypatch: pytest.MonkeyPatch) -> None:
    class Changed:
        def __init__(self, value: int | bytes) -> None:
            self.value = value

    monkeypatch.setattr(shares, "SecretSharing", SimpleNamespace(_Element=Changed))
    secret = os.urandom(16)
    split = split_secret(secret, 2, 2)
    assert Combiner([1, 2]).combine([v for _, v in split]) == secret
    assert shares._field() is None


def test_the_server_combines_100_clients_secrets_well_within_a_second() -> None:
    """110 Shamir secrets of 51 shares (90 survivors' seeds, 10 dropped keys of two halves): pycryptodome's
    combine takes ~7 s, k plain multiplications ~1.3 s; measured 0.2 s."""
    holders = sorted(random.sample(range(1, 101), 51))
    values = [[os.urandom(16) for _ in holders] for _ in range(90)] + [[os.urandom(32) for _ in holders]] * 10
    started = time.perf_counter()
    combiner = Combiner(holders)
    for secret_shares in values:
        combiner.combine(secret_shares)
    assert time.perf_counter() - started < 1.0


# Share bundles


@dataclass
class Party:
    name: str
    key: X25519PrivateKey

    @property
    def public(self) -> bytes:
        return public_key_bytes(self.key)


def seal(sender: Party, recipient: Party, /, **changes: object) -> bytes:
    fields: dict[str, object] = {
        "job_id": JOB,
        "instance_id": INSTANCE,
        "sender": sender.name,
        "recipient": recipient.name,
        "key_share": (7, bytes(range(32))),
        "seed_share": (7, bytes(range(100, 116))),
    }
    fields.update(changes)
    return seal_bundle(sender.key, recipient.public, **fields)  # type: ignore[arg-type]


def open_(opener: Party, sender: Party, ciphertext: bytes, /, **changes: str) -> Bundle:
    """``opener`` opens ``ciphertext`` as ``sender``'s bundle for ``opener`` (unless ``changes`` say otherwise)."""
    fields = {"job_id": JOB, "instance_id": INSTANCE, "sender": sender.name, "recipient": opener.name}
    fields.update(changes)
    return open_bundle(opener.key, sender.public, ciphertext=ciphertext, **fields)


@pytest.fixture
def alice() -> Party:
    return Party("alice", generate_private_key())


@pytest.fixture
def bob() -> Party:
    return Party("bob", generate_private_key())


def test_a_bundle_opens_for_its_recipient(alice: Party, bob: Party) -> None:
    bundle = open_(bob, alice, seal(alice, bob))
    assert bundle == Bundle(key_share=(7, bytes(range(32))), seed_share=(7, bytes(range(100, 116))))


def test_a_client_seals_its_own_share_to_itself(alice: Party) -> None:
    assert open_(alice, alice, seal(alice, alice)).seed_share == (7, bytes(range(100, 116)))


def test_each_bundle_has_its_own_nonce(alice: Party, bob: Party) -> None:
    assert seal(alice, bob) != seal(alice, bob)


@pytest.mark.parametrize(
    "changes",
    [
        {"job_id": "job-2"},
        {"instance_id": "instance-2"},
        {"sender": "carol"},
        {"recipient": "carol"},
        {"sender": "bob", "recipient": "alice"},
        {"sender": "alice\x00", "recipient": "bob"},
    ],
)
def test_a_bundle_opens_for_nothing_else(alice: Party, bob: Party, changes: dict[str, str]) -> None:
    with pytest.raises(InvalidBundle):
        open_(bob, alice, seal(alice, bob), **changes)


def test_a_bundle_relayed_to_another_client_or_pair_does_not_open(alice: Party, bob: Party) -> None:
    carol = Party("carol", generate_private_key())
    ciphertext = seal(alice, bob)
    with pytest.raises(InvalidBundle):
        open_(carol, alice, ciphertext, recipient="bob")  # carol has not bob's key
    with pytest.raises(InvalidBundle):
        open_(carol, alice, ciphertext)  # passed off as alice's bundle for carol
    with pytest.raises(InvalidBundle):
        open_(bob, carol, ciphertext)  # passed off as carol's bundle for bob


def test_a_tampered_bundle_does_not_open(alice: Party, bob: Party) -> None:
    ciphertext = seal(alice, bob)
    for position in range(len(ciphertext)):
        tampered = bytearray(ciphertext)
        tampered[position] ^= 0x01
        with pytest.raises(InvalidBundle):
            open_(bob, alice, bytes(tampered))
    for cut in (ciphertext[:-1], ciphertext[:20], ciphertext[:5], b"", ciphertext + b"\x00"):
        with pytest.raises(InvalidBundle):
            open_(bob, alice, cut)


def test_a_bundle_from_an_unusable_key_does_not_open(bob: Party) -> None:
    for raw in (bytes(31), bytes(32)):  # a wrong length; a low-order point (the shared secret would be zero)
        with pytest.raises(InvalidBundle):
            open_bundle(bob.key, raw, job_id=JOB, instance_id=INSTANCE, sender="x", recipient="bob", ciphertext=b"")


def test_sealing_refuses_a_bad_peer_key_or_share(alice: Party, bob: Party) -> None:
    with pytest.raises(InvalidPublicKey):
        seal_bundle(
            alice.key,
            bytes(32),
            job_id=JOB,
            instance_id=INSTANCE,
            sender="alice",
            recipient="bob",
            key_share=(1, bytes(32)),
            seed_share=(1, bytes(16)),
        )
    for changes in (
        {"key_share": (1, bytes(16))},
        {"seed_share": (1, bytes(32))},
        {"key_share": (0, bytes(32))},
        {"seed_share": (0x10000, bytes(16))},
    ):
        with pytest.raises(ValueError):
            seal(alice, bob, **changes)


# Self masks


def test_a_self_mask_is_removed_by_subtracting_it() -> None:
    seed, values = self_mask_seed(), np.arange(1000, dtype="<u8")
    vector = values.copy()
    apply_self_mask(vector, seed, job_id=JOB, instance_id=INSTANCE, client_id="a", subtract=False)
    assert not np.array_equal(vector, values)
    apply_self_mask(vector, seed, job_id=JOB, instance_id=INSTANCE, client_id="a", subtract=True)
    assert np.array_equal(vector, values)


def test_a_self_mask_is_bound_to_its_seed_job_instance_and_client() -> None:
    seed = self_mask_seed()

    def mask(**changes: str | bytes) -> bytes:
        fields: dict[str, str | bytes] = {"seed": seed, "job_id": JOB, "instance_id": INSTANCE, "client_id": "a"}
        fields.update(changes)
        vector = np.zeros(16, dtype="<u8")
        apply_self_mask(vector, subtract=False, **fields)  # type: ignore[arg-type]
        return vector.tobytes()

    masks = [mask(), mask(seed=self_mask_seed()), mask(job_id="j"), mask(instance_id="i"), mask(client_id="b")]
    assert mask() == masks[0]
    assert len(set(masks)) == len(masks)


def test_self_mask_seeds_are_fresh_and_16_bytes() -> None:
    seeds = {self_mask_seed() for _ in range(100)}
    assert len(seeds) == 100
    assert {len(s) for s in seeds} == {16}


@pytest.mark.parametrize(("seed", "instance_id"), [(bytes(15), INSTANCE), (bytes(32), INSTANCE), (bytes(16), "")])
def test_a_self_mask_needs_a_16_byte_seed_and_an_instance(seed: bytes, instance_id: str) -> None:
    with pytest.raises(ValueError):
        apply_self_mask(
            np.zeros(4, dtype="<u8"), seed, job_id=JOB, instance_id=instance_id, client_id="a", subtract=False
        )


# The server's unmasking


@pytest.mark.parametrize("chunk", [1, 3, 4, 1000])
def test_chunked_removal_matches_one_mask_after_another(chunk: int) -> None:
    masks = [(os.urandom(32), bool(i % 2)) for i in range(5)]
    expected = np.random.default_rng(3).integers(0, 2**64, size=37, dtype=np.uint64)
    chunked = expected.copy()
    for key, subtract in masks:
        apply_mask(expected, key, subtract=subtract)
    shares._remove_masks(chunked, masks, chunk=chunk)
    assert np.array_equal(chunked, expected)


@dataclass
class Client:
    """One client's secrets for a round, and what it computes."""

    name: str
    mask_key: X25519PrivateKey
    encryption_key: X25519PrivateKey
    seed: bytes
    values: np.ndarray

    def bundles(self, holders: list[Client], threshold: int) -> dict[str, bytes]:
        key_shares = split_secret(private_key_bytes(self.mask_key), threshold, len(holders))
        seed_shares = split_secret(self.seed, threshold, len(holders))
        return {
            holder.name: seal_bundle(
                self.encryption_key,
                public_key_bytes(holder.encryption_key),
                job_id=JOB,
                instance_id=INSTANCE,
                sender=self.name,
                recipient=holder.name,
                key_share=key_share,
                seed_share=seed_share,
            )
            for holder, key_share, seed_share in zip(holders, key_shares, seed_shares, strict=True)
        }

    def masked_input(self, sharers: list[Client]) -> np.ndarray:
        public_keys = {c.name: public_key_bytes(c.mask_key) for c in sharers}
        masked = mask_vector(
            self.values,
            job_id=JOB,
            instance_id=INSTANCE,
            client_id=self.name,
            private_key=self.mask_key,
            public_keys=public_keys,
        )
        apply_self_mask(masked, self.seed, job_id=JOB, instance_id=INSTANCE, client_id=self.name, subtract=False)
        return masked

    def open_all(self, bundles: dict[str, dict[str, bytes]], sharers: list[Client]) -> dict[str, Bundle]:
        return {
            sender.name: open_bundle(
                self.encryption_key,
                public_key_bytes(sender.encryption_key),
                job_id=JOB,
                instance_id=INSTANCE,
                sender=sender.name,
                recipient=self.name,
                ciphertext=bundles[sender.name][self.name],
            )
            for sender in sharers
        }


def new_client(name: str, length: int, rng: np.random.Generator) -> Client:
    values = rng.integers(-(2**63), 2**63, size=length, dtype=np.int64)
    return Client(name, generate_private_key(), generate_private_key(), self_mask_seed(), values)


def run_round(registrants: list[Client], sharers: set[str], senders: set[str], threshold: int, seed: int) -> None:
    """A whole round in memory: ``registrants`` are U1, ``sharers`` U2, ``senders`` U3 (the survivors). Every
    survivor answers the unmask request; the server rebuilds the secrets from ``threshold`` of them."""
    chooser = random.Random(seed)
    holders = sorted(registrants, key=lambda c: c.name)  # share index = 1 + position in sorted(U1)
    bundles = {c.name: c.bundles(holders, threshold) for c in holders if c.name in sharers}
    u2 = [c for c in holders if c.name in sharers]
    survivors = [c for c in u2 if c.name in senders]
    total = np.zeros(len(registrants[0].values), dtype="<u8")
    for client in survivors:
        total += client.masked_input(u2)

    opened = {c.name: c.open_all(bundles, u2) for c in survivors}
    responders = chooser.sample(survivors, threshold)
    combiner = Combiner([opened[r.name][u2[0].name].seed_share[0] for r in responders])
    self_seeds = {
        v.name: combiner.combine([opened[r.name][v.name].seed_share[1] for r in responders]) for v in survivors
    }
    dropped_keys = {
        v.name: combiner.combine([opened[r.name][v.name].key_share[1] for r in responders])
        for v in u2
        if v.name not in senders
    }
    assert self_seeds == {v.name: v.seed for v in survivors}
    unmask_total(
        total,
        job_id=JOB,
        instance_id=INSTANCE,
        survivors={c.name: public_key_bytes(c.mask_key) for c in survivors},
        self_seeds=self_seeds,
        dropped_keys=dropped_keys,
    )
    expected = np.zeros_like(total)
    for client in survivors:
        expected += client.values.view("<u8")
    assert np.array_equal(total, expected)


@given(data=st.data())
@settings(max_examples=25, deadline=None)
def test_the_server_unmasks_exactly_the_survivors_sum(data: st.DataObject) -> None:
    names = data.draw(st.lists(st.text("abz0", min_size=1, max_size=3), min_size=2, max_size=7, unique=True))
    threshold = data.draw(st.integers(len(names) // 2 + 1, len(names)), label="threshold")
    order = data.draw(st.permutations(names), label="order")
    sharers = order[: data.draw(st.integers(threshold, len(names)), label="|U2|")]
    senders = sharers[: data.draw(st.integers(threshold, len(sharers)), label="|U3|")]
    length = data.draw(st.integers(1, 70), label="length")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32), label="rng"))
    clients = [new_client(name, length, rng) for name in names]
    run_round(clients, set(sharers), set(senders), threshold, seed=length)


def test_a_long_vector_is_unmasked_over_several_chunks_and_stream_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shares, "_OPEN_STREAMS", 2)
    rng = np.random.default_rng(5)
    clients = [new_client(f"c{i}", 2 * shares._CHUNK + 5, rng) for i in range(5)]
    run_round(clients, {"c0", "c1", "c2", "c3", "c4"}, {"c0", "c2", "c4"}, threshold=3, seed=1)


def test_with_no_one_dropped_only_self_masks_are_removed() -> None:
    rng = np.random.default_rng(6)
    clients = [new_client(f"c{i}", 10, rng) for i in range(3)]
    run_round(clients, {"c0", "c1", "c2"}, {"c0", "c1", "c2"}, threshold=2, seed=2)


@pytest.mark.parametrize(
    "changes",
    [
        {"self_seeds": {}},
        {"self_seeds": {"a": bytes(16), "b": bytes(16), "c": bytes(16)}},
        {"dropped_keys": {"a": bytes(32)}},
        {"self_seeds": {"a": bytes(15), "b": bytes(16)}},
        {"dropped_keys": {"c": bytes(31)}},
        {"survivors": {"a": bytes(32), "b": bytes(33)}},
        {"total": np.zeros(4, dtype=np.int64)},
        {"total": np.zeros((2, 2), dtype="<u8")},
    ],
)
def test_unmask_refuses_arguments_that_do_not_fit_without_touching_the_total(changes: dict[str, object]) -> None:
    a, b = public_key_bytes(generate_private_key()), public_key_bytes(generate_private_key())
    total = np.arange(4, dtype="<u8")
    fields: dict[str, object] = {
        "total": total,
        "survivors": {"a": a, "b": b},
        "self_seeds": {"a": bytes(16), "b": bytes(16)},
        "dropped_keys": {"c": private_key_bytes(generate_private_key())},
    }
    fields.update(changes)
    with pytest.raises(ValueError):
        unmask_total(job_id=JOB, instance_id=INSTANCE, **fields)  # type: ignore[arg-type]
    assert np.array_equal(total, np.arange(4, dtype="<u8"))
