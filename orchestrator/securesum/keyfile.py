"""A data holder's key file: its X25519 private key for one job instance, kept so that a rerun after a crash
takes part with the same key, and refused for any other instance (a jobId used again after its job expired).

The file is JSON, mode 0600: ``{"jobId", "instanceId" (null until the first key registration answers),
"statistics" (SHA-256 of the statistics the key masked, null until it masked them), "privateKey" (base64
of the raw 32 bytes)}``. A file of the raw 32 bytes alone (written before instances
existed) is read as a key not yet bound to any instance.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from orchestrator.securesum.masking import generate_private_key

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

    @classmethod
    def open(cls, path: Path, job_id: str) -> KeyFile:
        """The key kept at ``path`` for ``job_id``, or a new one written there (mode 0600) if there is none."""
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
            private = base64.b64decode(data["privateKey"], validate=True)
            stored_job, instance, statistics = data["jobId"], data.get("instanceId"), data.get("statistics")
            key = X25519PrivateKey.from_private_bytes(private)
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise KeyFileError(f"{path} is not a key file of this tool") from None
        if stored_job != job_id:
            raise KeyFileError(f"{path} holds the key of job {stored_job}, not of job {job_id}")
        if not all(v is None or isinstance(v, str) for v in (instance, statistics)):
            raise KeyFileError(f"{path} is not a key file of this tool")
        return cls(path, job_id, key, instance or None, statistics or None)

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

    def _write(self, *, exclusive: bool) -> None:
        private = self.private_key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        text = json.dumps(
            {
                "jobId": self.job_id,
                "instanceId": self.instance_id,
                "statistics": self.statistics,
                "privateKey": base64.b64encode(private).decode("ascii"),
            }
        )
        # A new file is created exclusively (two runs must not each write a key); a rewrite goes to a
        # temporary file renamed into place, so a crash never leaves half a key.
        target = self.path if exclusive else self.path.with_name(self.path.name + ".tmp")
        flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
        fd = os.open(target, flags, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if not exclusive:
            os.replace(target, self.path)
