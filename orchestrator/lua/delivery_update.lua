-- Record a delivery attempt's outcome, and announce it when it has an event (an attempt that will be
-- retried has none).
local job, events, deliveries, job_id = K.job, K.events, K.deliveries, A.job_id
local current = redis.call('HGET', deliveries, A.destination)
if not current or redis.call('EXISTS', job) == 0 then
  return 0  -- no such delivery, or its job has expired meanwhile
end
local state = cjson.decode(current).state
-- Delivered is final; failed is final too (until the retry endpoint queues it again), so a stale
-- worker cannot turn it back into pending, and a replayed call announces nothing twice.
if state == 'delivered' or state == 'failed' then
  return 0
end
redis.call('HSET', deliveries, A.destination, A.record)
if A.event ~= '' then
  emit(job, events, job_id, A.now_iso, tonumber(A.history), A.channel, A.event, {}, A.members)
end
return 1
