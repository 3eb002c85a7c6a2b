-- Expire one job whose last change is older than its TTL.
-- The job's keys also carry a Redis TTL a little longer than the job TTL, as a backstop for a
-- deployment where no replica runs the janitor; then only the index entries remain, removed here.
local job, job_id = K.job, A.job_id
local updated = redis.call('HGET', job, 'updatedAt')
if updated and tonumber(updated) > tonumber(A.cutoff) then
  return 0
end
for _, index in ipairs(K.indexes) do redis.call('ZREM', index, job_id) end
if not updated then
  return 0
end
local version = redis.call('HINCRBY', job, 'version', 1)
local status = redis.call('HGET', job, 'status')
redis.call('DEL', K.job, K.clients, K.times, K.events, K.deliveries, K.public_keys, K.vectors, K.sharers, K.shares,
  K.unmask, K.dropped)
redis.call('SET', K.tomb, version, 'PX', tonumber(A.tomb_ttl))
redis.call('PUBLISH', A.channel, cjson.encode({type = 'job.expired', jobId = job_id, version = version,
  at = A.now_iso, status = status}))
return 1
