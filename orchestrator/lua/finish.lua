-- Finish an aggregating job: AGGREGATING -> COMPLETED or FAILED, once. Nothing changes when the job is not
-- AGGREGATING (already finished, cancelled or unknown), or another attempt owns it, or it is not yet
-- overdue: so a retried, duplicated or stale call changes nothing.
-- When the job COMPLETES, each delivery destination gets a pending delivery record and a delivery queue
-- entry, in this same script. The result JSON is spliced into the event text as given: a cjson round trip
-- would round its numbers.
local job, events, job_id, outcome = K.job, K.events, A.job_id, A.status
local now, at, ttl, history, channel = tonumber(A.now_ms), A.now_iso, tonumber(A.ttl), tonumber(A.history), A.channel
local current = redis.call('HMGET', job, 'status', 'createdAt', 'version', 'attempt', 'aggregatingAt')
if current[1] ~= 'AGGREGATING' or (A.attempt ~= '' and current[4] ~= A.attempt)
    or (A.aggregating_since ~= '' and tonumber(current[5] or '0') > tonumber(A.aggregating_since)) then
  return {0, tonumber(current[3] or '0')}
end
redis.call('HSET', job, 'status', outcome, 'finalResult', A.result, 'failureReason', A.reason,
  'completedAt', now, 'updatedAt', now)
redis.call('ZREM', K.aggregating, job_id)
redis.call('ZADD', K.finished, tonumber(current[2]), job_id)
redis.call('ZADD', K.updated, now, job_id)
local version
if outcome == 'COMPLETED' then
  local suffix = nil
  if A.result ~= '' then suffix = '"finalResult":' .. A.result end
  version = emit(job, events, job_id, at, history, channel, 'job.completed', {status = outcome}, suffix)
  -- The version of this result: deliveries (and their Idempotency-Key) refer to it, retries too.
  redis.call('HSET', job, 'resultVersion', version)
  for destination in string.gmatch(A.destinations, '[^,]+') do
    redis.call('HSET', K.deliveries, destination, '{"state":"pending","attempts":0}')
    redis.call('XADD', K.delivery_queue, '*', 'jobId', job_id, 'destination', destination, 'version', version)
  end
  redis.call('PEXPIRE', K.deliveries, ttl)
else
  version = emit(job, events, job_id, at, history, channel, 'job.failed', {status = outcome, reason = A.reason})
end
for _, key in ipairs({K.job, K.events, K.clients, K.times}) do redis.call('PEXPIRE', key, ttl) end
redis.call('DEL', unpack(K.protocol))
return {1, version}
