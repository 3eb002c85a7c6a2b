-- The shares round of a secure sum: a client of U1 posts one encrypted share bundle for every member of U1
-- (itself included), which the service keeps for their recipients; the last poster expected closes the round.
-- A repeat of the same post changes nothing; another post after it is refused.
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
if redis.call('HEXISTS', K.public_keys, client_id) == 0 then return reply('refused', 'not_a_participant') end
local expected = redis.call('HLEN', K.public_keys)
local prior = redis.call('HGET', K.sharers, client_id)
if prior == A.digest then return reply('duplicate', '', redis.call('HLEN', K.sharers), expected) end
if prior then return reply('refused', 'shares_conflict') end
if current[1] ~= 'IN_PROGRESS' then return reply('closed') end
if current[2] == 'keys' then return reply('refused', 'round_not_open') end
if current[2] ~= 'shares' then return reply('refused', 'client_dropped') end
local pairs_ = A.pairs
if #pairs_ ~= 2 * expected then return reply('refused', 'shares_incomplete', 0, expected) end
for i = 1, #pairs_, 2 do
  if redis.call('HEXISTS', K.public_keys, pairs_[i]) == 0 then return reply('refused', 'shares_incomplete', 0, expected) end
end
for i = 1, #pairs_, 2 do
  redis.call('HSET', K.shares, pairs_[i] .. '/' .. client_id, pairs_[i + 1])
end
redis.call('HSET', K.sharers, client_id, A.digest)
local count = redis.call('HLEN', K.sharers)
redis.call('HSET', K.job, 'updatedAt', now)
version = emit(K.job, K.events, job_id, ctx.at, ctx.history, ctx.channel, 'shares.posted',
  {clientId = client_id, count = count, expected = expected})
if count == expected then
  local _
  _, version = close_round(ctx, job_id, round_job(current[4], current[5], current[6], 'shares', current[7]), 'all')
end
redis.call('ZADD', K.updated, now, job_id)
for _, key in ipairs({K.job, K.events, K.sharers, K.shares}) do redis.call('PEXPIRE', key, ctx.ttl) end
return {'posted', 'IN_PROGRESS', version, count, expected, ''}
