-- Register a client's public key for a secure-sum job (the key round); the first key creates the job, the
-- key that completes the round announces keys.complete, and from then on the set of keys is fixed.
local job, events, keys = K.job, K.events, K.public_keys
local job_id, client_id, total, schema = A.job_id, A.client_id, tonumber(A.total), A.schema
local now, at, ttl, history, channel = tonumber(A.now_ms), A.now_iso, tonumber(A.ttl), tonumber(A.history), A.channel
local created = 0
local current = redis.call('HMGET', job, 'totalClients', 'schemaDigest', 'status', 'version', 'aggregation',
  'maxRows', 'instance')
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
  local base = create_job(job, events, K.tomb, {K.created, K.in_progress, K.deadlines}, job_id, total, schema,
    A.schema_digest, now, at, history, channel, A.deadline,
    {'aggregation', 'secure-sum', 'vectorLength', A.vector_length, 'maxRows', A.max_rows}, A.instance)
  created = 1
  current = {tostring(total), A.schema_digest, 'IN_PROGRESS', tostring(base + 1), 'secure-sum', A.max_rows, A.instance}
end
local version = tonumber(current[4])
if current[5] ~= 'secure-sum' then
  return {'refused', 0, 0, tonumber(current[1]), version, current[3], 'not_secure_sum'}
end
if tonumber(current[1]) ~= total then
  return {'conflict', 0, 0, tonumber(current[1]), version, current[3], 'totalClients'}
end
if schema ~= '' and schema_digest(job, current[2], schema, A.schema_digest) ~= A.schema_digest then
  return {'conflict', 0, 0, total, version, current[3], 'schema'}
end
if A.max_rows_declared == '1' and current[6] ~= A.max_rows then
  return {'conflict', 0, 0, total, version, current[3], 'maxRows'}
end
local count = redis.call('HLEN', keys)
local existing = redis.call('HGET', keys, client_id)
if existing == A.public_key then
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
redis.call('HSET', keys, client_id, A.public_key)
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
redis.call('ZADD', K.updated, now, job_id)
for _, key in ipairs({job, events, keys}) do redis.call('PEXPIRE', key, ttl) end
return {outcome, created, count, total, version, 'IN_PROGRESS', '', current[7] or ''}
