"""Every Redis key and channel name; nothing else builds them.

A job's keys share the literal hash tag ``{jobId}`` (the original's ``job:{jobId}`` names), so in a Redis
Cluster they would live in one slot. That alone does not make the service run on a cluster: the scripts
that change a job also touch global keys in the same call (the ``jobs:*`` indexes, the aggregation and
delivery queues, the rate and quota counters, the audit stream; orchestrator.scripts lists each script's
KEYS), and a cluster refuses such a script with CROSSSLOT. Today the service needs one Redis server (not a
cluster); issue 14 (#11) makes Redis Cluster work.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.models import JobStatus


@dataclass(frozen=True)
class Keys:
    prefix: str = ""

    def job(self, job_id: str) -> str:
        """Hash: totalClients, doneCount, schema, finalResult, status, times, version."""
        return f"{self.prefix}job:{{{job_id}}}"

    def updated_clients(self, job_id: str) -> str:
        """Set of the clients counted for the job (the original's name)."""
        return f"{self.prefix}job:{{{job_id}}}:updatedClients"

    def client_times(self, job_id: str) -> str:
        """Hash clientId -> epoch milliseconds when it was counted."""
        return f"{self.prefix}job:{{{job_id}}}:clientTimes"

    def events(self, job_id: str) -> str:
        """List: the job's most recent events, oldest first, bounded."""
        return f"{self.prefix}job:{{{job_id}}}:events"

    def tombstone(self, job_id: str) -> str:
        """String: the last version of an expired job, so a new job of the same id carries on from it."""
        return f"{self.prefix}job:{{{job_id}}}:tomb"

    def deliveries(self, job_id: str) -> str:
        """Hash destination -> delivery record (JSON: state, attempts, lastError, ...)."""
        return f"{self.prefix}job:{{{job_id}}}:deliveries"

    def public_keys(self, job_id: str) -> str:
        """Hash clientId -> base64 X25519 public key: the key round of a secure-sum job."""
        return f"{self.prefix}job:{{{job_id}}}:publicKeys"

    def vectors(self, job_id: str) -> str:
        """Hash clientId -> the client's (masked) statistics vector, little-endian uint64 bytes."""
        return f"{self.prefix}job:{{{job_id}}}:vectors"

    def sharers(self, job_id: str) -> str:
        """Hash clientId -> digest of its share post: who completed a secure sum's shares round (U2)."""
        return f"{self.prefix}job:{{{job_id}}}:sharers"

    def shares(self, job_id: str) -> str:
        """Hash '<to>/<from>' -> the share bundle ``from`` encrypted for ``to`` (the service cannot read it)."""
        return f"{self.prefix}job:{{{job_id}}}:shares"

    def unmask(self, job_id: str) -> str:
        """Hash clientId -> its unmasking answer (JSON: its shares of the survivors' self-mask seeds and of the
        dropped clients' mask keys), kept only until the job finishes."""
        return f"{self.prefix}job:{{{job_id}}}:unmask"

    def dropped(self, job_id: str) -> str:
        """Hash clientId -> the round at which a secure sum dropped it."""
        return f"{self.prefix}job:{{{job_id}}}:dropped"

    def protocol_keys(self, job_id: str) -> list[str]:
        """What a secure sum keeps only while it runs: the vectors, the shares, the unmasking answers
        (deleted when the job finishes, fails or is cancelled)."""
        return [self.vectors(job_id), self.sharers(job_id), self.shares(job_id), self.unmask(job_id)]

    def round_keys(self, job_id: str) -> dict[str, str]:
        """The keys a script that may close a round of a secure sum (lib/rounds.lua) declares, by name."""
        return {
            **self.job_keys(job_id),
            "public_keys": self.public_keys(job_id),
            "sharers": self.sharers(job_id),
            "unmask": self.unmask(job_id),
            "dropped": self.dropped(job_id),
            "vectors": self.vectors(job_id),
            "shares": self.shares(job_id),
            "in_progress": self.jobs_by_status(JobStatus.IN_PROGRESS),
            "aggregating": self.jobs_by_status(JobStatus.AGGREGATING),
            "failed": self.jobs_by_status(JobStatus.FAILED),
            "deadlines": self.jobs_by_deadline,
            "updated": self.jobs_by_updated,
            "queue": self.aggregation_queue,
        }

    def job_keys(self, job_id: str) -> dict[str, str]:
        """The job's own keys, by the names the scripts declare them under (orchestrator.scripts)."""
        return {
            "job": self.job(job_id),
            "clients": self.updated_clients(job_id),
            "times": self.client_times(job_id),
            "events": self.events(job_id),
        }

    @property
    def jobs_by_created(self) -> str:
        """Sorted set jobId -> createdAt ms: the listing, newest first."""
        return f"{self.prefix}jobs:created"

    @property
    def jobs_by_updated(self) -> str:
        """Sorted set jobId -> updatedAt ms: what the janitor expires."""
        return f"{self.prefix}jobs:updated"

    def jobs_by_status(self, status: JobStatus) -> str:
        """Sorted set jobId -> createdAt ms of the jobs currently in ``status``."""
        return f"{self.prefix}jobs:status:{status.value}"

    def status_indexes(self) -> list[str]:
        return [self.jobs_by_status(s) for s in JobStatus]

    @property
    def jobs_by_deadline(self) -> str:
        """Sorted set jobId -> collection deadline (epoch ms) of the jobs still collecting clients."""
        return f"{self.prefix}jobs:deadlines"

    @property
    def aggregation_queue(self) -> str:
        """Stream of jobs handed over to aggregation (consumed by the aggregation workers)."""
        return f"{self.prefix}aggregation:queue"

    @property
    def delivery_queue(self) -> str:
        """Stream of results to deliver (jobId, destination, version), consumed by the delivery workers."""
        return f"{self.prefix}deliveries:queue"

    @property
    def audit(self) -> str:
        """Stream of state-changing requests: who, role, IP, action, job, outcome (bounded)."""
        return f"{self.prefix}audit"

    def ws_ticket(self, ticket: str) -> str:
        """String: a single-use WebSocket ticket's principal (JSON), expiring after WS_TICKET_TTL."""
        return f"{self.prefix}ws-ticket:{ticket}"

    def rate_counter(self, kind: str, who: str, window: int) -> str:
        """Counter of the writes of a client or an IP in one rate-limit window."""
        return f"{self.prefix}ratelimit:{kind}:{who}:{window}"

    def job_quota_counter(self, kind: str, who: str, window: int) -> str:
        """Counter of the jobs a client or an IP created in one JOB_CREATION_WINDOW."""
        return f"{self.prefix}jobquota:{kind}:{who}:{window}"

    @property
    def events_channel(self) -> str:
        """Pub/sub channel carrying every job event as JSON."""
        return f"{self.prefix}events"
