-- Record one client's update: check its rate limits, create the job on its first update, apply the vector
-- rules, count the client, move the job on when the last one reports, and append the audit entry, in one
-- call. Reaching doneCount == totalClients moves the job to AGGREGATING and queues it in this same call, so
-- the transition happens exactly once however many updates race.
local job_id, client_id, total, schema = A.job_id, A.client_id, tonumber(A.total), A.schema
local now, at, vector = tonumber(A.now_ms), A.now_iso, A.vector

-- The job's fields this script reads, in this order (``current``).
local FIELDS = {'totalClients', 'schemaDigest', 'status', 'doneCount', 'version', 'createdAt', 'aggregation',
  'vectorLength', 'maxRows', 'minClients', 'round', 'roundTimeout'}
local ctx = {keys = K, now = now, at = at, ttl = CONFIG.ttl, history = CONFIG.history, channel = CONFIG.channel}

-- A reply that changes nothing: {outcome, created, triggered, status, doneCount, totalClients, version,
-- detail}, the job as ``current`` has it (a job not yet made without one).
local function unchanged(outcome, current, detail)
  if not current then
    return {outcome, 0, 0, 'IN_PROGRESS', 0, total, 0, detail}
  end
  return {outcome, 0, 0, current[3], tonumber(current[4]), tonumber(current[1]), tonumber(current[5]), detail}
end

-- Rate limit: the milliseconds until the client's (or the IP's) window ends when it is over its limit.
local function over_rate_limit()
  return rate_limited({K.client_rate, K.ip_rate}, {A.client_limit, A.ip_limit}, CONFIG.window)
end

-- Create: why this update may not create its job (nil: it may). A summed-vector job ('sum') is created with
-- its layout, and its first update must bring a vector of that length.
local function creation_refusal()
  if A.aggregation == 'secure-sum' then return 'keys_incomplete' end
  if A.aggregation == 'sum' and A.vector_length == '' then return 'schema_required' end
  if A.vector_length == '' and vector ~= '' then return 'vector_not_expected' end
  if A.creation_refusal ~= '' then return A.creation_refusal end
  if A.vector_length ~= '' then
    if vector == '' then return 'vector_required' end
    if string.len(vector) ~= 8 * tonumber(A.vector_length) then
      return 'vector_length_mismatch:' .. A.vector_length
    end
  end
  return nil
end

-- Create: the job, with ``current`` as it now stands; or nil and the reply of a refused creation.
local function create()
  local refusal = creation_refusal()
  if refusal then return nil, unchanged('refused', nil, refusal) end
  local fields = {'aggregation', A.aggregation, 'minClients', A.min_clients}
  if A.vector_length ~= '' then
    fields = {'aggregation', A.aggregation, 'minClients', A.min_clients, 'vectorLength', A.vector_length,
      'maxRows', A.max_rows}
  end
  -- Counted last, so that only jobs really created count (a retried call finds its job made).
  local wait = rate_limited({K.client_jobs, K.ip_jobs}, {CONFIG.client_jobs, CONFIG.ip_jobs}, CONFIG.job_window)
  if wait then return nil, unchanged('quota_exceeded', nil, tostring(wait)) end
  local base = create_job(K.job, K.events, K.tomb, {K.created, K.in_progress, K.deadlines}, job_id, total, schema,
    A.schema_digest, now, at, CONFIG.history, CONFIG.channel, A.deadline, fields, A.instance)
  return {tostring(total), A.schema_digest, 'IN_PROGRESS', '0', tostring(base + 1), tostring(now), A.aggregation,
    A.vector_length, A.max_rows, A.min_clients}
end

-- Create: the field in which this update disagrees with its existing job, or nil. Leaves in current[2]
-- the digest of the stored schema ('' when the job has none yet).
local function conflict(current)
  if tonumber(current[1]) ~= total then return 'totalClients' end
  current[2] = schema_digest(K.job, current[2], schema, A.schema_digest)
  if schema ~= '' and current[2] ~= '' and current[2] ~= A.schema_digest then return 'schema' end
  if A.max_rows_declared == '1' and (current[8] or '') ~= '' and current[9] ~= A.max_rows then
    return 'maxRows'
  end
  if A.min_clients_declared == '1' and (current[10] or current[1]) ~= A.min_clients then return 'minClients' end
  return nil
end

-- Vector rules: why this update may not be counted (nil: it may). A summed-vector job takes one vector of
-- its length from each client; a secure-sum job only once every participant has a key, from participants.
local function vector_refusal(current)
  local length = current[8] or ''
  if length == '' then
    if vector ~= '' then return 'vector_not_expected' end
  elseif vector == '' then
    return 'vector_required'
  elseif string.len(vector) ~= 8 * tonumber(length) then
    return 'vector_length_mismatch:' .. length
  elseif current[7] == 'secure-sum' then
    -- Inputs come in the inputs round, from the clients that completed the shares round (U2) only.
    local round = current[11] or ''
    if round == 'keys' or round == 'shares' then return 'round_not_open' end
    if redis.call('HEXISTS', K.public_keys, client_id) == 0 then return 'not_a_participant' end
    if round ~= 'inputs' or redis.call('HEXISTS', K.sharers, client_id) == 0 then return 'client_dropped' end
  end
  if schema ~= '' and current[2] == '' and A.creation_refusal == 'job_too_large' then
    return A.creation_refusal  -- the schema would be stored now: the job's budget holds for it too
  end
  return nil
end

-- Record: keep the vector (and a schema the job lacked), count the client; returns doneCount and version.
local function record(current)
  if vector ~= '' then
    redis.call('HSET', K.vectors, client_id, vector)
    redis.call('PEXPIRE', K.vectors, CONFIG.ttl)
  end
  if schema ~= '' and current[2] == '' then
    redis.call('HSET', K.job, 'schema', schema, 'schemaDigest', A.schema_digest)
  end
  redis.call('SADD', K.clients, client_id)
  local done = redis.call('SCARD', K.clients)
  -- '<epoch ms>:<ordinal>': the ordinal keeps the reporting order when two clients share a millisecond.
  redis.call('HSET', K.times, client_id, now .. ':' .. done)
  redis.call('HSET', K.job, 'doneCount', done, 'updatedAt', now)
  local version = emit(K.job, K.events, job_id, at, CONFIG.history, CONFIG.channel, 'client.done',
    {clientId = client_id, doneCount = done, totalClients = total})
  return done, version
end

-- Transition: the last client expected moves the job on: to AGGREGATING, queued (every backend but the
-- secure sum), or a secure sum to its unmask round. Reaching minClients first is announced once.
-- Returns status, triggered, version.
local function transition(current, done, version)
  local k = tonumber(current[10] or '') or total
  local expected = total
  if current[7] == 'secure-sum' then expected = redis.call('HLEN', K.sharers) end
  if done == k and k < expected then
    version = emit(K.job, K.events, job_id, at, CONFIG.history, CONFIG.channel, 'job.quorum_reached',
      {doneCount = done, minClients = k, totalClients = total, expected = expected})
  end
  if done < expected then return 'IN_PROGRESS', 0, version end
  if current[7] == 'secure-sum' then
    local _
    local job = round_job(current[1], current[10], current[6], 'inputs', current[12])
    _, version = close_round(ctx, job_id, job, 'all')
    return 'IN_PROGRESS', 0, version
  end
  return 'AGGREGATING', 1, start_aggregating(ctx, job_id, current[6], done, total, 'all')
end

-- Record: the job changed; its keys live on for another TTL.
local function touch(current)
  redis.call('ZADD', K.updated, now, job_id)
  for _, key in ipairs({K.job, K.clients, K.times, K.events}) do redis.call('PEXPIRE', key, CONFIG.ttl) end
  if (current[8] or '') ~= '' then
    for _, key in ipairs({K.public_keys, K.vectors, K.sharers, K.shares}) do redis.call('PEXPIRE', key, CONFIG.ttl) end
  end
end

local function update()
  local wait = over_rate_limit()
  if wait then return unchanged('rate_limited', nil, tostring(wait)) end
  local created = 0
  local current = redis.call('HMGET', K.job, unpack(FIELDS))
  if not current[1] then
    local refused
    current, refused = create()
    if not current then return refused end
    created = 1
  else
    local field = conflict(current)
    if field then return unchanged('conflict', current, field) end
  end
  if redis.call('SISMEMBER', K.clients, client_id) == 1 then return unchanged('duplicate', current, '') end
  if current[3] ~= 'IN_PROGRESS' then return unchanged('closed', current, '') end
  local refusal = vector_refusal(current)
  if refusal then return unchanged('refused', current, refusal) end
  local done, version = record(current)
  local status, triggered
  status, triggered, version = transition(current, done, version)
  touch(current)
  return {'recorded', created, triggered, status, done, total, version, ''}
end

-- Audit: every call appends one entry with its outcome.
local function audit(outcome)
  redis.call('XADD', K.audit, 'MAXLEN', '~', CONFIG.audit_max, '*', 'at', at, 'who', A.who, 'role', A.role,
    'ip', A.ip, 'action', 'POST /api/update', 'job', job_id, 'client', client_id, 'outcome', outcome)
end

local result = update()
audit(result[1])
return result
