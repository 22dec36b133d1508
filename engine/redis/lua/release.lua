-- release: clear the client's owner if the instance still owns it under the
-- fence; a record left without owner and memberships goes.
-- KEYS[1] owner hash, KEYS[2] memberships hash
-- ARGV[1] instance, ARGV[2] fence
-- Returns 1 when released, 0 when the fence or owner did not match.
local own, ms = KEYS[1], KEYS[2]
local r = redis.call('hmget', own, 'f', 'o')
if r[1] ~= ARGV[2] or r[2] ~= ARGV[1] then
  return 0
end
if redis.call('exists', ms) == 0 then
  redis.call('del', own)
else
  redis.call('hdel', own, 'o')
end
return 1
