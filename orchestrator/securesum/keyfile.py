"""A data holder's key file: what it needs to take part in one secure-sum job instance again after a crash,
kept so that a rerun resumes where it stopped (same keys, same seed, the same shares posted, the shares it
received, the unmask answer it gave), and refused for any other instance (a jobId used again after its job
expired).

The file is JSON, mode 0600, rewritten atomically (a temporary file renamed into place) after each step:
``{"jobId", "instanceId" (null until the first key registration answers), "statistics" (SHA-256 of the
statistics it masked, null until it masked them), "privateKey" (mask agreement), "encryptionKey" (share
encryption; both base64 of the raw 32 bytes), "selfMaskSeed" (base64, 16 bytes), "posted" ({recipient:
bundle base64}, the shares it posted), "received" ({sender: {"key": [index, base64], "seed": [index,
base64]}}), "answered" ({"survivors": [...], "dropped": [...]}, the unmask request it answered)}``. A file of
the raw 32 bytes alone (written before instances existed) is read as a mask key not yet bound to any instance.

A client whose file is lost cannot resume: it registers new keys, which the closed keys round refuses, so it
counts as dropped, never as a wrong input.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from orchestrator.securesum.masking import generate_private_key, private_key_bytes
from orchestrator.securesum.shares import self_mask_seed

_RAW_KEY_BYTES = 32


class KeyFileError(ValueError):
    """The key file cannot be used for this job instance (or cannot be read); the message says why."""


@dataclass
class KeyFile:
    path: Path
    job_id: str
    private_key: X25519PrivateKey
    instance_id: str | None = None
    # SHA-256 of the (unmasked) statistics this key masked, once it has masked them: a rerun must send the
    # same, or the service would see two vectors under the same masks, and so their difference.
    statistics: str | None = None
    encryption_key: X25519PrivateKey = field(default_factory=generate_private_key)
    seed: bytes = field(default_factory=self_mask_seed)
    posted: dict[str, str] = field(default_factory=dict)
    received: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    answered: dict[str, list[str]] | None = None

    @classmethod
    def open(cls, path: Path, job_id: str) -> KeyFile:
        """The state kept at ``path`` for ``job_id``, or a new one written there (mode 0600) if there is none."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            made = cls(path, job_id, generate_private_key())
            made._write(exclusive=True)
            return made
        except OSError as e:
            raise KeyFileError(f"cannot read the key file {path}: {e.strerror or e}") from None
        if len(raw) == _RAW_KEY_BYTES:
            return cls(path, job_id, X25519PrivateKey.from_private_bytes(raw))
        try:
            data = json.loads(raw)
            stored_job, instance, statistics = data["jobId"], data.get("instanceId"), data.get("statistics")
            key = X25519PrivateKey.from_private_bytes(_bytes(data["privateKey"]))
            made = cls(path, job_id, key, instance or None, statistics or None)
            if "encryptionKey" in data:
                made.encryption_key = X25519PrivateKey.from_private_bytes(_bytes(data["encryptionKey"]))
                made.seed = _bytes(data["selfMaskSeed"])
            made.posted = dict(data.get("posted") or {})
            made.received = dict(data.get("received") or {})
            made.answered = data.get("answered")
            _check_steps(made.posted, made.received, made.answered)
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
            raise KeyFileError(f"{path} is not a key file of this tool") from None
        if stored_job != job_id:
            raise KeyFileError(f"{path} holds the key of job {stored_job}, not of job {job_id}")
        if not all(v is None or isinstance(v, str) for v in (instance, statistics)) or len(made.seed) != 16:
            raise KeyFileError(f"{path} is not a key file of this tool")
        return made

    def check(self, instance_id: str | None) -> None:
        """Refuse an instance other than the one this key was registered with (``None``: the job does not
        exist, so a registration would create a new instance)."""
        if self.instance_id is not None and instance_id != self.instance_id:
            now = "no longer exists" if instance_id is None else f"is now another instance ({instance_id})"
            raise KeyFileError(
                f"{self.path} holds the key of instance {self.instance_id} of job {self.job_id}, which {now}: "
                "a key takes part in one job instance only; use a new key file"
            )

    def bind(self, instance_id: str) -> None:
        """Keep the instance this key was registered with (the first registration's answer)."""
        self.check(instance_id)
        if self.instance_id is None:
            self.instance_id = instance_id
            self._write(exclusive=False)

    def mask(self, statistics: bytes) -> None:
        """Before masking ``statistics`` with this key: refuse other statistics than a first run masked (its
        masked vector may have reached the service), and keep the digest of these."""
        digest = hashlib.sha256(statistics).hexdigest()
        if self.statistics is not None and digest != self.statistics:
            raise KeyFileError(
                f"{self.path} already masked other statistics for job {self.job_id}: a rerun must send the same "
                "rows (the service would see both vectors under the same masks, and so their difference); "
                "with other rows, take part in a new job"
            )
        if self.statistics is None:
            self.statistics = digest
            self._write(exclusive=False)

    def keep(self, **changes: Any) -> None:
        """Record a step (posted, received, answered) before acting on it, so a rerun repeats it exactly."""
        for name, value in changes.items():
            setattr(self, name, value)
        self._write(exclusive=False)

    def _write(self, *, exclusive: bool) -> None:
        text = json.dumps(
            {
                "jobId": self.job_id,
                "instanceId": self.instance_id,
                "statistics": self.statistics,
                "privateKey": _text(private_key_bytes(self.private_key)),
                "encryptionKey": _text(private_key_bytes(self.encryption_key)),
                "selfMaskSeed": _text(self.seed),
                "posted": self.posted,
                "received": self.received,
                "answered": self.answered,
            }
        )
        # A new file is created exclusively (two runs must not each write a key); a rewrite goes to a
        # temporary file renamed into place, so a crash never leaves half a key.
        if exclusive:
            target = self.path
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        else:  # a fresh temporary file of its own (mode 0600, never a stale or linked one)
            fd, name = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name + ".")
            target = Path(name)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            if not exclusive:
                os.replace(target, self.path)
        except BaseException:
            if not exclusive:
                target.unlink(missing_ok=True)
            raise


def _check_steps(posted: dict[str, Any], received: dict[str, Any], answered: Any) -> None:
    """TypeError unless the kept steps have the shapes _write gives them (a damaged file fails when opened,
    not halfway through a round)."""
    if not all(isinstance(to, str) and isinstance(text, str) for to, text in posted.items()):
        raise TypeError("posted")
    for shares in received.values():
        if not isinstance(shares, dict) or set(shares) != {"key", "seed"}:
            raise TypeError("received")
        for index, value in shares.values():
            if not isinstance(index, int) or not isinstance(value, str):
                raise TypeError("received")
    if answered is not None:
        if not isinstance(answered, dict) or set(answered) != {"survivors", "dropped"}:
            raise TypeError("answered")
        if not all(isinstance(ids, list) and all(isinstance(i, str) for i in ids) for ids in answered.values()):
            raise TypeError("answered")


def _text(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _bytes(text: Any) -> bytes:
    if not isinstance(text, str):
        raise TypeError("not base64 text")
    return base64.b64decode(text, validate=True)
