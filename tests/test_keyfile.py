"""The data holder's key file: one key for one job instance, and for one set of statistics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.securesum.keyfile import KeyFile, KeyFileError
from orchestrator.securesum.masking import public_key_bytes


def test_a_key_file_is_bound_to_its_job_instance_and_its_statistics(tmp_path: Path) -> None:
    path = tmp_path / "a.key"
    key = KeyFile.open(path, "job-1")
    assert path.stat().st_mode & 0o777 == 0o600
    key.check(None)  # not bound yet: any instance
    key.bind("instance-1")
    key.mask(b"statistics of run 1")
    again = KeyFile.open(path, "job-1")
    assert public_key_bytes(again.private_key) == public_key_bytes(key.private_key)
    assert again.instance_id == "instance-1"
    again.check("instance-1")
    again.mask(b"statistics of run 1")  # a rerun with the same rows takes part
    with pytest.raises(KeyFileError, match="another instance"):
        again.check("instance-2")
    with pytest.raises(KeyFileError, match="no longer exists"):
        again.check(None)
    with pytest.raises(KeyFileError, match="same rows"):
        again.mask(b"other statistics")  # the service would see both under the same masks
    with pytest.raises(KeyFileError, match="job-1, not of job job-2"):
        KeyFile.open(path, "job-2")
    assert set(json.loads(path.read_text())) == {"jobId", "instanceId", "statistics", "privateKey"}


def test_a_raw_key_of_an_older_version_is_read_unbound(tmp_path: Path) -> None:
    path = tmp_path / "old.key"
    path.write_bytes(bytes(range(32)))
    key = KeyFile.open(path, "job-1")
    assert key.instance_id is None and key.statistics is None
    for broken in (b"{}", b"not json", json.dumps({"jobId": "job-1", "privateKey": "!!"}).encode()):
        path.write_bytes(broken)
        with pytest.raises(KeyFileError, match="not a key file"):
            KeyFile.open(path, "job-1")
