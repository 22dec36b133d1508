-- publish: the session's next entry, all or nothing.
-- KEYS[1] meta, KEYS[2] stream, KEYS[3] the publication's id key (client id
-- and id, under the session's hash tag)
-- ARGV[1] channel, [2] client id, [3] id, [4] data, [5] epoch to create
-- when the session has none, [6] size, [7] max bytes (0: none),
-- [8] ttl ms (0: none), [9] meta ttl ms (0: none), [10] stream ttl ms (0: none),
-- [11] how long the id key keeps a publication from being accepted twice
-- (ms; 0: the id is empty, no key)
-- Returns {seq, epoch, accepted ms}: the new entry's, or those of the entry
-- the client published with the same id in this epoch before.
--
-- Redis does not roll a script back when a command fails, so the only
-- command that could fail on well-formed keys (XADD, should its ID not be
-- above the stream's last) runs before anything is written, and the rest
-- cannot fail.
local meta, stream = KEYS[1], KEYS[2]
local m = redis.call('hmget', meta, 'e', 's', 'b', 't')
local epoch = m[1]
local seq = tonumber(m[2]) or 0
local bytes = tonumber(m[3]) or 0
local last = tonumber(m[4]) or 0
if not epoch then
  -- No meta: a new session, or one whose meta expired or was lost. Entries
  -- of an older epoch must not mix with the new one.
  epoch, seq, bytes, last = ARGV[5], 0, 0, 0
  redis.call('del', stream)
elseif bytes > 0 and redis.call('exists', stream) == 0 then
  -- The stream expired under a live meta (its entries had all aged out):
  -- their bytes went with it.
  bytes = 0
end
local once = tonumber(ARGV[11])
if once > 0 and m[1] then
  local prev = redis.call('get', KEYS[3])
  if prev then
    local pseq, paccepted, pepoch = string.match(prev, '^(%d+):(%d+):(.*)$')
    if pepoch == epoch then
      return {tonumber(pseq), epoch, tonumber(paccepted)}
    end
  end
end
seq = seq + 1
local accepted = math.max(now_ms(), last)
local data = ARGV[4]
redis.call('xadd', stream, string.format('%d-0', seq), 'c', ARGV[2], 'i', ARGV[3], 'd', data, 'a', string.format('%d', accepted))
local ttl = tonumber(ARGV[8])
local cutoff = 0
if ttl > 0 then
  cutoff = accepted - ttl
end
bytes = trim(stream, tonumber(ARGV[6]), tonumber(ARGV[7]), cutoff, bytes + #data)
redis.call('hset', meta, 'e', epoch, 's', string.format('%d', seq), 'b', string.format('%d', bytes), 't', string.format('%d', accepted))
if tonumber(ARGV[9]) > 0 then
  extend(meta, ARGV[9])
end
if tonumber(ARGV[10]) > 0 then
  extend(stream, ARGV[10])
end
if once > 0 then
  redis.call('set', KEYS[3], string.format('%d:%d:', seq, accepted) .. epoch, 'PX', once)
end
-- seq:accepted:epoch:len(client id):len(id):<client id><id><data>
redis.call('publish', ARGV[1], string.format('%d:%d:%s:%d:%d:', seq, accepted, epoch, #ARGV[2], #ARGV[3]) .. ARGV[2] .. ARGV[3] .. data)
return {seq, epoch, accepted}
