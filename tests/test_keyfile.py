"""The data holder's key file: every step of one secure-sum job instance (keys, seed, the shares posted and
received, the unmask split answered), bound to that instance and to one set of statistics, written 0600
and atomically."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from orchestrator.securesum.keyfile import KeyFile, KeyFileError
from orchestrator.securesum.masking import private_key_bytes, public_key_bytes

MEMBERS = {
    "jobId",
    "instanceId",
    "statistics",
    "privateKey",
    "encryptionKey",
    "selfMaskSeed",
    "posted",
    "received",
    "answered",
}


def filled(path: Path) -> KeyFile:
    """A key file that went through every round: bound, masked, shares posted and received, unmask answered."""
    key = KeyFile.open(path, "job-1")
    key.bind("instance-1")
    key.mask(b"statistics of run 1")
    key.keep(posted={"a": base64.b64encode(b"bundle for a").decode(), "b": base64.b64encode(b"for b").decode()})
    key.keep(received={"b": {"key": [2, base64.b64encode(bytes(32)).decode()], "seed": [2, "AAAA"]}})
    key.keep(answered={"survivors": ["a", "b"], "dropped": ["c"]})
    return key


def test_every_member_survives_a_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "a.key"
    key = filled(path)
    again = KeyFile.open(path, "job-1")
    assert private_key_bytes(again.private_key) == private_key_bytes(key.private_key)
    assert private_key_bytes(again.encryption_key) == private_key_bytes(key.encryption_key)
    assert private_key_bytes(again.encryption_key) != private_key_bytes(again.private_key)
    assert len(again.seed) == 16 and again.seed == key.seed
    assert (again.job_id, again.instance_id, again.statistics) == ("job-1", "instance-1", key.statistics)
    assert (again.posted, again.received, again.answered) == (key.posted, key.received, key.answered)
    assert set(json.loads(path.read_text())) == MEMBERS


def test_a_new_file_holds_every_member_before_it_is_bound(tmp_path: Path) -> None:
    """The keys and the seed are written when the file is made: a crash right after the registration must
    not leave a client whose registered keys are lost."""
    path = tmp_path / "a.key"
    key = KeyFile.open(path, "job-1")
    kept = json.loads(path.read_text())
    assert set(kept) == MEMBERS
    assert (kept["instanceId"], kept["statistics"], kept["posted"], kept["received"], kept["answered"]) == (
        None,
        None,
        {},
        {},
        None,
    )
    again = KeyFile.open(path, "job-1")
    assert private_key_bytes(again.encryption_key) == private_key_bytes(key.encryption_key) and again.seed == key.seed


def test_a_key_file_is_bound_to_its_job_instance_and_its_statistics(tmp_path: Path) -> None:
    path = tmp_path / "a.key"
    key = KeyFile.open(path, "job-1")
    key.check(None)  # not bound yet: any instance
    key.bind("instance-1")
    key.mask(b"statistics of run 1")
    again = KeyFile.open(path, "job-1")
    assert public_key_bytes(again.private_key) == public_key_bytes(key.private_key)
    again.check("instance-1")
    again.bind("instance-1")
    again.mask(b"statistics of run 1")  # a rerun with the same rows takes part
    with pytest.raises(KeyFileError, match="another instance"):
        again.check("instance-2")
    with pytest.raises(KeyFileError, match="another instance"):
        again.bind("instance-2")
    with pytest.raises(KeyFileError, match="no longer exists"):
        again.check(None)
    with pytest.raises(KeyFileError, match="same rows"):
        again.mask(b"other statistics")  # the service would see both under the same masks
    with pytest.raises(KeyFileError, match="job-1, not of job job-2"):
        KeyFile.open(path, "job-2")
    assert KeyFile.open(path, "job-1").instance_id == "instance-1"


def test_a_raw_key_of_an_older_version_is_read_unbound(tmp_path: Path) -> None:
    path = tmp_path / "old.key"
    path.write_bytes(bytes(range(32)))
    key = KeyFile.open(path, "job-1")
    assert private_key_bytes(key.private_key) == bytes(range(32))
    assert key.instance_id is None and key.statistics is None and key.answered is None
    assert (key.posted, key.received) == ({}, {})
    # Bound, it becomes a key file of this version: the same mask key, and the new members kept.
    key.bind("instance-1")
    again = KeyFile.open(path, "job-1")
    assert private_key_bytes(again.private_key) == bytes(range(32))
    assert private_key_bytes(again.encryption_key) == private_key_bytes(key.encryption_key) and again.seed == key.seed
    assert set(json.loads(path.read_text())) == MEMBERS


@pytest.mark.parametrize(
    "broken",
    [
        b"{}",
        b"not json",
        b"[]",
        b'"a string"',
        b"\xff" * 40,
        bytes(31),
        bytes(33),
        json.dumps({"jobId": "job-1", "privateKey": "!!"}).encode(),
        json.dumps({"jobId": "job-1", "privateKey": base64.b64encode(bytes(31)).decode()}).encode(),
    ],
)
def test_garbage_is_refused(tmp_path: Path, broken: bytes) -> None:
    path = tmp_path / "broken.key"
    path.write_bytes(broken)
    with pytest.raises(KeyFileError, match="not a key file"):
        KeyFile.open(path, "job-1")


@pytest.mark.parametrize(
    "change",
    [
        {"selfMaskSeed": base64.b64encode(bytes(15)).decode()},
        {"selfMaskSeed": None},
        {"encryptionKey": "not base64!"},
        {"instanceId": 7},
        {"statistics": ["x"]},
        {"posted": "bundles"},
        {"received": 3},
    ],
)
def test_a_damaged_member_is_refused(tmp_path: Path, change: dict[str, object]) -> None:
    path = tmp_path / "a.key"
    filled(path)
    kept = json.loads(path.read_text())
    path.write_text(json.dumps({**kept, **change}))
    with pytest.raises(KeyFileError, match="not a key file"):
        KeyFile.open(path, "job-1")


def test_an_unreadable_file_says_why(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read the key file"):
        KeyFile.open(tmp_path, "job-1")  # a directory


def test_mode_0600_when_made_and_after_every_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "a.key"
    old_umask = os.umask(0)  # the mode is the file's own, not what the umask happens to leave
    try:
        key = KeyFile.open(path, "job-1")
        assert path.stat().st_mode & 0o777 == 0o600
        key.bind("instance-1")
        assert path.stat().st_mode & 0o777 == 0o600
        key.keep(posted={"a": "AAAA"})
        assert path.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old_umask)


def test_a_rewrite_replaces_the_file_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A step is written to a temporary file renamed into place: a crash before the rename leaves the
    previous state whole, never half a file."""
    path = tmp_path / "a.key"
    key = KeyFile.open(path, "job-1")
    key.bind("instance-1")
    before = path.read_bytes()
    inode = path.stat().st_ino

    def crash(src: object, dst: object) -> None:
        raise OSError("crashed before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="crashed"):
        key.keep(posted={"a": "AAAA"})
    assert path.read_bytes() == before
    assert KeyFile.open(path, "job-1").posted == {}
    monkeypatch.undo()
    key.keep(posted={"a": "AAAA"})
    assert path.stat().st_ino != inode  # renamed into place, not rewritten in place
    assert KeyFile.open(path, "job-1").posted == {"a": "AAAA"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.key"]  # no temporary file left behind


def test_two_runs_never_make_two_keys(tmp_path: Path) -> None:
    """A new file is created exclusively; a second open reads the first one's keys instead of making its own."""
    path = tmp_path / "a.key"
    first, second = KeyFile.open(path, "job-1"), KeyFile.open(path, "job-1")
    assert private_key_bytes(first.private_key) == private_key_bytes(second.private_key)
    assert first.seed == second.seed


def test_a_stale_temporary_file_does_not_widen_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "a.key"
    key = KeyFile.open(path, "job-1")
    stale = tmp_path / "a.key.tmp"  # left by a crash, or made by someone else
    stale.write_text("x")
    stale.chmod(0o644)
    key.bind("instance-1")
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    "change",
    [
        {"answered": "x"},
        {"answered": {"survivors": 1}},
        {"posted": {"a": 5}},
        {"received": {"b": "x"}},
        {"received": {"b": {"key": [1]}}},
    ],
)
def test_a_damaged_step_is_refused_when_opened(tmp_path: Path, change: dict[str, object]) -> None:
    path = tmp_path / "a.key"
    filled(path)
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(KeyFileError, match="not a key file"):
        KeyFile.open(path, "job-1")
