-- rate_limited: fixed-window rate limits. Each counter of ``counters`` is incremented (and given the
-- window's expiry when it starts) unless its limit is 0 (none); returns the milliseconds until the window
-- of the first counter over its limit ends, or nil. A counter counts refused requests too, so a client
-- that keeps hammering stays refused until its window ends; the counters after an exceeded one are left
-- alone. (A retried EVALSHA counts a request twice: harmless for a limit.)
local function rate_limited(counters, limits, window)
  for i, key in ipairs(counters) do
    local limit = tonumber(limits[i])
    if limit > 0 then
      local n = redis.call('INCR', key)
      if n == 1 then redis.call('PEXPIRE', key, window) end
      if n > limit then return math.max(redis.call('PTTL', key), 1) end
    end
  end
  return nil
end
