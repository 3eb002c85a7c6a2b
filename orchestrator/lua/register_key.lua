-- Register a client's two public keys (mask agreement, share encryption) for a secure-sum job: the keys
-- round. The first key creates the job; the round closes when every client has registered (here) or at its
-- deadline (close_collection.lua), and from then on the set of keys (U1) is fixed.
local job_id, client_id, total, schema = A.job_id, A.client_id, tonumber(A.total), A.schema
local now, at, ttl, history, channel = tonumber(A.now_ms), A.now_iso, tonumber(A.ttl), tonumber(A.history), A.channel
local ctx = change_context(K, A)
local created = 0
local FIELDS = {'totalClients', 'schemaDigest', 'status', 'version', 'aggregation', 'maxRows', 'instance',
  'minClients', 'round', 'roundTimeout', 'createdAt'}
local current = redis.call('HMGET', K.job, unpack(FIELDS))
if not current[1] then
  if schema == '' then
    return {'refused', 0, 0, total, 0, '', 'schema_required'}
  end
  if A.creation_refusal ~= '' then
    return {'refused', 0, 0, total, 0, '', A.creation_refusal}
  end
  local wait = rate_limited({K.client_jobs, K.ip_jobs}, {CONFIG.client_jobs, CONFIG.ip_jobs}, CONFIG.job_window)
  if wait then
    return {'quota_exceeded', 0, 0, total, 0, '', tostring(wait)}
  end
  -- The keys round is the job's collection: it closes at the job's deadline or after one round timeout,
  -- whichever comes first (the deadline index holds that; the job keeps its declared deadline).
  local closes = math.min(tonumber(A.deadline), now + tonumber(A.round_timeout))
  local base = create_job(K.job, K.events, K.tomb, {K.created, K.in_progress, K.deadlines}, job_id, total, schema,
    A.schema_digest, now, at, history, channel, A.deadline,
    {'aggregation', 'secure-sum', 'vectorLength', A.vector_length, 'maxRows', A.max_rows, 'minClients', A.min_clients,
      'roundTimeout', A.round_timeout, 'round', 'keys', 'roundStartedAt', now, 'roundDeadlineAt', closes}, A.instance)
  redis.call('ZADD', K.deadlines, closes, job_id)
  created = 1
  current = {tostring(total), A.schema_digest, 'IN_PROGRESS', tostring(base + 1), 'secure-sum', A.max_rows, A.instance,
    A.min_clients, 'keys', A.round_timeout, tostring(now)}
end
local version, status, round = tonumber(current[4]), current[3], current[9] or 'keys'
local function refuse(outcome, detail, count)
  return {outcome, 0, count or 0, tonumber(current[1]), version, status, detail}
end
if current[5] ~= 'secure-sum' then return refuse('refused', 'not_secure_sum') end
if tonumber(current[1]) ~= total then return refuse('conflict', 'totalClients') end
if schema ~= '' and schema_digest(K.job, current[2], schema, A.schema_digest) ~= A.schema_digest then
  return refuse('conflict', 'schema')
end
if A.max_rows_declared == '1' and current[6] ~= A.max_rows then return refuse('conflict', 'maxRows') end
if A.min_clients_declared == '1' and (current[8] or current[1]) ~= A.min_clients then
  return refuse('conflict', 'minClients')
end
if A.round_timeout_declared == '1' and current[10] ~= A.round_timeout then return refuse('conflict', 'roundTimeout') end
local count = redis.call('HLEN', K.public_keys)
local existing = redis.call('HGET', K.public_keys, client_id)
local keys = A.public_key .. ' ' .. A.encryption_key
if existing == keys then
  return {'duplicate', 0, count, total, version, status, '', current[7] or ''}
end
if existing and round ~= 'keys' then return refuse('refused', 'key_conflict', count) end
if status ~= 'IN_PROGRESS' then return refuse('closed', '', count) end
if round ~= 'keys' then return refuse('refused', 'keys_complete', count) end
redis.call('HSET', K.public_keys, client_id, keys)
local outcome = 'registered'
if existing then
  outcome = 'replaced'
else
  count = count + 1
end
redis.call('HSET', K.job, 'updatedAt', now, 'keyCount', count)
version = emit(K.job, K.events, job_id, at, history, channel, 'keys.registered',
  {clientId = client_id, keyCount = count, totalClients = total, replaced = (existing ~= false and existing ~= nil)})
if count == total and outcome == 'registered' then
  redis.call('HSET', K.job, 'keysCompleteAt', now)
  local _
  _, version = close_round(ctx, job_id, round_job(current[1], current[8], current[11], 'keys', current[10]), 'all')
end
redis.call('ZADD', K.updated, now, job_id)
for _, key in ipairs({K.job, K.events, K.public_keys}) do redis.call('PEXPIRE', key, ttl) end
return {outcome, created, count, total, version, 'IN_PROGRESS', '', current[7] or ''}
