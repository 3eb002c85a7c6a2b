-- Store what the coordinator pushed to our returnUrl, for the worker polling the job to pick up.
local current = redis.call('HMGET', K.job, 'status', 'callbackToken')
if current[1] ~= 'AGGREGATING' then
  return 0
end
if not current[2] or current[2] ~= A.token then
  return -1
end
redis.call('HSET', K.job, 'coordinatorResult', A.result)
return 1
