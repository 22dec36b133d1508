-- memberships: a fenced write of the client's memberships.
-- KEYS[1] owner hash (f = fence), KEYS[2] memberships hash (session → value)
-- ARGV[1] fence (0 when the client has no record), ARGV[2] op: save,
-- retain, keep or drop; ARGV[3] ttl ms (retain); ARGV[4..] session, value
-- pairs (save).
-- Returns 1 when applied, 0 when the fence is not the current one.
local own, ms = KEYS[1], KEYS[2]
if (redis.call('hget', own, 'f') or '0') ~= ARGV[1] then
  return 0
end
local op = ARGV[2]
local function tidy()
  if redis.call('exists', ms) == 0 and redis.call('hexists', own, 'o') == 0 then
    redis.call('del', own)
  end
end
if op == 'save' then
  -- Replace the set, keeping its expiry as it was.
  local pttl = redis.call('pttl', ms)
  redis.call('del', ms)
  for i = 4, #ARGV, 200 do
    redis.call('hset', ms, unpack(ARGV, i, math.min(i + 199, #ARGV)))
  end
  if pttl > 0 and #ARGV >= 4 then
    redis.call('pexpire', ms, pttl)
  end
  tidy()
elseif op == 'retain' then
  redis.call('pexpire', ms, ARGV[3])
  redis.call('pexpire', own, ARGV[3])
elseif op == 'keep' then
  redis.call('persist', ms)
  redis.call('persist', own)
elseif op == 'drop' then
  redis.call('del', ms)
  tidy()
else
  return redis.error_reply('ERR unknown memberships op ' .. op)
end
return 1
