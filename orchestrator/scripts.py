"""Lua scripts: one per state transition, each also publishing the event that announces it.

Every script is safe to run twice: redis-py may retry an EVALSHA after a timeout, so a second run of
the same call must find the change already made and do nothing more.
"""

from __future__ import annotations

# Shared prelude. ``emit`` bumps the job's version, appends the event to the bounded per-job history
# and publishes it, so what is stored and what is broadcast cannot disagree.
#   needs: job (hash key), events (list key), job_id, at (ISO time), history (max events), channel
#   suffix: optional raw JSON members ('"finalResult":{...}') spliced into the event as given: a cjson
#   round trip would round the numbers of a result.
_EMIT = """
local function emit(job, events, job_id, at, history, channel, kind, extra, suffix)
  local version = redis.call('HINCRBY', job, 'version', 1)
  local event = {type = kind, jobId = job_id, version = version, at = at}
  for k, v in pairs(extra) do event[k] = v end
  local message = cjson.encode(event)
  if suffix then
    message = string.sub(message, 1, -2) .. ',' .. suffix .. '}'
  end
  redis.call('RPUSH', events, message)
  redis.call('LTRIM', events, -history, -1)
  redis.call('PUBLISH', channel, message)
  return version
end
"""

# Shared prelude: create a job (the first update, or the first key of a secure-sum job, does it).
#   tomb: the job's tombstone (the last version of an expired job of the same id: a new job carries on
#   from it, so listeners that saw the old one see a gapless sequence); indexes: {created, IN_PROGRESS,
#   deadlines}; fields: extra hash fields (aggregation backend, vector layout); instance: a random id of this
#   job instance (a jobId may be used again once a job has expired; the instance never repeats).
_CREATE = """
local function create_job(job, events, tomb, indexes, job_id, total, schema, digest, now, at, history, channel,
                          deadline, fields, instance)
  local base = tonumber(redis.call('GET', tomb) or '0')
  redis.call('DEL', tomb)
  redis.call('HSET', job, 'jobId', job_id, 'totalClients', total, 'doneCount', 0, 'schema', schema,
    'schemaDigest', digest, 'finalResult', '', 'status', 'IN_PROGRESS', 'createdAt', now, 'updatedAt', now,
    'version', base, 'deadlineAt', deadline, 'instance', instance, unpack(fields))
  redis.call('ZADD', indexes[1], now, job_id)
  redis.call('ZADD', indexes[2], now, job_id)
  redis.call('ZADD', indexes[3], tonumber(deadline), job_id)
  emit(job, events, job_id, at, history, channel, 'job.created',
    {totalClients = total, status = 'IN_PROGRESS', instanceId = instance})
  return base
end

-- The digest of the job's stored schema ('' when it has none): schemas are compared by digest, so an
-- update does not load a large schema. A job stored before digests existed is compared by its text.
local function schema_digest(job, stored, schema, digest)
  if stored and stored ~= '' then return stored end
  if redis.call('HSTRLEN', job, 'schema') == 0 then return '' end
  if schema ~= '' and redis.call('HGET', job, 'schema') == schema then return digest end
  return 'stored-before-digests'
end
"""

# Shared prelude: fixed-window rate limits. Each counter of ``counters`` is incremented (and given the
# window's expiry when it starts) unless its limit is 0 (none); returns the milliseconds until the window
# of the first counter over its limit ends, or nil. A counter counts refused requests too, so a client
# that keeps hammering stays refused until its window ends; the counters after an exceeded one are left
# alone. (A retried EVALSHA counts a request twice: harmless for a limit.)
_RATE = """
local function rate_limited(counters, limits, window)
  for i, key in ipairs(counters) do
    local limit = tonumber(limits[i])
    if limit > 0 then
      local n = redis.call('INCR', key)
      if n == 1 then redis.call('PEXPIRE', key, window) end
      if n > limit then return math.max(redis.call('PTTL', key), 1) end
    end
  end
  return nil
end
"""

# Check the rate limits of a write other than an update (which checks its own in UPDATE).
# KEYS the counters (the client's, the IP's)  ARGV[1] window (ms)  ARGV[2..] each counter's limit (0: none)
# Returns 0 when the request may go on, else the milliseconds until the window ends.
RATE_LIMIT = (
    _RATE
    + """
local limits = {}
for i = 2, #ARGV do limits[i - 1] = ARGV[i] end
return rate_limited(KEYS, limits, ARGV[1]) or 0
"""
)

# Record one client's update. The store prepends CONFIG (update_script): the constants of a deployment
# (key TTL ms, history size, events channel, rate-limit window ms, audit length bound, job quotas),
# so that an update (the hot path) sends only what varies.
# KEYS[1] job hash   KEYS[2] updatedClients set   KEYS[3] clientTimes hash ('<ms>:<ordinal>')  KEYS[4] events list
# KEYS[5] jobs:created      KEYS[6] jobs:updated         KEYS[7] status IN_PROGRESS KEYS[8] status AGGREGATING
# KEYS[9] aggregation queue stream   KEYS[10] jobs:deadlines (collection deadlines of IN_PROGRESS jobs)
# KEYS[11] the job's tombstone (the last version of an expired job of the same id: a new job carries on
#          from it, so listeners that saw the old one see a gapless sequence)
# ARGV[1] jobId  ARGV[2] clientId  ARGV[3] totalClients  ARGV[4] canonical schema JSON or ''
# ARGV[5] now (epoch ms)  ARGV[6] now (ISO)
# ARGV[7] collection deadline (epoch ms)  ARGV[8] aggregation backend asked for ('' for the default)
# (the deadline and backend of the update that creates the job count; later ones are ignored)
# Summed-vector jobs (backends 'sum' and 'secure-sum': the job hash has a vectorLength):
# KEYS[12] the job's public keys hash (clientId -> key)  KEYS[13] the job's vectors hash (clientId -> bytes)
# ARGV[9] this client's vector (little-endian uint64 bytes; '' for none)
# ARGV[10] vectorLength, ARGV[11] maxRows: the layout of a 'sum' job this update creates ('' otherwise)
# ARGV[12] SHA-1 of ARGV[4] ('' when no schema came)
# ARGV[13] '1' when the update declares maxRows (then it must equal the job's)
# ARGV[14] why this update may not create its job ('' when it may: overflow_risk, job_too_large, storage_full);
#          job_too_large also refuses storing a schema in a job created without one
# Rate limits, checked first (fixed windows of CONFIG.window): KEYS[14] the client's counter
# KEYS[15] the IP's counter  ARGV[15] the client's limit  ARGV[16] the IP's limit (0: none)
# Audit: KEYS[16] the audit stream  ARGV[17] who  ARGV[18] role  ARGV[19] IP; every call appends one
# entry with its outcome.
# Job quotas, checked only by an update that would create its job (fixed windows of CONFIG.job_window, limits
# CONFIG.client_jobs and CONFIG.ip_jobs, 0: none): KEYS[17] the client's job counter  KEYS[18] the IP's
# (either may be left out: then it is not limited)
# ARGV[20] a fresh random instance id, kept if this update creates the job
# Returns {outcome, created, triggered, status, doneCount, totalClients, version, detail}
#   outcome: 'recorded' | 'duplicate' (client already counted, nothing changed)
#            | 'conflict' (totalClients or schema differ from the job's; detail names which)
#            | 'closed' (job not collecting)
#            | 'refused' (detail: vector_required, vector_not_expected, vector_length_mismatch:<length>,
#              keys_incomplete, not_a_participant, schema_required; nothing changed)
#            | 'rate_limited' (detail: milliseconds until the window ends; nothing changed)
#            | 'quota_exceeded' (this update would create a job past a job quota; detail as for rate_limited)
# Reaching doneCount == totalClients moves the job to AGGREGATING and queues it, in this same call,
# so the transition happens exactly once however many updates race.
UPDATE = (
    _EMIT
    + _CREATE
    + _RATE
    + """
local job, clients, times, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local job_id, client_id, total, schema = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local now, at, ttl, history, channel = tonumber(ARGV[5]), ARGV[6], CONFIG.ttl, CONFIG.history, CONFIG.channel
local vector = ARGV[9]

local function update()
  local created = 0
  local wait = rate_limited({KEYS[14], KEYS[15]}, {ARGV[15], ARGV[16]}, CONFIG.window)
  if wait then
    return {'rate_limited', 0, 0, 'IN_PROGRESS', 0, total, 0, tostring(wait)}
  end

  local current = redis.call('HMGET', job, 'totalClients', 'schemaDigest', 'status', 'doneCount', 'version',
    'createdAt', 'aggregation', 'vectorLength', 'maxRows')
  if not current[1] then
    if ARGV[8] == 'secure-sum' then
      return {'refused', 0, 0, 'IN_PROGRESS', 0, total, 0, 'keys_incomplete'}
    end
    if ARGV[8] == 'sum' and ARGV[10] == '' then
      return {'refused', 0, 0, 'IN_PROGRESS', 0, total, 0, 'schema_required'}
    end
    if ARGV[10] == '' and vector ~= '' then
      return {'refused', 0, 0, 'IN_PROGRESS', 0, total, 0, 'vector_not_expected'}
    end
    if ARGV[14] ~= '' then
      return {'refused', 0, 0, 'IN_PROGRESS', 0, total, 0, ARGV[14]}
    end
    local fields = {'aggregation', ARGV[8]}
    if ARGV[10] ~= '' then
      if vector == '' then
        return {'refused', 0, 0, 'IN_PROGRESS', 0, total, 0, 'vector_required'}
      end
      if string.len(vector) ~= 8 * tonumber(ARGV[10]) then
        return {'refused', 0, 0, 'IN_PROGRESS', 0, total, 0, 'vector_length_mismatch:' .. ARGV[10]}
      end
      fields = {'aggregation', ARGV[8], 'vectorLength', ARGV[10], 'maxRows', ARGV[11]}
    end
    -- Counted last, so that only jobs really created count (a retried call finds its job made).
    wait = rate_limited({KEYS[17], KEYS[18]}, {CONFIG.client_jobs, CONFIG.ip_jobs}, CONFIG.job_window)
    if wait then
      return {'quota_exceeded', 0, 0, 'IN_PROGRESS', 0, total, 0, tostring(wait)}
    end
    local base = create_job(job, events, KEYS[11], {KEYS[5], KEYS[7], KEYS[10]}, job_id, total, schema, ARGV[12],
      now, at, history, channel, ARGV[7], fields, ARGV[20])
    created = 1
    current = {tostring(total), ARGV[12], 'IN_PROGRESS', '0', tostring(base + 1), tostring(now), ARGV[8], ARGV[10],
      ARGV[11]}
  else
    local stored_total = tonumber(current[1])
    if stored_total ~= total then
      return {'conflict', 0, 0, current[3], tonumber(current[4]), stored_total, tonumber(current[5]), 'totalClients'}
    end
    current[2] = schema_digest(job, current[2], schema, ARGV[12])
    if schema ~= '' and current[2] ~= '' and current[2] ~= ARGV[12] then
      return {'conflict', 0, 0, current[3], tonumber(current[4]), stored_total, tonumber(current[5]), 'schema'}
    end
    if ARGV[13] == '1' and (current[8] or '') ~= '' and current[9] ~= ARGV[11] then
      return {'conflict', 0, 0, current[3], tonumber(current[4]), stored_total, tonumber(current[5]), 'maxRows'}
    end
  end

  if redis.call('SISMEMBER', clients, client_id) == 1 then
    return {'duplicate', 0, 0, current[3], tonumber(current[4]), total, tonumber(current[5]), ''}
  end
  if current[3] ~= 'IN_PROGRESS' then
    return {'closed', 0, 0, current[3], tonumber(current[4]), total, tonumber(current[5]), ''}
  end
  local length = current[8] or ''
  local refusal = nil
  if length == '' then
    if vector ~= '' then refusal = 'vector_not_expected' end
  elseif vector == '' then
    refusal = 'vector_required'
  elseif string.len(vector) ~= 8 * tonumber(length) then
    refusal = 'vector_length_mismatch:' .. length
  elseif current[7] == 'secure-sum' then
    if redis.call('HLEN', KEYS[12]) < total then
      refusal = 'keys_incomplete'
    elseif redis.call('HEXISTS', KEYS[12], client_id) == 0 then
      refusal = 'not_a_participant'
    end
  end
  if not refusal and schema ~= '' and current[2] == '' and ARGV[14] == 'job_too_large' then
    refusal = ARGV[14]  -- the schema would be stored now: the job's budget holds for it too
  end
  if refusal then
    return {'refused', 0, 0, current[3], tonumber(current[4]), total, tonumber(current[5]), refusal}
  end
  if vector ~= '' then
    redis.call('HSET', KEYS[13], client_id, vector)
    redis.call('PEXPIRE', KEYS[13], ttl)
  end

  if schema ~= '' and current[2] == '' then
    redis.call('HSET', job, 'schema', schema, 'schemaDigest', ARGV[12])
  end
  redis.call('SADD', clients, client_id)
  local done = redis.call('SCARD', clients)
  -- '<epoch ms>:<ordinal>': the ordinal keeps the reporting order when two clients share a millisecond.
  redis.call('HSET', times, client_id, now .. ':' .. done)
  redis.call('HSET', job, 'doneCount', done, 'updatedAt', now)
  local version = emit(job, events, job_id, at, history, channel, 'client.done',
    {clientId = client_id, doneCount = done, totalClients = total})
  local status = 'IN_PROGRESS'
  local triggered = 0
  if done >= total then
    status = 'AGGREGATING'
    triggered = 1
    redis.call('HSET', job, 'status', status, 'aggregatingAt', now)
    redis.call('ZREM', KEYS[7], job_id)
    redis.call('ZREM', KEYS[10], job_id)
    redis.call('ZADD', KEYS[8], tonumber(current[6]), job_id)
    version = emit(job, events, job_id, at, history, channel, 'job.aggregating',
      {doneCount = done, totalClients = total, status = status})
    redis.call('XADD', KEYS[9], '*', 'jobId', job_id, 'version', version)
  end
  redis.call('ZADD', KEYS[6], now, job_id)
  for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ttl) end
  if length ~= '' then
    redis.call('PEXPIRE', KEYS[12], ttl)
    redis.call('PEXPIRE', KEYS[13], ttl)
  end
  return {'recorded', created, triggered, status, done, total, version, ''}
end

local result = update()
redis.call('XADD', KEYS[16], 'MAXLEN', '~', CONFIG.audit_max, '*', 'at', at, 'who', ARGV[17], 'role', ARGV[18],
  'ip', ARGV[19], 'action', 'POST /api/update', 'job', job_id, 'client', client_id, 'outcome', result[1])
return result
"""
)


def update_script(
    *,
    ttl_ms: int,
    history: int,
    channel: str,
    window_ms: int,
    audit_max: int,
    job_quotas: tuple[int, int, int] = (3_600_000, 0, 0),
) -> str:
    """UPDATE with a deployment's constants built in; ``job_quotas``: (window ms, jobs per client, per IP)."""
    quoted = '"' + "".join(f"\\{byte}" for byte in channel.encode()) + '"'  # Lua decimal escapes: any byte
    config = (
        f"local CONFIG = {{ttl = {int(ttl_ms)}, history = {int(history)}, channel = {quoted}, "
        f"window = {int(window_ms)}, audit_max = {int(audit_max)}, {_job_quotas(job_quotas)}}}\n"
    )
    return config + UPDATE


def _job_quotas(quotas: tuple[int, int, int]) -> str:
    window_ms, client_jobs, ip_jobs = quotas
    return f"job_window = {int(window_ms)}, client_jobs = {int(client_jobs)}, ip_jobs = {int(ip_jobs)}"


# Register a client's public key for a secure-sum job (the key round); the first key creates the job.
# KEYS[1] job hash  KEYS[2] events list  KEYS[3] the job's public keys hash (clientId -> base64 key)
# KEYS[4] jobs:created  KEYS[5] status IN_PROGRESS  KEYS[6] jobs:deadlines  KEYS[7] the job's tombstone
# KEYS[8] jobs:updated
# ARGV[1] jobId  ARGV[2] clientId  ARGV[3] totalClients  ARGV[4] canonical schema JSON or ''
# ARGV[5] now (epoch ms)  ARGV[6] now (ISO)  ARGV[7] key TTL ms  ARGV[8] history size  ARGV[9] events channel
# ARGV[10] collection deadline (epoch ms)  ARGV[11] vectorLength ('' when no schema came)
# ARGV[12] maxRows  ARGV[13] the public key (canonical base64)  ARGV[14] SHA-1 of ARGV[4] ('' when no schema)
# ARGV[15] '1' when the request declares maxRows (then it must equal the job's)
# ARGV[16] why this request may not create the job ('' when it may: overflow_risk, job_too_large, storage_full)
# ARGV[17] a fresh random instance id, kept if this request creates the job
# Job quotas, checked only by a request that would create the job (register_key_script prepends CONFIG: the
# window ms and the limits, 0: none): KEYS[9] the client's job counter  KEYS[10] the IP's (either may be left
# out: then it is not limited)
# Returns {outcome, created, keyCount, totalClients, version, status, detail[, instance id]} (the instance id
# when the key is registered: a client binds its key file and its masks to it)
#   outcome: 'registered' | 'duplicate' (this very key was registered before: nothing changes)
#            | 'replaced' (another key of this client, before the round completed: nobody can have used
#              the old one, so a client that lost its key may start over)
#            | 'conflict' (detail: totalClients, schema, maxRows) | 'closed' (not collecting)
#            | 'refused' (detail: schema_required, not_secure_sum, key_conflict (another key for this
#              client after the round completed), keys_complete (every participant already has a key),
#              or ARGV[16]) | 'quota_exceeded' (detail: milliseconds until the quota's window ends)
# The key that completes the round announces keys.complete; from then on the set of keys is fixed.
REGISTER_KEY = (
    _EMIT
    + _CREATE
    + _RATE
    + """
local job, events, keys = KEYS[1], KEYS[2], KEYS[3]
local job_id, client_id, total, schema = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local now, at, ttl, history, channel = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9]
local created = 0
local current = redis.call('HMGET', job, 'totalClients', 'schemaDigest', 'status', 'version', 'aggregation',
  'maxRows', 'instance')
if not current[1] then
  if schema == '' then
    return {'refused', 0, 0, total, 0, '', 'schema_required'}
  end
  if ARGV[16] ~= '' then
    return {'refused', 0, 0, total, 0, '', ARGV[16]}
  end
  local wait = rate_limited({KEYS[9], KEYS[10]}, {CONFIG.client_jobs, CONFIG.ip_jobs}, CONFIG.job_window)
  if wait then
    return {'quota_exceeded', 0, 0, total, 0, '', tostring(wait)}
  end
  local base = create_job(job, events, KEYS[7], {KEYS[4], KEYS[5], KEYS[6]}, job_id, total, schema, ARGV[14],
    now, at, history, channel, ARGV[10], {'aggregation', 'secure-sum', 'vectorLength', ARGV[11], 'maxRows', ARGV[12]},
    ARGV[17])
  created = 1
  current = {tostring(total), ARGV[14], 'IN_PROGRESS', tostring(base + 1), 'secure-sum', ARGV[12], ARGV[17]}
end
local version = tonumber(current[4])
if current[5] ~= 'secure-sum' then
  return {'refused', 0, 0, tonumber(current[1]), version, current[3], 'not_secure_sum'}
end
if tonumber(current[1]) ~= total then
  return {'conflict', 0, 0, tonumber(current[1]), version, current[3], 'totalClients'}
end
if schema ~= '' and schema_digest(job, current[2], schema, ARGV[14]) ~= ARGV[14] then
  return {'conflict', 0, 0, total, version, current[3], 'schema'}
end
if ARGV[15] == '1' and current[6] ~= ARGV[12] then
  return {'conflict', 0, 0, total, version, current[3], 'maxRows'}
end
local count = redis.call('HLEN', keys)
local existing = redis.call('HGET', keys, client_id)
if existing == ARGV[13] then
  return {'duplicate', 0, count, total, version, current[3], '', current[7] or ''}
end
if existing and count >= total then
  return {'refused', 0, count, total, version, current[3], 'key_conflict'}
end
if current[3] ~= 'IN_PROGRESS' then
  return {'closed', 0, count, total, version, current[3], ''}
end
if not existing and count >= total then
  return {'refused', 0, count, total, version, current[3], 'keys_complete'}
end
redis.call('HSET', keys, client_id, ARGV[13])
local outcome = 'registered'
if existing then
  outcome = 'replaced'
else
  count = count + 1
end
redis.call('HSET', job, 'updatedAt', now, 'keyCount', count)
version = emit(job, events, job_id, at, history, channel, 'keys.registered',
  {clientId = client_id, keyCount = count, totalClients = total, replaced = (existing ~= false and existing ~= nil)})
if count == total and outcome == 'registered' then
  redis.call('HSET', job, 'keysCompleteAt', now)
  version = emit(job, events, job_id, at, history, channel, 'keys.complete', {keyCount = count, totalClients = total})
end
redis.call('ZADD', KEYS[8], now, job_id)
for _, key in ipairs({job, events, keys}) do redis.call('PEXPIRE', key, ttl) end
return {outcome, created, count, total, version, 'IN_PROGRESS', '', current[7] or ''}
"""
)


def register_key_script(job_quotas: tuple[int, int, int] = (3_600_000, 0, 0)) -> str:
    """REGISTER_KEY with a deployment's job quotas built in: (window ms, jobs per client, per IP)."""
    return f"local CONFIG = {{{_job_quotas(job_quotas)}}}\n" + REGISTER_KEY


# Expire one job whose last change is older than its TTL.
# KEYS[1] job hash  KEYS[2] updatedClients  KEYS[3] clientTimes  KEYS[4] events  KEYS[5] the job's tombstone
# KEYS[6] deliveries  KEYS[7] public keys  KEYS[8] vectors
# KEYS[9..] jobs:created, jobs:updated, jobs:deadlines and one status index per JobStatus
# ARGV[1] jobId  ARGV[2] cutoff (epoch ms: expire only if updatedAt <= cutoff)  ARGV[3] now (ISO)
# ARGV[4] events channel  ARGV[5] how long the tombstone is kept (ms)
# Returns 1 when this call expired the job, 0 when it was already gone or has changed since.
# The job's keys also carry a Redis TTL a little longer than the job TTL, as a backstop for a
# deployment where no replica runs the janitor; then only the index entries remain, removed here.
EXPIRE = """
local job, job_id = KEYS[1], ARGV[1]
local updated = redis.call('HGET', job, 'updatedAt')
if updated and tonumber(updated) > tonumber(ARGV[2]) then
  return 0
end
for i = 9, #KEYS do redis.call('ZREM', KEYS[i], job_id) end
if not updated then
  return 0
end
local version = redis.call('HINCRBY', job, 'version', 1)
local status = redis.call('HGET', job, 'status')
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[6], KEYS[7], KEYS[8])
redis.call('SET', KEYS[5], version, 'PX', tonumber(ARGV[5]))
redis.call('PUBLISH', ARGV[4], cjson.encode({type = 'job.expired', jobId = job_id, version = version,
  at = ARGV[3], status = status}))
return 1
"""

# Finish an aggregating job: AGGREGATING -> COMPLETED or FAILED, once.
# KEYS[1] job hash  KEYS[2] events list  KEYS[3] status AGGREGATING  KEYS[4] status COMPLETED/FAILED
# KEYS[5] jobs:updated  KEYS[6] updatedClients  KEYS[7] clientTimes
# ARGV[1] jobId  ARGV[2] 'COMPLETED' | 'FAILED'  ARGV[3] final result JSON ('' for none)  ARGV[4] failure reason
# ARGV[5] now (epoch ms)  ARGV[6] now (ISO)  ARGV[7] key TTL ms  ARGV[8] history size  ARGV[9] events channel
# ARGV[10] the aggregation attempt that must own the job ('' for any)
# ARGV[11] finish only if the job has been aggregating since this time or earlier (epoch ms; '' for any)
# KEYS[8] deliveries hash  KEYS[9] delivery stream  KEYS[10] the job's vectors (dropped: no longer needed)
# ARGV[12] comma-separated delivery destinations ('api', 'file'; '' for none): when the job COMPLETES,
#          each gets a pending delivery record and a delivery queue entry, in this same script.
# Returns {1, version} when this call finished the job, {0, version} when it was not AGGREGATING (already
# finished, cancelled or unknown), or another attempt owns it, or it is not yet overdue: so a retried,
# duplicated or stale call changes nothing.
# The result JSON is spliced into the event text as given: a cjson round trip would round its numbers.
FINISH = (
    _EMIT
    + """
local job, events, job_id, outcome = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local now, at, ttl, history, channel = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9]
local current = redis.call('HMGET', job, 'status', 'createdAt', 'version', 'attempt', 'aggregatingAt')
if current[1] ~= 'AGGREGATING' or (ARGV[10] ~= '' and current[4] ~= ARGV[10])
    or (ARGV[11] ~= '' and tonumber(current[5] or '0') > tonumber(ARGV[11])) then
  return {0, tonumber(current[3] or '0')}
end
redis.call('HSET', job, 'status', outcome, 'finalResult', ARGV[3], 'failureReason', ARGV[4],
  'completedAt', now, 'updatedAt', now)
redis.call('ZREM', KEYS[3], job_id)
redis.call('ZADD', KEYS[4], tonumber(current[2]), job_id)
redis.call('ZADD', KEYS[5], now, job_id)
local version
if outcome == 'COMPLETED' then
  local suffix = nil
  if ARGV[3] ~= '' then suffix = '"finalResult":' .. ARGV[3] end
  version = emit(job, events, job_id, at, history, channel, 'job.completed', {status = outcome}, suffix)
  -- The version of this result: deliveries (and their Idempotency-Key) refer to it, retries too.
  redis.call('HSET', job, 'resultVersion', version)
  for destination in string.gmatch(ARGV[12], '[^,]+') do
    redis.call('HSET', KEYS[8], destination, '{"state":"pending","attempts":0}')
    redis.call('XADD', KEYS[9], '*', 'jobId', job_id, 'destination', destination, 'version', version)
  end
  redis.call('PEXPIRE', KEYS[8], ttl)
else
  version = emit(job, events, job_id, at, history, channel, 'job.failed', {status = outcome, reason = ARGV[4]})
end
for _, key in ipairs({KEYS[1], KEYS[2], KEYS[6], KEYS[7]}) do redis.call('PEXPIRE', key, ttl) end
redis.call('DEL', KEYS[10])
return {1, version}
"""
)

# Cancel a job that has not finished: IN_PROGRESS or AGGREGATING -> CANCELLED, once.
# KEYS[1] job hash  KEYS[2] events list  KEYS[3] status IN_PROGRESS  KEYS[4] status AGGREGATING
# KEYS[5] status CANCELLED  KEYS[6] jobs:updated  KEYS[7] updatedClients  KEYS[8] clientTimes
# KEYS[9] jobs:deadlines  KEYS[10] the job's vectors (dropped)
# ARGV[1] jobId  ARGV[2] reason  ARGV[3] now (epoch ms)  ARGV[4] now (ISO)  ARGV[5] key TTL ms
# ARGV[6] history size  ARGV[7] events channel
# Returns {outcome, status, version}: outcome 'cancelled' (this call did it), 'already' (it was
# cancelled before: nothing changes), 'finished' (COMPLETED or FAILED: refused) or 'missing'.
# An aggregation already queued for the job finds it CANCELLED and finishes nothing (FINISH checks).
CANCEL = (
    _EMIT
    + """
local job, events, job_id = KEYS[1], KEYS[2], ARGV[1]
local now, at, ttl, history, channel = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local current = redis.call('HMGET', job, 'status', 'createdAt', 'version')
if not current[1] then
  return {'missing', '', 0}
end
if current[1] == 'CANCELLED' then
  return {'already', current[1], tonumber(current[3])}
end
if current[1] ~= 'IN_PROGRESS' and current[1] ~= 'AGGREGATING' then
  return {'finished', current[1], tonumber(current[3])}
end
redis.call('HSET', job, 'status', 'CANCELLED', 'failureReason', ARGV[2], 'completedAt', now, 'updatedAt', now)
redis.call('ZREM', KEYS[3], job_id)
redis.call('ZREM', KEYS[4], job_id)
redis.call('ZREM', KEYS[9], job_id)
redis.call('ZADD', KEYS[5], tonumber(current[2]), job_id)
redis.call('ZADD', KEYS[6], now, job_id)
local version = emit(job, events, job_id, at, history, channel, 'job.cancelled',
  {status = 'CANCELLED', previousStatus = current[1], reason = ARGV[2]})
for _, key in ipairs({KEYS[1], KEYS[2], KEYS[7], KEYS[8]}) do redis.call('PEXPIRE', key, ttl) end
redis.call('DEL', KEYS[10])
return {'cancelled', 'CANCELLED', version}
"""
)

# Start an aggregation attempt: fences off every earlier attempt of the job.
# KEYS[1] job hash  KEYS[2] updatedClients
# ARGV[1] the worker taking it (for diagnostics)  ARGV[2] now (epoch ms)
# Returns {0} when the job is not AGGREGATING (finished, cancelled, expired: nothing to do), else
# {1, attempt, aggregatingAt, coordinatorTriggeredAt or '', aggregation backend or '', schema or '',
#  client ids...}. A repeated call starts yet another attempt: only the newest may finish the job.
START_ATTEMPT = """
local current = redis.call('HMGET', KEYS[1], 'status', 'aggregatingAt', 'coordinatorTriggeredAt', 'aggregation',
  'schema')
if current[1] ~= 'AGGREGATING' then
  return {0}
end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('HSET', KEYS[1], 'attemptOwner', ARGV[1], 'attemptStartedAt', ARGV[2])
local result = {1, attempt, current[2] or '0', current[3] or '', current[4] or '', current[5] or ''}
for _, client in ipairs(redis.call('SMEMBERS', KEYS[2])) do table.insert(result, client) end
return result
"""

# Record that the coordinator accepted the job, so a later attempt polls instead of triggering again.
# KEYS[1] job hash  ARGV[1] attempt  ARGV[2] now (epoch ms)
# Returns 1 when recorded, 0 when the attempt no longer owns the job. Safe to run twice.
MARK_TRIGGERED = """
local current = redis.call('HMGET', KEYS[1], 'status', 'attempt')
if current[1] ~= 'AGGREGATING' or current[2] ~= ARGV[1] then
  return 0
end
redis.call('HSETNX', KEYS[1], 'coordinatorTriggeredAt', ARGV[2])
return 1
"""

# Fail a job still collecting clients when its collection deadline has passed.
# KEYS[1] job hash  KEYS[2] events list  KEYS[3] status IN_PROGRESS  KEYS[4] status FAILED
# KEYS[5] jobs:updated  KEYS[6] updatedClients  KEYS[7] clientTimes  KEYS[8] jobs:deadlines
# KEYS[9] the job's vectors (dropped)
# ARGV[1] jobId  ARGV[2] reason prefix  ARGV[3] now (epoch ms)  ARGV[4] now (ISO)  ARGV[5] key TTL ms
# ARGV[6] history size  ARGV[7] events channel
# Returns {1, version} when this call failed the job, else {0, version} (not IN_PROGRESS any more, or
# its deadline is later than now: then only the stale index entry is dropped).
FAIL_OVERDUE_COLLECTION = (
    _EMIT
    + """
local job, events, job_id = KEYS[1], KEYS[2], ARGV[1]
local now, at, ttl, history, channel = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local current = redis.call('HMGET', job, 'status', 'createdAt', 'version', 'deadlineAt', 'doneCount', 'totalClients')
if current[1] ~= 'IN_PROGRESS' then
  redis.call('ZREM', KEYS[8], job_id)
  return {0, tonumber(current[3] or '0')}
end
if tonumber(current[4] or '0') > now then
  return {0, tonumber(current[3])}
end
local reported = redis.call('SMEMBERS', KEYS[6])
table.sort(reported)
local named = reported
if #reported > 20 then
  named = {unpack(reported, 1, 20)}
  table.insert(named, 'and ' .. (#reported - 20) .. ' more')
end
local reason = ARGV[2] .. ': ' .. current[5] .. ' of ' .. current[6] .. ' clients reported ('
  .. table.concat(named, ', ') .. '); ' .. (tonumber(current[6]) - tonumber(current[5])) .. ' never did'
redis.call('HSET', job, 'status', 'FAILED', 'failureReason', reason, 'completedAt', now, 'updatedAt', now)
redis.call('ZREM', KEYS[3], job_id)
redis.call('ZREM', KEYS[8], job_id)
redis.call('ZADD', KEYS[4], tonumber(current[2]), job_id)
redis.call('ZADD', KEYS[5], now, job_id)
local version = emit(job, events, job_id, at, history, channel, 'job.failed',
  {status = 'FAILED', reason = reason, doneCount = tonumber(current[5]), totalClients = tonumber(current[6])})
for _, key in ipairs({KEYS[1], KEYS[2], KEYS[6], KEYS[7]}) do redis.call('PEXPIRE', key, ttl) end
redis.call('DEL', KEYS[9])
return {1, version}
"""
)

# About to trigger the coordinator: keep the token it must present when it calls back with the result.
# KEYS[1] job hash  ARGV[1] attempt  ARGV[2] a new token
# Returns {0, ''} when the attempt no longer owns the job; {1, token} when this is the first trigger of
# the job; {2, the earlier token} when an earlier attempt got this far (its trigger may have reached
# the coordinator: ask it before triggering again, and keep the token it may call back with).
PREPARE_TRIGGER = """
local current = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'callbackToken')
if current[1] ~= 'AGGREGATING' or current[2] ~= ARGV[1] then
  return {0, ''}
end
if current[3] then
  return {2, current[3]}
end
redis.call('HSET', KEYS[1], 'callbackToken', ARGV[2])
return {1, ARGV[2]}
"""

# Store what the coordinator pushed to our returnUrl, for the worker polling the job to pick up.
# KEYS[1] job hash  ARGV[1] token  ARGV[2] the coordinator's result JSON
# Returns 1 stored, 0 the job is not AGGREGATING (nothing to do), -1 the token is not the job's.
STORE_CALLBACK = """
local current = redis.call('HMGET', KEYS[1], 'status', 'callbackToken')
if current[1] ~= 'AGGREGATING' then
  return 0
end
if not current[2] or current[2] ~= ARGV[1] then
  return -1
end
redis.call('HSET', KEYS[1], 'coordinatorResult', ARGV[2])
return 1
"""

# Record a delivery attempt's outcome.
# KEYS[1] job hash  KEYS[2] events list  KEYS[3] deliveries hash
# ARGV[1] jobId  ARGV[2] destination  ARGV[3] the delivery record (JSON)  ARGV[4] event type to announce it
# with ('' for none: an attempt that will be retried)  ARGV[5] the event's extra members (raw JSON, no
# braces)  ARGV[6] now (epoch ms)  ARGV[7] now (ISO)  ARGV[8] key TTL ms  ARGV[9] history size
# ARGV[10] events channel
# Returns 1 when recorded, 0 when there is no such delivery (or job) or it is already final.
DELIVERY_UPDATE = (
    _EMIT
    + """
local job, events, deliveries, job_id = KEYS[1], KEYS[2], KEYS[3], ARGV[1]
local current = redis.call('HGET', deliveries, ARGV[2])
if not current or redis.call('EXISTS', job) == 0 then
  return 0  -- no such delivery, or its job has expired meanwhile
end
local state = cjson.decode(current).state
-- Delivered is final; failed is final too (until the retry endpoint queues it again), so a stale
-- worker cannot turn it back into pending, and a replayed call announces nothing twice.
if state == 'delivered' or state == 'failed' then
  return 0
end
redis.call('HSET', deliveries, ARGV[2], ARGV[3])
if ARGV[4] ~= '' then
  emit(job, events, job_id, ARGV[7], tonumber(ARGV[9]), ARGV[10], ARGV[4], {}, ARGV[5])
end
return 1
"""
)

# Queue again the deliveries of a completed job that were dead-lettered.
# KEYS[1] job hash  KEYS[2] deliveries hash  KEYS[3] delivery stream
# ARGV[1] jobId
# Returns the destinations queued again, or {'-1'} when the job is not COMPLETED.
DELIVERY_RETRY = """
local current = redis.call('HMGET', KEYS[1], 'status', 'resultVersion')
if current[1] ~= 'COMPLETED' then
  return {'-1'}
end
local queued = {}
local records = redis.call('HGETALL', KEYS[2])
for i = 1, #records, 2 do
  if cjson.decode(records[i + 1]).state == 'failed' then
    redis.call('HSET', KEYS[2], records[i], '{"state":"pending","attempts":0}')
    redis.call('XADD', KEYS[3], '*', 'jobId', ARGV[1], 'destination', records[i], 'version', current[2])
    table.insert(queued, records[i])
  end
end
return queued
"""

# Reads run at one moment, as a MULTI of them would, yet served while Redis refuses writes: out of memory, it
# refuses every command queued in a MULTI, reads included, but runs a script until its first write.
# KEYS the key of each read  ARGV per read: its command (a read), how many arguments follow its key, those
# Returns the replies of the reads, in order.
READ = """
local replies, at = {}, 1
for i, key in ipairs(KEYS) do
  local command, count = ARGV[at], tonumber(ARGV[at + 1])
  replies[i] = redis.call(command, key, unpack(ARGV, at + 2, at + 1 + count))
  at = at + 2 + count
end
return replies
"""
