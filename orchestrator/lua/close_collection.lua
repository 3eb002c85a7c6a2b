-- Close a job's collection early (an admin) or at its deadline (the sweeper): with at least minClients
-- reported the job aggregates what it has (AGGREGATING, queued); with fewer it FAILS naming who reported and
-- who is missing. A secure sum closes the round in progress instead (lib/rounds.lua), by the same rule.
-- A job no longer IN_PROGRESS only loses its stale deadline entry; one not yet due (the sweeper's call) stays.
local job_id, now = A.job_id, tonumber(A.now_ms)
local ctx = change_context(K, A)
local current = redis.call('HMGET', K.job, 'status', 'createdAt', 'version', 'deadlineAt', 'doneCount',
  'totalClients', 'minClients', 'aggregation', 'round', 'roundDeadlineAt', 'roundTimeout')
if current[1] ~= 'IN_PROGRESS' then
  redis.call('ZREM', K.deadlines, job_id)
  return {0, 'not_collecting', current[1] or '', tonumber(current[3] or '0')}
end
local total = tonumber(current[6])
local k = tonumber(current[7] or '') or total
local secure = current[8] == 'secure-sum' and current[9]
local by = A.by
if by == 'deadline' then
  local due = tonumber((secure and current[10]) or current[4] or '0')
  if due > now then
    redis.call('ZADD', K.deadlines, due, job_id)
    return {0, 'not_due', current[1], tonumber(current[3])}
  end
  -- A round closes at its timeout; only the keys round closes at the job's deadline, when that came first.
  if secure and not (current[9] == 'keys' and tonumber(current[4] or '0') <= now) then by = 'timeout' end
end
if secure then
  local outcome, version = close_round(ctx, job_id, round_job(current[6], current[7], current[2], current[9],
    current[11]), by)
  local status = 'IN_PROGRESS'
  if outcome == 'failed' then status = 'FAILED' elseif outcome == 'aggregating' then status = 'AGGREGATING' end
  return {1, outcome, status, version}
end
local done = tonumber(current[5])
if done >= k then
  return {1, 'aggregating', 'AGGREGATING', start_aggregating(ctx, job_id, current[2], done, total, by)}
end
local reported = redis.call('SMEMBERS', K.clients)
local reason = A.reason .. ': ' .. done .. ' of ' .. total .. ' clients reported (' .. named(reported) .. '); '
  .. (total - done) .. ' never did'
if k < total then reason = reason .. '; at least ' .. k .. ' needed' end
local version = fail_collection(ctx, job_id, current[2], reason,
  {doneCount = done, totalClients = total, minClients = k, closedBy = by})
return {1, 'failed', 'FAILED', version}
