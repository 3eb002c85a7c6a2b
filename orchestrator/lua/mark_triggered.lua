-- Record that the coordinator accepted the job, so a later attempt polls instead of triggering again.
-- Safe to run twice.
local current = redis.call('HMGET', K.job, 'status', 'attempt')
if current[1] ~= 'AGGREGATING' or current[2] ~= A.attempt then
  return 0
end
redis.call('HSETNX', K.job, 'coordinatorTriggeredAt', A.now_ms)
return 1
