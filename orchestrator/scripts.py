"""The Lua scripts, each declared once: its KEYS and ARGV by name, what it returns (orchestrator.lua builds
the Lua prelude and every call from this). One script per state transition, each also publishing the event
that announces it; the Lua is in orchestrator/lua/<name>.lua, shared functions in orchestrator/lua/lib/.

Every script is safe to run twice: redis-py may retry an EVALSHA after a timeout, so a second run of
the same call must find the change already made and do nothing more.
"""

from __future__ import annotations

from orchestrator.lua import Script

# What every state-changing script that announces an event takes after its own arguments (JobStore.change_args).
CHANGE = {
    "now_ms": "now (epoch ms)",
    "now_iso": "now (ISO)",
    "ttl": "key TTL (ms)",
    "history": "how many events a job keeps",
    "channel": "the events channel",
}
_JOB_QUOTAS = {
    "job_window": "the job quotas' fixed window (ms)",
    "client_jobs": "jobs a client may create per window (0: none)",
    "ip_jobs": "jobs an IP may create per window (0: none)",
}
_QUOTA_KEYS = {
    "client_jobs?": "the client's job counter (JobStore.job_quota_counters; left out: not limited)",
    "ip_jobs?": "the IP's job counter (left out: not limited)",
}

# The keys of a script that may close a round of a secure sum or a collection (lib/rounds.lua; Keys.round_keys).
ROUND_KEYS = {
    "job": "job hash",
    "clients": "updatedClients set (a secure sum's U3: the clients whose input is counted)",
    "times": "clientTimes hash ('<ms>:<ordinal>')",
    "events": "events list",
    "public_keys": "the job's public keys hash (clientId -> '<mask key> <encryption key>'; U1)",
    "sharers": "the clients that posted their shares (clientId -> digest; U2)",
    "unmask": "the unmask round's answers (clientId -> JSON)",
    "dropped": "the clients a secure sum dropped (clientId -> round)",
    "vectors": "the job's vectors hash (clientId -> bytes)",
    "shares": "the encrypted share bundles ('<to>/<from>' -> bytes)",
    "in_progress": "status index IN_PROGRESS",
    "aggregating": "status index AGGREGATING",
    "failed": "status index FAILED",
    "deadlines": "jobs:deadlines (the next deadline of each IN_PROGRESS job: its collection's or its round's)",
    "updated": "jobs:updated",
    "queue": "aggregation queue stream",
}
_QUORUM = {
    "min_clients": "minClients of a job this call creates (k; totalClients when not declared)",
    "min_clients_declared": "'1' when the request declares minClients (then it must equal the job's)",
}

RATE_LIMIT = Script(
    "rate_limit",
    uses=("rate",),
    keys={"counters*": "the rate counters (the client's, the IP's)"},
    argv={"window": "the window (ms)", "limits*": "each counter's limit (0: none)"},
    returns="0 when the request may go on, else the milliseconds until the window ends",
)

UPDATE = Script(
    "update",
    uses=("emit", "create", "rate", "rounds"),
    keys={
        **ROUND_KEYS,
        "created": "jobs:created",
        "tomb": "the job's tombstone (a new job of an expired one's id carries on from its last version)",
        "client_rate": "the client's rate counter",
        "ip_rate": "the IP's rate counter",
        "audit": "the audit stream",
        **_QUOTA_KEYS,
    },
    argv={
        "job_id": "jobId",
        "client_id": "clientId",
        "total": "totalClients",
        "schema": "canonical schema JSON or ''",
        "now_ms": "now (epoch ms)",
        "now_iso": "now (ISO)",
        # The deadline and backend of the update that creates the job count; later ones are ignored.
        "deadline": "collection deadline (epoch ms)",
        "aggregation": "aggregation backend asked for ('' for the default)",
        "vector": "this client's vector (little-endian uint64 bytes; '' for none)",
        "vector_length": "vectorLength of a 'sum' job this update creates ('' otherwise)",
        "max_rows": "maxRows of that job ('' otherwise)",
        "schema_digest": "SHA-1 of the schema ('' when no schema came)",
        "max_rows_declared": "'1' when the update declares maxRows (then it must equal the job's)",
        "creation_refusal": "why this update may not create its job ('' when it may: overflow_risk, "
        "job_too_large, storage_full); job_too_large also refuses storing a schema in a job created without one",
        "client_limit": "the client's write limit (0: none)",
        "ip_limit": "the IP's write limit (0: none)",
        "who": "audit: who",
        "role": "audit: role",
        "ip": "audit: IP",
        "instance": "a fresh random instance id, kept if this update creates the job",
        **_QUORUM,
    },
    config={
        "ttl": "key TTL (ms)",
        "history": "how many events a job keeps",
        "channel": "the events channel",
        "window": "the rate limits' fixed window (ms)",
        "audit_max": "the audit stream's length bound",
        **_JOB_QUOTAS,
    },
    returns="{outcome, created, triggered, status, doneCount, totalClients, version, detail}; outcome: "
    "'recorded' | 'duplicate' (client already counted, nothing changed) | 'conflict' (totalClients, schema, "
    "maxRows or minClients differ from the job's; detail names which) | 'closed' (job not collecting) | "
    "'refused' (detail: "
    "vector_required, vector_not_expected, vector_length_mismatch:<length>, keys_incomplete, not_a_participant, "
    "round_not_open, client_dropped, "
    "schema_required, or the creation refusal; nothing changed) | 'rate_limited' (detail: milliseconds until "
    "the window ends; nothing changed) | 'quota_exceeded' (this update would create a job past a job quota; "
    "detail as for rate_limited)",
)

REGISTER_KEY = Script(
    "register_key",
    uses=("emit", "create", "rate", "rounds"),
    keys={
        **ROUND_KEYS,
        "created": "jobs:created",
        "tomb": "the job's tombstone",
        **_QUOTA_KEYS,
    },
    argv={
        "job_id": "jobId",
        "client_id": "clientId",
        "total": "totalClients",
        "schema": "canonical schema JSON or ''",
        **CHANGE,
        "deadline": "collection deadline (epoch ms)",
        "vector_length": "vectorLength ('' when no schema came)",
        "max_rows": "maxRows",
        "public_key": "the mask-agreement public key (canonical base64)",
        "encryption_key": "the share-encryption public key (canonical base64)",
        "round_timeout": "roundTimeout of a job this call creates (ms)",
        "round_timeout_declared": "'1' when the request declares roundTimeout (then it must equal the job's)",
        "schema_digest": "SHA-1 of the schema ('' when no schema)",
        "max_rows_declared": "'1' when the request declares maxRows (then it must equal the job's)",
        "creation_refusal": "why this request may not create the job ('' when it may: overflow_risk, "
        "job_too_large, storage_full)",
        "instance": "a fresh random instance id, kept if this request creates the job",
        **_QUORUM,
    },
    config=_JOB_QUOTAS,
    returns="{outcome, created, keyCount, totalClients, version, status, detail[, instance id]} (the instance "
    "id when the key is registered: a client binds its key file and its masks to it); outcome: 'registered' | "
    "'duplicate' (this very key was registered before: nothing changes) | 'replaced' (another key of this "
    "client, before the round completed: nobody can have used the old one) | 'conflict' (detail: totalClients, "
    "schema, maxRows, minClients, roundTimeout) | 'closed' (not collecting) | 'refused' (detail: schema_required, "
    "not_secure_sum, key_conflict, keys_complete (the keys round is closed), or the creation refusal) "
    "| 'quota_exceeded' (detail: milliseconds until the quota's window ends)",
)

EXPIRE = Script(
    "expire",
    keys={
        "job": "job hash",
        "clients": "updatedClients",
        "times": "clientTimes",
        "events": "events",
        "tomb": "the job's tombstone",
        "deliveries": "deliveries",
        "public_keys": "public keys",
        "vectors": "vectors",
        "sharers": "sharers",
        "shares": "share bundles",
        "unmask": "unmask answers",
        "dropped": "dropped clients",
        "indexes*": "jobs:created, jobs:updated, jobs:deadlines and one status index per JobStatus",
    },
    argv={
        "job_id": "jobId",
        "cutoff": "expire only if updatedAt <= this (epoch ms)",
        "now_iso": "now (ISO)",
        "channel": "the events channel",
        "tomb_ttl": "how long the tombstone is kept (ms)",
    },
    returns="1 when this call expired the job, 0 when it was already gone or has changed since",
)

FINISH = Script(
    "finish",
    uses=("emit",),
    keys={
        "job": "job hash",
        "events": "events list",
        "aggregating": "status index AGGREGATING",
        "finished": "status index COMPLETED or FAILED (the outcome's)",
        "updated": "jobs:updated",
        "clients": "updatedClients",
        "times": "clientTimes",
        "deliveries": "deliveries hash",
        "delivery_queue": "delivery stream",
        "protocol*": "what only the aggregation needed (Keys.protocol_keys: vectors, shares, unmask answers): deleted",
    },
    argv={
        "job_id": "jobId",
        "status": "'COMPLETED' | 'FAILED'",
        "result": "final result JSON ('' for none)",
        "reason": "failure reason",
        **CHANGE,
        "attempt": "the aggregation attempt that must own the job ('' for any)",
        "aggregating_since": "finish only if aggregating since this time or earlier (epoch ms; '' for any)",
        "destinations": "comma-separated delivery destinations ('api', 'file'; '' for none)",
    },
    returns="{1, version} when this call finished the job, else {0, version}",
)

CANCEL = Script(
    "cancel",
    uses=("emit",),
    keys={
        "job": "job hash",
        "events": "events list",
        "in_progress": "status index IN_PROGRESS",
        "aggregating": "status index AGGREGATING",
        "cancelled": "status index CANCELLED",
        "updated": "jobs:updated",
        "clients": "updatedClients",
        "times": "clientTimes",
        "deadlines": "jobs:deadlines",
        "protocol*": "what only the aggregation needed (Keys.protocol_keys): deleted",
    },
    argv={"job_id": "jobId", "reason": "reason", **CHANGE},
    returns="{outcome, status, version}: outcome 'cancelled' (this call did it), 'already' (cancelled before: "
    "nothing changes), 'finished' (COMPLETED or FAILED: refused) or 'missing'",
)

START_ATTEMPT = Script(
    "start_attempt",
    keys={"job": "job hash", "clients": "updatedClients", "public_keys": "public keys (the clients known by id)"},
    argv={"worker": "the worker taking it (for diagnostics)", "now_ms": "now (epoch ms)"},
    returns="{0} when the job is not AGGREGATING (nothing to do), else {1, attempt, aggregatingAt, "
    "coordinatorTriggeredAt or '', aggregation backend or '', schema or '', totalClients, n, the n contributors' "
    "ids..., the ids of the clients known by id (key registrants)...}",
)

MARK_TRIGGERED = Script(
    "mark_triggered",
    keys={"job": "job hash"},
    argv={"attempt": "attempt", "now_ms": "now (epoch ms)"},
    returns="1 when recorded, 0 when the attempt no longer owns the job",
)

CLOSE_COLLECTION = Script(
    "close_collection",
    uses=("emit", "rounds"),
    keys=ROUND_KEYS,
    argv={
        "job_id": "jobId",
        "by": "'deadline' (the sweeper: only when due) | 'admin' (POST /api/jobs/{jobId}/close)",
        "reason": "the failure reason's prefix",
        **CHANGE,
    },
    returns="{1, outcome, status, version} when this call closed the collection (outcome 'aggregating', 'failed', "
    "or 'next' when a secure sum's round closed and the next opened), else {0, 'not_collecting' | 'not_due', "
    "status, version}",
)

_ROUND_ANSWER = {"job_id": "jobId", "client_id": "clientId"}

POST_SHARES = Script(
    "post_shares",
    uses=("emit", "rounds"),
    keys=ROUND_KEYS,
    argv={
        **_ROUND_ANSWER,
        "digest": "SHA-256 of the post (a repeat of the same post is recognised by it)",
        **CHANGE,
        "pairs*": "recipient id, bundle, recipient id, bundle, ... (one per member of U1)",
    },
    returns="{outcome, status, version, count, expected, detail}: outcome 'posted' | 'duplicate' | 'closed' | "
    "'missing' | 'refused' (detail: not_secure_sum, not_a_participant, shares_conflict, round_not_open, "
    "client_dropped, shares_incomplete)",
)

POST_UNMASK = Script(
    "post_unmask",
    uses=("emit", "rounds"),
    keys=ROUND_KEYS,
    argv={**_ROUND_ANSWER, "answer": "the answer (canonical JSON, checked by the caller)", **CHANGE},
    returns="{outcome, status, version, count, expected, detail}: as post_shares (detail: not_secure_sum, "
    "unmask_conflict, round_not_open, client_dropped)",
)

PREPARE_TRIGGER = Script(
    "prepare_trigger",
    keys={"job": "job hash"},
    argv={"attempt": "attempt", "token": "a new token"},
    returns="{0, ''} when the attempt no longer owns the job; {1, token} on the job's first trigger; "
    "{2, the earlier token} when an earlier attempt got this far (ask the coordinator before triggering again)",
)

STORE_CALLBACK = Script(
    "store_callback",
    keys={"job": "job hash"},
    argv={"token": "the callback token", "result": "the coordinator's result JSON"},
    returns="1 stored, 0 the job is not AGGREGATING (nothing to do), -1 the token is not the job's",
)

DELIVERY_UPDATE = Script(
    "delivery_update",
    uses=("emit",),
    keys={"job": "job hash", "events": "events list", "deliveries": "deliveries hash"},
    argv={
        "job_id": "jobId",
        "destination": "destination",
        "record": "the delivery record (JSON)",
        "event": "event type to announce it with ('' for none: an attempt that will be retried)",
        "members": "the event's extra members (raw JSON, no braces)",
        "now_iso": "now (ISO)",
        "history": "how many events a job keeps",
        "channel": "the events channel",
    },
    returns="1 when recorded, 0 when there is no such delivery (or job) or it is already final",
)

DELIVERY_RETRY = Script(
    "delivery_retry",
    keys={"job": "job hash", "deliveries": "deliveries hash", "delivery_queue": "delivery stream"},
    argv={"job_id": "jobId"},
    returns="the destinations queued again, or {'-1'} when the job is not COMPLETED",
)

READ = Script(
    "read",
    keys={"reads*": "the key of each read"},
    argv={"ops*": "per read: its command (a read), how many arguments follow its key, those"},
    returns="the replies of the reads, in order",
)

ALL = (
    RATE_LIMIT,
    UPDATE,
    REGISTER_KEY,
    EXPIRE,
    FINISH,
    CANCEL,
    START_ATTEMPT,
    MARK_TRIGGERED,
    CLOSE_COLLECTION,
    POST_SHARES,
    POST_UNMASK,
    PREPARE_TRIGGER,
    STORE_CALLBACK,
    DELIVERY_UPDATE,
    DELIVERY_RETRY,
    READ,
)
