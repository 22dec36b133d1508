-- claim: make an instance the client's owner under a new fence.
-- KEYS[1] the client's owner hash (f = fence, o = owning instance)
-- ARGV[1] the instance
-- Returns {fence as a string, previous owner or ''}. The fence is one more
-- than the last, or the server's clock in microseconds when that is more,
-- so that fences stay unique after the record expired or was lost.
local own = KEYS[1]
local t = redis.call('time')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cur = tonumber(redis.call('hget', own, 'f') or '0') or 0
local prev = redis.call('hget', own, 'o') or ''
local f = cur + 1
if now > f then
  f = now
end
local fs = string.format('%.0f', f)
redis.call('hset', own, 'f', fs, 'o', ARGV[1])
redis.call('persist', own)
return {fs, prev}
