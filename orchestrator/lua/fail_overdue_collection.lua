-- Fail a job still collecting clients when its collection deadline has passed, naming the clients that
-- reported. A job no longer IN_PROGRESS only loses its stale deadline index entry.
local job, events, job_id = K.job, K.events, A.job_id
local now, at, ttl, history, channel = tonumber(A.now_ms), A.now_iso, tonumber(A.ttl), tonumber(A.history), A.channel
local current = redis.call('HMGET', job, 'status', 'createdAt', 'version', 'deadlineAt', 'doneCount', 'totalClients')
if current[1] ~= 'IN_PROGRESS' then
  redis.call('ZREM', K.deadlines, job_id)
  return {0, tonumber(current[3] or '0')}
end
if tonumber(current[4] or '0') > now then
  return {0, tonumber(current[3])}
end
local reported = redis.call('SMEMBERS', K.clients)
table.sort(reported)
local named = reported
if #reported > 20 then
  named = {unpack(reported, 1, 20)}
  table.insert(named, 'and ' .. (#reported - 20) .. ' more')
end
local reason = A.reason .. ': ' .. current[5] .. ' of ' .. current[6] .. ' clients reported ('
  .. table.concat(named, ', ') .. '); ' .. (tonumber(current[6]) - tonumber(current[5])) .. ' never did'
redis.call('HSET', job, 'status', 'FAILED', 'failureReason', reason, 'completedAt', now, 'updatedAt', now)
redis.call('ZREM', K.in_progress, job_id)
redis.call('ZREM', K.deadlines, job_id)
redis.call('ZADD', K.failed, tonumber(current[2]), job_id)
redis.call('ZADD', K.updated, now, job_id)
local version = emit(job, events, job_id, at, history, channel, 'job.failed',
  {status = 'FAILED', reason = reason, doneCount = tonumber(current[5]), totalClients = tonumber(current[6])})
for _, key in ipairs({K.job, K.events, K.clients, K.times}) do redis.call('PEXPIRE', key, ttl) end
redis.call('DEL', K.vectors)
return {1, version}
