-- Queue again the deliveries of a completed job that were dead-lettered.
local current = redis.call('HMGET', K.job, 'status', 'resultVersion')
if current[1] ~= 'COMPLETED' then
  return {'-1'}
end
local queued = {}
local records = redis.call('HGETALL', K.deliveries)
for i = 1, #records, 2 do
  if cjson.decode(records[i + 1]).state == 'failed' then
    redis.call('HSET', K.deliveries, records[i], '{"state":"pending","attempts":0}')
    redis.call('XADD', K.delivery_queue, '*', 'jobId', A.job_id, 'destination', records[i], 'version', current[2])
    table.insert(queued, records[i])
  end
end
return queued
