-- emit: bump the job's version, append the event to the bounded per-job history and publish it, so what
-- is stored and what is broadcast cannot disagree. Returns the new version.
--   job (hash key), events (list key), job_id, at (ISO time), history (max events), channel,
--   kind (the event's type), extra (its other members)
--   suffix: optional raw JSON members ('"finalResult":{...}') spliced into the event as given: a cjson
--   round trip would round the numbers of a result.
local function emit(job, events, job_id, at, history, channel, kind, extra, suffix)
  local version = redis.call('HINCRBY', job, 'version', 1)
  local event = {type = kind, jobId = job_id, version = version, at = at}
  for k, v in pairs(extra) do event[k] = v end
  local message = cjson.encode(event)
  if suffix then
    message = string.sub(message, 1, -2) .. ',' .. suffix .. '}'
  end
  redis.call('RPUSH', events, message)
  redis.call('LTRIM', events, -history, -1)
  redis.call('PUBLISH', channel, message)
  return version
end
