"""The Redis commit protocol: the one Lua source of every write, its keys and reply codes.

Every write of :class:`~cascadeui.adapters.RedisStore` is one of these scripts, atomic on
the server; there is no second copy of the protocol in Python. A large document is not
passed through the script's arguments (a script copies them into Lua strings and back,
which cost a 10 MB save about 20%): the writer first ``SET``\\s it under a staging key of
its own lock token, and the commit script ``RENAME``\\s that key over the snapshot (O(1), no
copy) after the same checks. The staging key lives in the state's hash slot, so every
script also runs on a Redis Cluster.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = [
    "APPEND",
    "BUSY",
    "CHANGES",
    "COMMIT",
    "DESCRIBE",
    "FOREIGN_JOURNAL",
    "FOREIGN_KEY",
    "FOREIGN_LINEAGE",
    "LEASE_LOST",
    "NO_SNAPSHOT",
    "ORPHAN_JOURNAL",
    "RELEASE",
    "STAGE_LOST",
    "STALE",
    "Keys",
    "Scripts",
    "has_hash_tag",
]

# What the scripts return instead of a version, all negative.
LEASE_LOST = -1       # the lock is no longer ours: our lease ran out
FOREIGN_KEY = -2      # <key> holds another Redis type than a string
FOREIGN_JOURNAL = -3  # <key>:journal holds another Redis type than a list
STALE = -4            # an append: the version (or the journal) moved since it was read
BUSY = -5             # an append: a full writer holds the lock; retry
NO_SNAPSHOT = -6      # an append: nothing stored under <key> (nor a journal): write whole
ORPHAN_JOURNAL = -7   # an append: a journal without its snapshot
FOREIGN_LINEAGE = -8  # <key>:lineage holds another Redis type than a string
STAGE_LOST = -9       # a staged commit: the staged document is gone (evicted); retry


class Keys(NamedTuple):
    """The Redis keys (and the channel) of one state, all in one hash slot."""

    snapshot: str
    version: str
    lock: str
    journal: str
    lineage: str
    ack: str
    channel: str
    #: Prefix of the staging keys (``<prefix><lock token>``) of large documents.
    stage_prefix: str

    @classmethod
    def of(cls, key: str, *, cluster: bool) -> Keys:
        """The keys of the state under ``key``. In a cluster every key of one state must
        hash to one slot (the scripts touch all of them): a key without a hash tag hashes
        whole, so ``{key}:x`` lands in its slot."""
        base = f"{{{key}}}" if cluster and not has_hash_tag(key) else key
        return cls(key, f"{base}:version", f"{base}:lock", f"{base}:journal",
                   f"{base}:lineage", f"{base}:ack", f"{base}:changes", f"{base}:stage:")

    def stage(self, token: str) -> str:
        """Where the lock holder ``token`` stages a large document (same slot)."""
        return self.stage_prefix + token


def has_hash_tag(key: str) -> bool:
    """Redis Cluster hashes only the part between the first ``{`` and the next ``}``."""
    start = key.find("{")
    return start >= 0 and key.find("}", start + 1) > start + 1


# KEYS: snapshot, version, lock, journal, lineage, stage. ARGV: token, document ('' when
# staged), ttl seconds (0: none), a fresh lineage id, '1' to start a new lineage whatever
# is stored, the channel to PUBLISH the new version on, '1' when the document is staged
# under KEYS[6]. Returns {version, lineage id}. The stored lineage goes on only while the
# state it names is whole (a snapshot, and exactly the journal records its version says);
# anything else is a medium that lost data, and this write starts a new lineage.
COMMIT = """
local staged = ARGV[7] == '1'
local function refuse(code)
  if staged then redis.call('DEL', KEYS[6]) end
  if code ~= -1 then redis.call('DEL', KEYS[3]) end
  return code
end
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return refuse(-1) end
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'string' and kind ~= 'none' then return refuse(-2) end
local jkind = redis.call('TYPE', KEYS[4])['ok']
if jkind ~= 'list' and jkind ~= 'none' then return refuse(-3) end
local lkind = redis.call('TYPE', KEYS[5])['ok']
if lkind ~= 'string' and lkind ~= 'none' then return refuse(-8) end
if staged and redis.call('TYPE', KEYS[6])['ok'] ~= 'string' then return refuse(-9) end
local old = redis.call('GET', KEYS[5])
local n = redis.call('LLEN', KEYS[4])
-- INCR first of the writes: it is the only call that can fail (a non-integer planted under
-- the key), and a failing script keeps its earlier writes.
local v = redis.call('INCR', KEYS[2])
local id = ARGV[4]
if ARGV[5] ~= '1' and old and kind == 'string' then
  local oid, s = string.match(old, '^(%S+) (%d+)$')
  if oid and tonumber(s) + n == v - 1 then id = oid end
end
local ttl = tonumber(ARGV[3])
if staged then
  redis.call('RENAME', KEYS[6], KEYS[1])
  if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) else redis.call('PERSIST', KEYS[1]) end
elseif ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[2])
end
if ttl > 0 then
  redis.call('SET', KEYS[5], id .. ' ' .. v, 'EX', ttl)
else
  redis.call('SET', KEYS[5], id .. ' ' .. v)
end
redis.call('DEL', KEYS[4])
redis.call('DEL', KEYS[3])
-- pcall: a user without the channel in its ACL still commits (it just goes unannounced).
redis.pcall('PUBLISH', ARGV[6], v)
return {v, id}
"""

# KEYS: snapshot, version, lock, journal, lineage. ARGV: the expected version, the
# journal's length read at that version, the record, ttl seconds (0: none), the lineage id
# read at that version ('' for none), the channel to PUBLISH the new version on. Takes no
# lock: a script is atomic, and it appends only while no full writer holds the lock.
APPEND = """
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[1] then return -4 end
if redis.call('EXISTS', KEYS[3]) == 1 then return -5 end
local kind = redis.call('TYPE', KEYS[1])['ok']
local jkind = redis.call('TYPE', KEYS[4])['ok']
if kind ~= 'string' and kind ~= 'none' then return -2 end
if jkind ~= 'list' and jkind ~= 'none' then return -3 end
if redis.call('TYPE', KEYS[5])['ok'] == 'string' then
  if string.match(redis.call('GET', KEYS[5]), '^(%S+) ') ~= ARGV[5] then return -4 end
elseif ARGV[5] ~= '' then
  return -4
end
if kind == 'none' then
  if jkind == 'none' then return -6 end
  return -7
end
if redis.call('LLEN', KEYS[4]) ~= tonumber(ARGV[2]) then return -4 end
-- The version matched an integer just above, so INCR cannot fail after a write.
local v = redis.call('INCR', KEYS[2])
redis.call('RPUSH', KEYS[4], ARGV[3])
local ttl = tonumber(ARGV[4])
if ttl > 0 then
  -- One absolute expiry for both keys: no reader ever sees one without the other.
  local now = redis.call('TIME')
  local at = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + ttl * 1000
  at = string.format('%d', at)
  redis.call('PEXPIREAT', KEYS[1], at)
  redis.call('PEXPIREAT', KEYS[4], at)
  redis.call('PEXPIREAT', KEYS[5], at)
else
  -- As a full write without ttl (a plain SET) does: the state no longer expires.
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[4])
  redis.call('PERSIST', KEYS[5])
end
redis.pcall('PUBLISH', ARGV[6], v)  -- as in COMMIT: never fails the append
return v
"""

# KEYS: snapshot, version, journal, lineage. ARGV: since, the lineage id read at since
# ('' for none, '*' unknown). Returns {version, journal length, the records after
# since...}, or nil when the journal no longer holds all of them (a full write since, a
# missing snapshot, a key of another type, a non-integer counter, another lineage, a
# journal shorter than the counter says).
CHANGES = """
local raw = redis.call('GET', KEYS[2])
local v = tonumber(raw or '0')
local since = tonumber(ARGV[1])
if v == nil or since < 0 or v < since then return nil end
if v == 0 then return {'0', 0} end
if redis.call('TYPE', KEYS[1])['ok'] ~= 'string' then return nil end
local jkind = redis.call('TYPE', KEYS[3])['ok']
if jkind ~= 'list' and jkind ~= 'none' then return nil end
local n = redis.call('LLEN', KEYS[3])
local lineage = nil
if redis.call('TYPE', KEYS[4])['ok'] == 'string' then lineage = redis.call('GET', KEYS[4]) end
if ARGV[2] ~= '*' then
  local id = lineage and string.match(lineage, '^(%S+) ') or ''
  if id ~= ARGV[2] then return nil end
end
if lineage then
  local s = tonumber(string.match(lineage, ' (%d+)$') or '-1')
  if s + n ~= v then return nil end
end
local count = v - since
if count > n then return nil end
local out = {raw, n}
if count > 0 then
  local records = redis.call('LRANGE', KEYS[3], -count, -1)
  for i = 1, #records do out[i + 2] = records[i] end
end
return out
"""

# KEYS: snapshot, journal, version. Returns {exists, snapshot bytes, journal records,
# journal bytes, version or false, pttl}: what describe() shows, summed on the server.
DESCRIBE = """
local n = redis.call('EXISTS', KEYS[1]) + redis.call('EXISTS', KEYS[2])
local size, count, bytes = 0, 0, 0
if redis.call('TYPE', KEYS[1])['ok'] == 'string' then size = redis.call('STRLEN', KEYS[1]) end
if redis.call('TYPE', KEYS[2])['ok'] == 'list' then
  count = redis.call('LLEN', KEYS[2])
  for _, r in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do bytes = bytes + #r end
end
return {n, size, count, bytes, redis.call('GET', KEYS[3]), redis.call('PTTL', KEYS[1])}
"""

# KEYS: lock. ARGV: token. Deletes the lock only while it is still ours.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Scripts:
    """The scripts registered on one redis-py client (run by SHA, loaded on demand)."""

    def __init__(self, client: Any) -> None:
        self.commit: Any = client.register_script(COMMIT)
        self.append: Any = client.register_script(APPEND)
        self.changes: Any = client.register_script(CHANGES)
        self.describe: Any = client.register_script(DESCRIBE)
        self.release: Any = client.register_script(RELEASE)
