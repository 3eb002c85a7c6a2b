-- Start an aggregation attempt: fences off every earlier attempt of the job. A repeated call starts yet
-- another attempt: only the newest may finish the job.
local current = redis.call('HMGET', K.job, 'status', 'aggregatingAt', 'coordinatorTriggeredAt', 'aggregation',
  'schema')
if current[1] ~= 'AGGREGATING' then
  return {0}
end
local attempt = redis.call('HINCRBY', K.job, 'attempt', 1)
redis.call('HSET', K.job, 'attemptOwner', A.worker, 'attemptStartedAt', A.now_ms)
local result = {1, attempt, current[2] or '0', current[3] or '', current[4] or '', current[5] or ''}
for _, client in ipairs(redis.call('SMEMBERS', K.clients)) do table.insert(result, client) end
return result
