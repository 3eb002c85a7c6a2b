-- About to trigger the coordinator: keep the token it must present when it calls back with the result.
-- An earlier attempt that got this far may have reached the coordinator: its token is kept and returned.
local current = redis.call('HMGET', K.job, 'status', 'attempt', 'callbackToken')
if current[1] ~= 'AGGREGATING' or current[2] ~= A.attempt then
  return {0, ''}
end
if current[3] then
  return {2, current[3]}
end
redis.call('HSET', K.job, 'callbackToken', A.token)
return {1, A.token}
