-- Reads run at one moment, as a MULTI of them would, yet served while Redis refuses writes: out of memory,
-- it refuses every command queued in a MULTI, reads included, but runs a script until its first write.
local replies, at = {}, 1
for i, key in ipairs(K.reads) do
  local command, count = A.ops[at], tonumber(A.ops[at + 1])
  replies[i] = redis.call(command, key, unpack(A.ops, at + 2, at + 1 + count))
  at = at + 2 + count
end
return replies
