-- Start an aggregation attempt: fences off every earlier attempt of the job. A repeated call starts yet
-- another attempt: only the newest may finish the job.
local current = redis.call('HMGET', K.job, 'status', 'aggregatingAt', 'coordinatorTriggeredAt', 'aggregation',
  'schema', 'totalClients')
if current[1] ~= 'AGGREGATING' then
  return {0}
end
local attempt = redis.call('HINCRBY', K.job, 'attempt', 1)
redis.call('HSET', K.job, 'attemptOwner', A.worker, 'attemptStartedAt', A.now_ms)
local clients = redis.call('SMEMBERS', K.clients)
local result = {1, attempt, current[2] or '0', current[3] or '', current[4] or '', current[5] or '', current[6] or '0',
  #clients}
for _, client in ipairs(clients) do table.insert(result, client) end
-- The clients known by id (a secure sum's key registrants): those not among the contributors are missing.
for _, client in ipairs(redis.call('HKEYS', K.public_keys)) do table.insert(result, client) end
return result
