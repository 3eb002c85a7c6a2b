-- The unmask round of a secure sum: a client whose input was counted (U3) posts its shares of the survivors'
-- self-mask seeds and of the dropped clients' mask keys (checked against the round by the caller); the last
-- one expected, or the round's deadline with at least minClients answers, moves the job to AGGREGATING.
local job_id, client_id, now = A.job_id, A.client_id, tonumber(A.now_ms)
local ctx = change_context(K, A)
local current = redis.call('HMGET', K.job, 'status', 'round', 'aggregation', 'totalClients', 'minClients',
  'createdAt', 'roundTimeout', 'version')
local version = tonumber(current[8] or '0')
local function reply(outcome, detail, count, expected)
  return {outcome, current[1] or '', version, count or 0, expected or 0, detail or ''}
end
if not current[1] then return reply('missing') end
if current[3] ~= 'secure-sum' then return reply('refused', 'not_secure_sum') end
local expected = redis.call('SCARD', K.clients)
local prior = redis.call('HGET', K.unmask, client_id)
if prior == A.answer then return reply('duplicate', '', redis.call('HLEN', K.unmask), expected) end
if prior then return reply('refused', 'unmask_conflict') end
if current[1] ~= 'IN_PROGRESS' then return reply('closed') end
if current[2] ~= 'unmask' then return reply('refused', 'round_not_open') end
if redis.call('SISMEMBER', K.clients, client_id) == 0 then return reply('refused', 'client_dropped') end
redis.call('HSET', K.unmask, client_id, A.answer)
local count = redis.call('HLEN', K.unmask)
redis.call('HSET', K.job, 'updatedAt', now)
version = emit(K.job, K.events, job_id, ctx.at, ctx.history, ctx.channel, 'unmask.posted',
  {clientId = client_id, count = count, expected = expected})
local status = 'IN_PROGRESS'
if count == expected then
  local _
  _, version = close_round(ctx, job_id, round_job(current[4], current[5], current[6], 'unmask', current[7]), 'all')
  status = 'AGGREGATING'
end
redis.call('ZADD', K.updated, now, job_id)
for _, key in ipairs({K.job, K.events, K.unmask}) do redis.call('PEXPIRE', key, ctx.ttl) end
return {'posted', status, version, count, expected, ''}
