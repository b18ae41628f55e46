"""The streams' side of the archive, in Redis: the archiver's consumer group, how far behind
it is, and trimming each stream to the window that stays after archiving.

The oldest entry not yet archived is the first pending one of the group (read, not yet
acknowledged) or, when none is pending, the first after the group's last-delivered id. Lag is
Redis's `TIME` minus that entry's id time; a trim never goes past it, whatever the window says.
Both are read, and the trim done, in one Lua script on the stream's node: another replica
reading new entries in between cannot make the trim remove them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from sidecar.storage.client import RedisClient

GROUP = "sidecar-archiver"

# KEYS: the stream. ARGV: the group, the window in ms (-1: do not trim). Returns Redis's time
# in ms, the lag in ms (-1: no group yet), the pending count, the length, how many were trimmed.
_POSITION = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('EXISTS', KEYS[1]) == 0 then return {now, 0, 0, 0, 0} end
local function parts(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), seq
end
local function before(a, b)
  local am, as = parts(a)
  local bm, bs = parts(b)
  if am ~= bm then return am < bm end
  if #as ~= #bs then return #as < #bs end
  return as < bs
end
local last = nil
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for i = 1, #group, 2 do info[group[i]] = group[i + 1] end
  if info['name'] == ARGV[1] then last = info['last-delivered-id'] end
end
local length = redis.call('XLEN', KEYS[1])
if not last then return {now, -1, 0, length, 0} end
local summary = redis.call('XPENDING', KEYS[1], ARGV[1])
local oldest = nil
if summary[1] > 0 then
  oldest = summary[2]
else
  local after = redis.call('XRANGE', KEYS[1], '(' .. last, '+', 'COUNT', 1)
  if #after > 0 then oldest = after[1][1] end
end
local lag = 0
if oldest then lag = math.max(0, now - parts(oldest)) end
local trimmed = 0
local window = tonumber(ARGV[2])
if window >= 0 then
  local minid = (now - window) .. '-0'
  if oldest and before(oldest, minid) then minid = oldest end
  trimmed = redis.call('XTRIM', KEYS[1], 'MINID', minid)
end
return {now, lag, summary[1], length - trimmed, trimmed}
"""

# KEYS: the stream. ARGV: the group, the idle time in ms. Consumers idle that long with nothing
# pending are gone (a process that exited): deleted, checked and done atomically, so a consumer
# that has just read entries is never deleted with them.
_FORGET = """
local forgotten = 0
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #consumer, 2 do info[consumer[i]] = consumer[i + 1] end
  if info['pending'] == 0 and info['idle'] >= tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    forgotten = forgotten + 1
  end
end
return forgotten
"""


@dataclass(frozen=True, slots=True)
class Position:
    """Where the archiver stands in one stream, by Redis's clock."""

    now_ms: int  # Redis's TIME
    lag_ms: int | None  # how old the oldest unarchived entry is (None: no group yet)
    pending: int  # read by a replica, not yet acknowledged
    length: int  # entries in the stream (after the trim, if one was asked for)
    trimmed: int  # removed by this call's trim

    @property
    def lag_s(self) -> float:
        """The lag in seconds (0 before the group exists: nothing was asked to archive)."""
        return (self.lag_ms or 0) / 1000


async def ensure_group(redis: RedisClient, stream: str, *, create: bool = True) -> bool:
    """Create the archiver's group on `stream` reading from its first entry (and the stream,
    when `create`); True once it exists, False when the stream does not (and not `create`)."""
    try:
        await redis.xgroup_create(stream, GROUP, id="0", mkstream=create)
    except ResponseError as exc:
        message = str(exc)
        if message.startswith("BUSYGROUP"):
            return True  # another replica (or this one, before a restart) made it
        if not create and "requires the key to exist" in message:
            return False
        raise
    return True


async def position(redis: RedisClient, stream: str, *, trim_to_ms: int | None = None) -> Position:
    """The archiver's position in `stream`; with `trim_to_ms`, first trim the entries older
    than that window by Redis's clock, but none not yet archived."""
    result: Any = await redis.register_script(_POSITION)(
        keys=[stream], args=[GROUP, -1 if trim_to_ms is None else trim_to_ms]
    )
    now, lag, pending, length, trimmed = (int(value) for value in result)
    return Position(now, None if lag < 0 else lag, pending, length, trimmed)


async def forget_idle_consumers(redis: RedisClient, stream: str, idle_ms: int) -> int:
    """Delete the group's consumers idle for `idle_ms` with nothing pending (processes that
    exited); how many. Keeps `XINFO CONSUMERS` from growing with every restart."""
    if not await redis.exists(stream):
        return 0
    try:
        return int(await redis.register_script(_FORGET)(keys=[stream], args=[GROUP, idle_ms]))
    except ResponseError as exc:
        if "NOGROUP" in str(exc):
            return 0
        raise
