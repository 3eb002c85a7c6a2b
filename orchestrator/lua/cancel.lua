-- Cancel a job that has not finished: IN_PROGRESS or AGGREGATING -> CANCELLED, once.
-- An aggregation already queued for the job finds it CANCELLED and finishes nothing (finish.lua checks).
local job, events, job_id = K.job, K.events, A.job_id
local now, at, ttl, history, channel = tonumber(A.now_ms), A.now_iso, tonumber(A.ttl), tonumber(A.history), A.channel
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
redis.call('HSET', job, 'status', 'CANCELLED', 'failureReason', A.reason, 'completedAt', now, 'updatedAt', now)
redis.call('ZREM', K.in_progress, job_id)
redis.call('ZREM', K.aggregating, job_id)
redis.call('ZREM', K.deadlines, job_id)
redis.call('ZADD', K.cancelled, tonumber(current[2]), job_id)
redis.call('ZADD', K.updated, now, job_id)
local version = emit(job, events, job_id, at, history, channel, 'job.cancelled',
  {status = 'CANCELLED', previousStatus = current[1], reason = A.reason})
for _, key in ipairs({K.job, K.events, K.clients, K.times}) do redis.call('PEXPIRE', key, ttl) end
redis.call('DEL', unpack(K.protocol))
return {'cancelled', 'CANCELLED', version}
