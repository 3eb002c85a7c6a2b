-- Quorums (k of n) and the rounds of a secure sum; needs emit. Every function takes ``ctx``: {keys (the
-- script's keys table, with every name of scripts.ROUND_KEYS), now (ms), at (ISO), ttl, history, channel}.
--
-- A secure sum runs the rounds of Bonawitz et al. 2017: keys (every client, expected: totalClients; U1 =
-- the registrants), shares (expected U1; U2 = the posters), inputs (expected U2; U3 = the clients counted)
-- and unmask (expected U3). A round closes when all it expects answered or at its deadline; it goes on with
-- at least minClients, else the job FAILS naming the round and the missing clients.
local NEXT_ROUND = {keys = 'shares', shares = 'inputs', inputs = 'unmask', unmask = 'done'}
local NAMED = 20 -- how many client ids a reason names before 'and N more'
local DEFAULT_ROUND_TIMEOUT = 300000 -- ms: a job stored before rounds had timeouts

-- The ``ctx`` of a script that takes scripts._CHANGE's arguments (``args``) and the round keys (``keys``).
local function change_context(keys, args)
  return {keys = keys, now = tonumber(args.now_ms), at = args.now_iso, ttl = tonumber(args.ttl),
    history = tonumber(args.history), channel = args.channel}
end

-- The job close_round takes, from its stored fields as HMGET gives them (text; minClients and roundTimeout
-- absent from a job stored before them).
local function round_job(total, k, created, round, timeout)
  local n = tonumber(total)
  return {total = n, k = tonumber(k or '') or n, created = created, round = round,
    timeout = tonumber(timeout or '') or DEFAULT_ROUND_TIMEOUT}
end

local function named(ids)
  table.sort(ids)
  if #ids <= NAMED then return table.concat(ids, ', ') end
  return table.concat({unpack(ids, 1, NAMED)}, ', ') .. ' and ' .. (#ids - NAMED) .. ' more'
end

-- The members of ``expected`` not in ``answered`` (both lists), sorted.
local function missing_of(expected, answered)
  local seen, missing = {}, {}
  for _, id in ipairs(answered) do seen[id] = true end
  for _, id in ipairs(expected) do
    if not seen[id] then table.insert(missing, id) end
  end
  table.sort(missing)
  return missing
end

-- Who a round expects (nil for the keys round: ids not known yet) and who answered it.
local function round_members(ctx, round)
  if round == 'keys' then return nil, redis.call('HKEYS', ctx.keys.public_keys) end
  if round == 'shares' then return redis.call('HKEYS', ctx.keys.public_keys), redis.call('HKEYS', ctx.keys.sharers) end
  if round == 'inputs' then return redis.call('HKEYS', ctx.keys.sharers), redis.call('SMEMBERS', ctx.keys.clients) end
  return redis.call('SMEMBERS', ctx.keys.clients), redis.call('HKEYS', ctx.keys.unmask)
end

-- IN_PROGRESS -> AGGREGATING with the clients counted as contributors, queued for a worker. Returns the version.
local function start_aggregating(ctx, job_id, created_at, done, total, by)
  redis.call('HSET', ctx.keys.job, 'status', 'AGGREGATING', 'aggregatingAt', ctx.now, 'closedBy', by)
  redis.call('ZREM', ctx.keys.in_progress, job_id)
  redis.call('ZREM', ctx.keys.deadlines, job_id)
  redis.call('ZADD', ctx.keys.aggregating, tonumber(created_at), job_id)
  local version = emit(ctx.keys.job, ctx.keys.events, job_id, ctx.at, ctx.history, ctx.channel, 'job.aggregating',
    {doneCount = done, totalClients = total, status = 'AGGREGATING', contributors = done, closedBy = by})
  redis.call('XADD', ctx.keys.queue, '*', 'jobId', job_id, 'version', version)
  return version
end

-- IN_PROGRESS -> FAILED with ``reason``; what only the protocol needed is deleted. Returns the version.
local function fail_collection(ctx, job_id, created_at, reason, extra)
  redis.call('HSET', ctx.keys.job, 'status', 'FAILED', 'failureReason', reason, 'completedAt', ctx.now,
    'updatedAt', ctx.now, 'closedBy', extra.closedBy)
  redis.call('ZREM', ctx.keys.in_progress, job_id)
  redis.call('ZREM', ctx.keys.deadlines, job_id)
  redis.call('ZADD', ctx.keys.failed, tonumber(created_at), job_id)
  redis.call('ZADD', ctx.keys.updated, ctx.now, job_id)
  extra.status, extra.reason = 'FAILED', reason
  local version = emit(ctx.keys.job, ctx.keys.events, job_id, ctx.at, ctx.history, ctx.channel, 'job.failed', extra)
  for _, key in ipairs({ctx.keys.job, ctx.keys.events, ctx.keys.clients, ctx.keys.times, ctx.keys.dropped, ctx.keys.public_keys}) do
    redis.call('PEXPIRE', key, ctx.ttl)
  end
  redis.call('DEL', ctx.keys.vectors, ctx.keys.sharers, ctx.keys.shares, ctx.keys.unmask)
  return version
end

-- The next deadline of a job still collecting: its round's (a secure sum's) or its collection's.
local function schedule(ctx, job_id, at_ms)
  redis.call('ZADD', ctx.keys.deadlines, at_ms, job_id)
end

-- Close the round ``job.round`` of a secure sum (job: {total, k, created, round, timeout}) ``by`` 'all',
-- 'timeout', 'deadline' or 'admin'. Returns (outcome, version): 'next' (the next round opened),
-- 'aggregating' (the unmask round closed) or 'failed'.
local function close_round(ctx, job_id, job, by)
  local round = job.round
  local expected, answered = round_members(ctx, round)
  local expected_count = job.total
  local missing = {}
  if expected then
    expected_count = #expected
    missing = missing_of(expected, answered)
  end
  if #answered < job.k then
    local who = ''
    if #missing > 0 then who = '; missing: ' .. named(missing) end
    if not expected then who = '; ' .. (job.total - #answered) .. ' never registered a key' end
    local reason = 'the ' .. round .. ' round closed (' .. by .. ') with ' .. #answered .. ' of ' .. expected_count
      .. ' clients (' .. named({unpack(answered)}) .. '); at least ' .. job.k .. ' needed' .. who
    return 'failed', fail_collection(ctx, job_id, job.created, reason,
      {round = round, closedBy = by, doneCount = #answered, totalClients = job.total})
  end
  -- Clients that answered the unmask round late still count: their input is in the sum.
  if round ~= 'unmask' then
    for _, id in ipairs(missing) do
      redis.call('HSET', ctx.keys.dropped, id, round)
      emit(ctx.keys.job, ctx.keys.events, job_id, ctx.at, ctx.history, ctx.channel, 'client.dropped', {clientId = id, round = round})
    end
    redis.call('PEXPIRE', ctx.keys.dropped, ctx.ttl)
  end
  local following = NEXT_ROUND[round]
  local deadline = ctx.now + job.timeout
  if following == 'done' then deadline = 0 end
  redis.call('HSET', ctx.keys.job, 'round', following, 'roundStartedAt', ctx.now, 'roundDeadlineAt', deadline,
    'updatedAt', ctx.now)
  local closed = {round = round, closedBy = by, participants = #answered, expected = expected_count,
    next = following, roundDeadlineAt = deadline}
  if #missing > 0 then closed.dropped = missing end
  local version = emit(ctx.keys.job, ctx.keys.events, job_id, ctx.at, ctx.history, ctx.channel, 'round.closed', closed)
  if round == 'keys' then
    version = emit(ctx.keys.job, ctx.keys.events, job_id, ctx.at, ctx.history, ctx.channel, 'keys.complete',
      {keyCount = #answered, totalClients = job.total})
  end
  if following == 'done' then
    return 'aggregating', start_aggregating(ctx, job_id, job.created, redis.call('SCARD', ctx.keys.clients), job.total, by)
  end
  schedule(ctx, job_id, deadline)
  return 'next', version
end
