-- claim: make an instance the client's owner under a new fence.
-- KEYS[1] the client's owner hash (f = fence, o = owning instance,
-- t = when the stream that claimed last opened, microseconds)
-- ARGV[1] the instance, [2] when the claiming stream opened (0: unknown)
-- Returns {fence as a string, previous owner or ''}. The fence is one more
-- than the last, or the server's clock in microseconds when that is more,
-- so that fences stay unique after the record expired or was lost.
-- Returns {'stale'} and changes nothing for a stream opened before the one
-- that claimed last: claims run in no particular order after a stall.
local own = KEYS[1]
local opened = tonumber(ARGV[2]) or 0
if opened > 0 and opened < (tonumber(redis.call('hget', own, 't') or '0') or 0) then
  return {'stale'}
end
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
if opened > 0 then
  redis.call('hset', own, 't', string.format('%.0f', opened))
end
redis.call('persist', own)
return {fs, prev}
