-- history: entries from a position, and the session's position.
-- KEYS[1] meta, KEYS[2] stream
-- ARGV[1] first stream ID wanted, [2] limit (< 0: all, 0: none),
-- [3] epoch to create when the session has none, [4] ttl ms (0: none),
-- [5] meta ttl ms (0: none)
-- Returns {seq, epoch, entries}.
local meta, stream = KEYS[1], KEYS[2]
local m = redis.call('hmget', meta, 'e', 's', 'b')
local epoch = m[1]
if not epoch then
  -- Give the session its epoch now, so that a reader and the next
  -- publisher agree on it.
  epoch = ARGV[3]
  redis.call('del', stream)
  redis.call('hset', meta, 'e', epoch, 's', '0', 'b', '0', 't', '0')
  if tonumber(ARGV[5]) > 0 then
    redis.call('pexpire', meta, ARGV[5])
  end
  return {0, epoch, {}}
end
local seq = tonumber(m[2]) or 0
local ttl = tonumber(ARGV[4])
if ttl > 0 then
  local bytes = tonumber(m[3]) or 0
  local left = trim(stream, math.huge, 0, now_ms() - ttl, bytes)
  if left ~= bytes then
    redis.call('hset', meta, 'b', string.format('%d', left))
  end
end
local limit = tonumber(ARGV[2])
local entries = {}
if limit > 0 then
  entries = redis.call('xrange', stream, ARGV[1], '+', 'COUNT', limit)
elseif limit < 0 then
  entries = redis.call('xrange', stream, ARGV[1], '+')
end
return {seq, epoch, entries}
