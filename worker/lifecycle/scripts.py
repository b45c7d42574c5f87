"""The Lua scripts of the job lifecycle: dequeue (move + read in one round trip) and apply.

Each keeps one step of RQ's lifecycle atomic and one round trip: what RQ does with LMOVE then
HGETALL, or with WATCH + MULTI/EXEC, here is one EVALSHA. They write exactly RQ's keys.
"""

from __future__ import annotations

from worker.jobdata import READ_JOB_LUA
from worker.quarantine import MAX_JOB_ID_BYTES

# KEYS: queue list, its intermediate list. ARGV: most jobs to take, job key prefix, most bytes
# of a hash (WORKER_MAX_JOB_BYTES). Returns [id1, fields1, id2, fields2, ...]: each job moved to
# the intermediate list exactly as RQ's LMOVE dequeue does, with its hash read in the same round
# trip (empty: no such hash) by ``read`` (worker/jobdata.py): a hash over the cap comes back as
# its size, a key of another type as 'wrongtype:<type>', so neither stops the script half-way
# (a WRONGTYPE error used to leave the ids already moved stranded and stop the worker). An id
# longer than MAX_JOB_ID_BYTES is removed here and comes back truncated, as 'idtoolong:<n>'. A
# queue or intermediate list of the wrong type fails the first LMOVE, before anything moved.
DEQUEUE_LUA = (
    READ_JOB_LUA
    + """
local cap = tonumber(ARGV[3])
local out = {}
for _ = 1, tonumber(ARGV[1]) do
  local id = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
  if not id then break end
  if #id > """
    + str(MAX_JOB_ID_BYTES)
    + """ then
    redis.call('LREM', KEYS[2], -1, id)
    out[#out + 1] = string.sub(id, 1, 100)
    out[#out + 1] = 'idtoolong:' .. #id
  else
    out[#out + 1] = id
    out[#out + 1] = read(ARGV[2] .. id, cap)
  end
end
return out
"""
)

# KEYS: the job hash. ARGV: most bytes. The hash of a job BLMOVE took, read as above.
READ_ONE_LUA = READ_JOB_LUA + "return read(KEYS[1], tonumber(ARGV[1]))\n"

# ARGV: guard, n1, command 1 (n1 words), n2, command 2, ...
# Applies the commands atomically (like MULTI/EXEC) and returns 1, unless the guard says no:
#   guard "absent": KEYS[1] (the job's dependents set) must not exist; else nothing is written
#     and 0 returned (the caller falls back to RQ's WATCH/MULTI path, which enqueues them);
#   guard "first": the first command (LREM from the intermediate list) must remove something;
#     else 0, and only that command ran (another worker's recovery took the job meanwhile) —
#     unless KEYS[1] (this attempt's execution hash) exists: the same writes were applied by an
#     earlier send whose reply was lost, so 1 and nothing written twice.
# Before anything is written, every key a command writes by type (HSET: a hash, ZADD: a sorted
# set, ...) is checked: a key of another type (a job hash someone SET to a string, a results
# stream that is a list) makes the script return 'WRONGTYPE <key> ...' with nothing written.
# Without the check the command failed half-way through the script: the writes before it
# stayed (a job counted as finished, its execution left registered) and the rest never ran.
APPLY_LUA = """
local guard = ARGV[1]
if guard == 'absent' and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local want = {HSET = 'hash', HINCRBY = 'hash', HINCRBYFLOAT = 'hash', HDEL = 'hash', ZADD = 'zset',
  ZREM = 'zset', SADD = 'set', SREM = 'set', LREM = 'list', LPUSH = 'list', RPUSH = 'list',
  XADD = 'stream', XTRIM = 'stream'}
local checked = {}
local i, n = 2, #ARGV
while i <= n do
  local t = want[string.upper(ARGV[i + 1])]
  local key = ARGV[i + 2]
  if t and not checked[key] then
    checked[key] = true
    local have = redis.call('TYPE', key)['ok']
    if have ~= 'none' and have ~= t then
      return 'WRONGTYPE ' .. key .. ' holds a ' .. have .. ', not a ' .. t
    end
  end
  i = i + tonumber(ARGV[i]) + 1
end
i = 2
while i <= n do
  local c = tonumber(ARGV[i])
  local r = redis.call(unpack(ARGV, i + 1, i + c))
  if guard == 'first' and i == 2 and r == 0 then
    if KEYS[1] and redis.call('EXISTS', KEYS[1]) == 1 then return 1 end
    return 0
  end
  i = i + c + 1
end
return 1
"""
