-- Check the rate limits of a write other than an update (which checks its own in update.lua).
return rate_limited(K.counters, A.limits, A.window) or 0
