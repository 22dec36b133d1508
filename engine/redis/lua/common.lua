-- Shared by StreamHub's publish and history scripts (prepended to each).
-- A session has two keys with the same hash tag:
--   meta   hash: e = epoch, s = last seq, b = data bytes in the stream,
--          t = accepted ms of the last entry (accepted never goes back)
--   stream entries with ID <seq>-0 and fields c (client id), i (id),
--          d (data), a (accepted ms)

local function now_ms()
  local t = redis.call('time')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function field(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then
      return fields[i + 1]
    end
  end
  return nil
end

-- extend makes key expire ms from now, unless it expires later already (a
-- Touch may have kept it longer than a publish does). A key without expiry
-- gets one: this is how a new key gets its first.
local function extend(key, ms)
  if redis.call('pttl', key) < tonumber(ms) then
    redis.call('pexpire', key, ms)
  end
end

-- trim drops the stream's oldest entries while there are more than size,
-- or more than maxbytes of data (never the newest), or they were accepted
-- before cutoff; it returns the bytes left. Entries are accepted in seq
-- order, so the ones to drop are always the oldest.
local function trim(stream, size, maxbytes, cutoff, bytes)
  local n = redis.call('xlen', stream)
  while n > 0 do
    local oldest = redis.call('xrange', stream, '-', '+', 'COUNT', 1)[1]
    local data = field(oldest[2], 'd') or ''
    local accepted = tonumber(field(oldest[2], 'a')) or 0
    if n > size or (maxbytes > 0 and n > 1 and bytes > maxbytes) or (cutoff > 0 and accepted < cutoff) then
      redis.call('xdel', stream, oldest[1])
      n = n - 1
      bytes = bytes - #data
    else
      break
    end
  end
  if n == 0 then
    bytes = 0
  end
  return bytes
end
