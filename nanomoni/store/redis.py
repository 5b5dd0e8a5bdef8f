"""Issuer ledger and vendor channel state on Redis or Redis Cluster.

Every state transition is one Lua script (atomic on the server). Money stays
exact: Lua numbers are doubles, so scripts never turn an amount into a number;
arithmetic is HINCRBY/INCRBY (int64, parsed by Redis) and comparisons are on
canonical decimal strings (longer is larger, equal length compares lexically).
Results of HINCRBY are re-read with HGET because Lua would hand them back as
doubles.

Layout (Cluster: every key of one vendor channel carries the `{channel_id}`
hash tag; all issuer keys share the `{nm-issuer}` tag so its transitions stay
single-slot):
  vendor  v:{cid}  HASH  i=index o=owed p=proof t=created_at [c=closing] [s=settlement]
                         [u=consumed by paid requests (SPEC §11)]
                         [T=terms accepted under, ta=their amount (for the audit)]
          n:{cid}  HASH  packed node key -> 32-byte node
          r:{cid}:<request id>  STRING  a paid request, expiring after 10 minutes
  issuer  {nm-issuer}:accounts  HASH  public key b64 -> balance
          {nm-issuer}:supply    STRING Σ grants + Σ deposits (caps every balance below 2**63)
          {nm-issuer}:roots     SET    commitment roots ever used
          {nm-issuer}:opens     HASH   open key -> channel id (a replayed open finds it)
          {nm-issuer}:ch:<cid>  HASH   a=amount ck=client vk=vendor t=terms
                                       [d=proof digest x=closure cb/vb=balances after]

Scaling the issuer past one shard (not needed yet: one shard carries ~100k
transitions/s): give each client account its own tag and put a channel's key
under its client's tag, so open (check + debit + create) stays one single-slot
script; make the used-roots set a per-root key reserved first with SET NX in
the root's own slot (a refused open releases it); and make settlement two
idempotent steps keyed by channel id — close + refund in the client's slot,
recording an outbox entry, then credit the vendor in the vendor's slot guarded
by SET NX `credited:{vendor}:<cid>` — so a retry after a crash moves money once.
Conservation then holds once every outbox entry is applied (a sweeper replays
them), rather than at every instant.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import msgspec

from nanomoni.config import FINALIZE_BATCH
from nanomoni.protocol.audit import Ledger, VendorChannel
from nanomoni.protocol.model import (
    Account,
    CasOutcome,
    CasResult,
    ChannelState,
    ChannelTerms,
    Closing,
    ClosingChannel,
    Closure,
    IssuerChannel,
    Opened,
    PaymentState,
    Receipt,
    Settled,
    ToppedUp,
    VendorView,
)
from nanomoni.store.base import (
    DEFAULT_DISPUTE_WINDOW_US,
    REQUEST_MEMORY,
    Charge,
    ChargeOutcome,
    StoreUnavailable,
)
from nanomoni.store.codec import (
    MAX_INT,
    check_amount,
    check_open_key,
    check_times,
    closure_to_blob,
    ledger_channel,
    pack_node_key,
    receipt,
    refusal,
    settlement_from_blob,
    settlement_to_blob,
    stored_closure,
    terms_from_blob,
    terms_to_blob,
)
from nanomoni.store.resp import Arg, Client, ClusterClient, Reply, Script

R = TypeVar("R")
T = TypeVar("T")

# A Lua snippet: is decimal string a >= decimal string b (both canonical, non-negative)?
_GE = """
local function ge(a, b)
  if #a ~= #b then return #a > #b end
  return a >= b
end
"""

_VENDOR_LOAD = Script(
    """
local s = redis.call('HMGET', KEYS[1], 'i', 'o', 'p', 't', 'c')
if #ARGV > 0 then
  local n = redis.call('HMGET', KEYS[2], unpack(ARGV))
  for j = 1, #n do s[5 + j] = n[j] end
end
return s
"""
)

# The vendor's compare-and-set, shared by payments, batches and the paywall's charge, on
# the channel whose state and node keys are KEYS[k], KEYS[k + 1]: ARGV[n] = the index
# the writer decided against ('': any lower one, '0': none); ARGV[n+1..n+4] = index,
# owed, proof, created_at; ARGV[n+5..last] = node field/value pairs.
# Returns nil once stored, else {2 (closing) | 1 (lost), the stored i, o, p, t}.
_STORE_STATE = """
local function store_state(k, n, last)
  local s = redis.call('HMGET', KEYS[k], 'c', 'i', 'o', 'p', 't')
  if s[1] then return {2, s[2], s[3], s[4], s[5]} end
  if s[2] and ge(s[2], ARGV[n + 1]) then return {1, s[2], s[3], s[4], s[5]} end
  if ARGV[n] ~= '' and (s[2] or '0') ~= ARGV[n] then return {1, s[2], s[3], s[4], s[5]} end
  redis.call('HSET', KEYS[k], 'i', ARGV[n + 1], 'o', ARGV[n + 2], 'p', ARGV[n + 3],
    't', ARGV[n + 4])
  if last > n + 4 then redis.call('HSET', KEYS[k + 1], unpack(ARGV, n + 5, last)) end
  return nil
end
"""

_VENDOR_CAS = Script(_GE + _STORE_STATE + "return store_state(1, 1, #ARGV) or {0}\n")

# The paywall's step (SPEC §11). KEYS: state, nodes, request id. ARGV: need = max(price,
# minimum), need − price, has request id, its lifetime in ms, has a new state, then
# store_state's arguments. consumed lives in the state hash as `u`. Amounts stay exact:
# the spend is tried with HINCRBY (int64) and undone when it passes owed.
_PAYWALL_CHARGE = Script(
    _GE
    + _STORE_STATE
    + """
if ARGV[3] == '1' and redis.call('EXISTS', KEYS[3]) == 1 then
  local c = redis.call('HMGET', KEYS[1], 'o', 'u')
  return {3, c[1] or '0', c[2] or '0'}
end
if ARGV[5] == '1' then
  local lost = store_state(1, 6, #ARGV)
  if lost then
    if lost[1] == 2 then lost[1] = 4 else lost[1] = 5 end
    return lost
  end
end
local owed = redis.call('HGET', KEYS[1], 'o')
if not owed then return {2, '0', '0'} end
local spent = redis.pcall('HINCRBY', KEYS[1], 'u', ARGV[1])
if type(spent) == 'table' then
  return {2, owed, redis.call('HGET', KEYS[1], 'u') or '0'}
end
if not ge(owed, redis.call('HGET', KEYS[1], 'u')) then
  redis.call('HINCRBY', KEYS[1], 'u', '-' .. ARGV[1])
  return {2, owed, redis.call('HGET', KEYS[1], 'u')}
end
if ARGV[2] ~= '0' then redis.call('HINCRBY', KEYS[1], 'u', '-' .. ARGV[2]) end
if ARGV[3] == '1' then redis.call('SET', KEYS[3], '1', 'PX', ARGV[4]) end
return {0, owed, redis.call('HGET', KEYS[1], 'u')}
"""
)

_PAYWALL_REFUND = Script(
    _GE
    + """
local u = redis.call('HGET', KEYS[1], 'u')
if u and ARGV[1] ~= '0' then
  if ge(u, ARGV[1]) then
    redis.call('HINCRBY', KEYS[1], 'u', '-' .. ARGV[1])
  else
    redis.call('HSET', KEYS[1], 'u', '0')
  end
end
if ARGV[2] == '1' then redis.call('DEL', KEYS[2]) end
local c = redis.call('HMGET', KEYS[1], 'o', 'u')
return {0, c[1] or '0', c[2] or '0'}
"""
)

_CHARGE_OUTCOMES = {
    0: ChargeOutcome.charged,
    2: ChargeOutcome.insufficient,
    3: ChargeOutcome.repeated,
    4: ChargeOutcome.closing,
    5: ChargeOutcome.lost,
}

# Many channels in one call (all keys in one slot on a cluster). KEYS: state and node
# key of each channel; ARGV per channel: node count, then its node fields.
_VENDOR_LOAD_MANY = Script(
    """
local out, a = {}, 1
for j = 1, #KEYS, 2 do
  local n = tonumber(ARGV[a])
  local s = redis.call('HMGET', KEYS[j], 'i', 'o', 'p', 't', 'c')
  if n > 0 then
    local nodes = redis.call('HMGET', KEYS[j + 1], unpack(ARGV, a + 1, a + n))
    for m = 1, n do s[5 + m] = nodes[m] end
  end
  out[#out + 1] = s
  a = a + 1 + n
end
return out
"""
)

# Compare-and-set of many channels, each its own store_state against the index its
# writer read. ARGV per channel: node count, then store_state's arguments.
_VENDOR_CAS_MANY = Script(
    _GE
    + _STORE_STATE
    + """
local out, a = {}, 1
for j = 1, #KEYS, 2 do
  local last = a + 5 + 2 * tonumber(ARGV[a])
  out[#out + 1] = store_state(j, a + 1, last) or {0}
  a = last + 1
end
return out
"""
)

_VENDOR_BEGIN_CLOSE = Script(
    """
local s = redis.call('HMGET', KEYS[1], 'i', 'o', 'p', 't')
if s[1] then redis.call('HSET', KEYS[1], 'c', '1') end
return s
"""
)

# Keep the terms (blob, amount) unless terms with an amount at least as large are kept.
_VENDOR_TERMS = Script(
    _GE
    + """
local kept = redis.call('HGET', KEYS[1], 'ta')
if not kept or not ge(kept, ARGV[1]) then
  redis.call('HSET', KEYS[1], 'ta', ARGV[1], 'T', ARGV[2])
end
return 0
"""
)
VENDOR_AUDIT_FIELDS = ("i", "o", "p", "t", "c", "s", "T")
AUDIT_READS = 256  # channels read at once by an audit


def _state(i: bytes | None, o: bytes, p: bytes, t: bytes) -> PaymentState | None:
    if i is None:
        return None
    return PaymentState(index=int(i), owed=int(o), proof=p, created_at=t.decode())


# --- the issuer ---------------------------------------------------------------------------

ISSUER_TAG = "{nm-issuer}"
_ACCOUNTS = f"{ISSUER_TAG}:accounts"
_SUPPLY = f"{ISSUER_TAG}:supply"
_ROOTS = f"{ISSUER_TAG}:roots"
_OPENS = f"{ISSUER_TAG}:opens"
_EXPIRIES = f"{ISSUER_TAG}:expiries"


def _channel_key(channel_id: str) -> str:
    return f"{ISSUER_TAG}:ch:{channel_id}"


# What every lifecycle script shares (SPEC §4.6). Times are µs (doubles, exact below
# 2**53); amounts stay decimal strings that only Redis does arithmetic on.
_LIFECYCLE = (
    _GE
    + """
local T = '{nm-issuer}:'
local ACC, EXP, DL = T .. 'accounts', T .. 'expiries', T .. 'deadlines'

local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function int(x) return string.format('%.0f', x) end

-- Exact int64 arithmetic on canonical decimals, done by Redis ('-0' is not a number there).
local function add(field, dec)
  if dec ~= '0' then redis.call('HINCRBY', ACC, field, dec) end
end
local function sub(field, dec)
  if dec ~= '0' then redis.call('HINCRBY', ACC, field, '-' .. dec) end
end

-- Append the channel's next receipt (its amount and credit as they are now): its seq.
local function record(cid, kind, owed, now)
  local ck = T .. 'ch:' .. cid
  local seq = redis.call('HINCRBY', ck, 'n', 1)
  local f = redis.call('HMGET', ck, 'a', 'vc')
  local entry = table.concat({kind, f[1], owed, f[2] or '0', int(now)}, ' ')
  redis.call('RPUSH', T .. 'rc:' .. cid, entry)
  return seq
end

-- Credit the vendor up to `credited`, refund the client the rest of the amount, close.
-- Subtracting before adding keeps every intermediate balance within int64.
local function close(cid, credited, now)
  local ck = T .. 'ch:' .. cid
  local c = redis.call('HMGET', ck, 'a', 'ck', 'vk', 'vc')
  local amount, client, vendor, vc = c[1], c[2], c[3], c[4] or '0'
  sub(vendor, vc)
  add(vendor, credited)
  sub(client, credited)
  add(client, amount)
  local cb = redis.call('HGET', ACC, client)
  local vb = redis.call('HGET', ACC, vendor)
  redis.call('HSET', ck, 'st', 'closed', 'vc', credited, 'cb', cb, 'vb', vb, 'ca', int(now))
  redis.call('ZREM', EXP, cid)
  redis.call('ZREM', DL, cid)
  redis.call('SREM', T .. 'vcl:' .. vendor, cid)
end

local function start_closing(cid, vendor, deadline)
  redis.call('HSET', T .. 'ch:' .. cid, 'st', 'closing', 'dl', deadline)
  redis.call('ZREM', EXP, cid)
  redis.call('ZADD', DL, deadline, cid)
  redis.call('SADD', T .. 'vcl:' .. vendor, cid)
end

-- Apply what is due to a channel at `now` (writes only then); its state after, or nil.
local function due(cid, now)
  local c = redis.call('HMGET', T .. 'ch:' .. cid, 'st', 'e', 'w', 'dl', 'a', 'vk', 'vc', 'd')
  if not c[5] then return nil end
  local st = c[1] or (c[8] and 'closed' or 'open')
  if st == 'open' and c[2] and tonumber(c[2]) <= now then
    -- an expiry starts the dispute window at expires_at, however late it is noticed
    local deadline = int(tonumber(c[2]) + tonumber(c[3] or '0'))
    start_closing(cid, c[6], deadline)
    st, c[4] = 'closing', deadline
  end
  if st == 'closing' and tonumber(c[4]) <= now then
    close(cid, c[7] or '0', now)
    record(cid, 'finalization', '0', now)
    st = 'closed'
  end
  return st
end

-- Apply what is due to at most `limit` expiring and `limit` closing channels, oldest
-- first: how many, and whether there may be more.
local function sweep(now, limit)
  local done, more = 0, false
  for _, zset in ipairs({EXP, DL}) do
    local ids = redis.call('ZRANGEBYSCORE', zset, '-inf', int(now), 'LIMIT', 0, limit)
    for _, cid in ipairs(ids) do due(cid, now) end
    done = done + #ids
    more = more or #ids >= limit
  end
  return done, more
end

local function channel(cid)
  local c = redis.call('HMGET', T .. 'ch:' .. cid,
    't', 'a', 'e', 'st', 'dl', 'vc', 'x', 'cb', 'vb', 'ca', 'd')
  c[12] = redis.call('LRANGE', T .. 'rc:' .. cid, 0, -1)
  return c
end
"""
)

_ISSUER_REGISTER = Script(
    """
local b = redis.call('HGET', KEYS[1], ARGV[1])
if b then return b end
local r = redis.pcall('INCRBY', KEYS[2], ARGV[2])
if type(r) == 'table' and r.err then return {'invalid_amount'} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return ARGV[2]
"""
)

_ISSUER_DEPOSIT = Script(
    """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return false end
local r = redis.pcall('INCRBY', KEYS[2], ARGV[2])
if type(r) == 'table' and r.err then return {'invalid_amount'} end
redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
return redis.call('HGET', KEYS[1], ARGV[1])
"""
)

_ISSUER_ACCOUNT = Script(
    _LIFECYCLE
    + """
local done, more = sweep(clock(), tonumber(ARGV[2]))
if more then return {'more'} end
return {'', redis.call('HGET', ACC, ARGV[1])}
"""
)

_ISSUER_OPEN = Script(
    _LIFECYCLE
    + """
local earlier = redis.call('HGET', KEYS[4], ARGV[6])
if earlier then return {'replay', earlier} end
local bal = redis.call('HGET', KEYS[1], ARGV[1])
if not bal then return {'not_registered', 'client'} end
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 0 then return {'not_registered', 'vendor'} end
if not ge(bal, ARGV[3]) then return {'insufficient_balance'} end
if ARGV[4] ~= '' and redis.call('SISMEMBER', KEYS[2], ARGV[4]) == 1 then
  return {'commitment_reused'}
end
if redis.call('EXISTS', KEYS[3]) == 1 then return {'channel_exists'} end
local now = clock()
if ARGV[4] ~= '' then redis.call('SADD', KEYS[2], ARGV[4]) end
redis.call('HINCRBY', KEYS[1], ARGV[1], '-' .. ARGV[3])
redis.call('HSET', KEYS[3], 'a', ARGV[3], 'ck', ARGV[1], 'vk', ARGV[2], 't', ARGV[5],
  'st', 'open', 'w', ARGV[9], 'vc', '0')
local expires = ''
if ARGV[8] ~= '' then
  expires = int(now + tonumber(ARGV[8]))
  redis.call('HSET', KEYS[3], 'e', expires)
  redis.call('ZADD', EXP, expires, ARGV[7])
end
redis.call('HSET', KEYS[4], ARGV[6], ARGV[7])
record(ARGV[7], 'open', '0', now)
local entry = redis.call('LINDEX', T .. 'rc:' .. ARGV[7], 0)
return {'', redis.call('HGET', KEYS[1], ARGV[1]), expires, entry}
"""
)

_ISSUER_READ = Script(
    _LIFECYCLE
    + """
if not due(ARGV[1], clock()) then return false end
return channel(ARGV[1])
"""
)

# What a settlement or checkpoint answers: balances (at closing, or now), the receipt.
_SETTLED = """
local function answer(cid, replayed, seq)
  local c = redis.call('HMGET', T .. 'ch:' .. cid, 'st', 'ck', 'vk', 'cb', 'vb')
  local cb, vb = c[4], c[5]
  if c[1] ~= 'closed' then
    cb, vb = redis.call('HGET', ACC, c[2]), redis.call('HGET', ACC, c[3])
  end
  local entry = redis.call('LINDEX', T .. 'rc:' .. cid, seq - 1)
  return {'', replayed, seq, entry, cb, vb, channel(cid)}
end
"""

_ISSUER_SETTLE = Script(
    _LIFECYCLE
    + _SETTLED
    + """
local cid, owed = ARGV[1], ARGV[2]
local now = clock()
local st = due(cid, now)
if not st then return {'channel_not_found'} end
local ck = T .. 'ch:' .. cid
local c = redis.call('HMGET', ck, 'a', 'vc', 'd', 'rs', 'n')
local vc = c[2] or '0'
if ARGV[5] == '1' then
  if st == 'closed' then
    if c[3] and c[4] and c[3] == ARGV[3] then return answer(cid, 1, tonumber(c[4])) end
    return {'already_closed'}
  end
  if not ge(c[1], owed) then return {'exceeds_amount'} end
  local credited = owed
  if ge(vc, owed) then credited = vc end
  close(cid, credited, now)
  redis.call('HSET', ck, 'd', ARGV[3], 'x', ARGV[4])
  local seq = record(cid, 'settlement', owed, now)
  redis.call('HSET', ck, 'rs', seq)
  return answer(cid, 0, seq)
end
if st ~= 'open' then return {'channel_closed', st} end
if not ge(c[1], owed) then return {'exceeds_amount'} end
if ge(vc, owed) then return answer(cid, 1, tonumber(c[5])) end
local vendor = redis.call('HGET', ck, 'vk')
sub(vendor, vc)
add(vendor, owed)
redis.call('HSET', ck, 'vc', owed)
return answer(cid, 0, record(cid, 'checkpoint', owed, now))
"""
)

_ISSUER_CLIENT_CLOSE = Script(
    _LIFECYCLE
    + """
local cid = ARGV[1]
local now = clock()
local st = due(cid, now)
if not st then return false end
if st == 'open' then
  local c = redis.call('HMGET', T .. 'ch:' .. cid, 'w', 'vk')
  start_closing(cid, c[2], int(now + tonumber(c[1] or '0')))
end
return channel(cid)
"""
)

_ISSUER_TOP_UP = Script(
    _LIFECYCLE
    + """
local cid, amount, nonce, digest = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now = clock()
local st = due(cid, now)
if not st then return {'channel_not_found'} end
local nonces = T .. 'tu:' .. cid
local earlier = redis.call('HGET', nonces, nonce)
if earlier then
  local space = string.find(earlier, ' ', 1, true)
  if string.sub(earlier, space + 1) ~= digest then return {'duplicate_mismatch'} end
  local seq = tonumber(string.sub(earlier, 1, space - 1))
  return {'', 1, seq, redis.call('LINDEX', T .. 'rc:' .. cid, seq - 1), channel(cid)}
end
if st ~= 'open' then return {'channel_closed', st} end
local ck = T .. 'ch:' .. cid
local client = redis.call('HGET', ck, 'ck')
if not ge(redis.call('HGET', ACC, client), amount) then return {'insufficient_balance'} end
-- the only step that can fail (int64 overflow) comes before any write
local raised = redis.pcall('HINCRBY', ck, 'a', amount)
if type(raised) == 'table' and raised.err then return {'amount_overflow'} end
sub(client, amount)
local seq = record(cid, 'top_up', '0', now)
redis.call('HSET', nonces, nonce, seq .. ' ' .. digest)
return {'', 0, seq, redis.call('LINDEX', T .. 'rc:' .. cid, seq - 1), channel(cid)}
"""
)

_ISSUER_CLOSING = Script(
    _LIFECYCLE
    + """
local now = clock()
local done, more = sweep(now, tonumber(ARGV[2]))
if more then return {'more'} end
local found = {'', int(now)}
for _, cid in ipairs(redis.call('SMEMBERS', T .. 'vcl:' .. ARGV[1])) do
  local c = redis.call('HMGET', T .. 'ch:' .. cid, 't', 'a', 'e', 'dl')
  found[#found + 1] = c
end
return found
"""
)

_ISSUER_SWEEP = Script(
    _LIFECYCLE
    + """
local done = sweep(clock(), tonumber(ARGV[1]))
return done
"""
)

_ISSUER_OVERDUE = Script(
    _LIFECYCLE
    + """
return redis.call('ZCOUNT', DL, '-inf', int(clock()))
"""
)


# The whole ledger at one instant (issue 15's audit and stats): accounts, supply, used
# roots, then per channel its id, `channel()` fields and final settlement's seq.
_ISSUER_LEDGER = Script(
    _LIFECYCLE
    + """
local out = {redis.call('HGETALL', ACC), redis.call('GET', T .. 'supply') or '0',
  redis.call('SMEMBERS', T .. 'roots')}
local prefix = T .. 'ch:'
for _, key in ipairs(redis.call('KEYS', prefix .. '*')) do
  local cid = string.sub(key, #prefix + 1)
  out[#out + 1] = {cid, channel(cid), redis.call('HGET', key, 'rs')}
end
return out
"""
)


def _receipt(channel_id: str, seq: int, entry: bytes) -> Receipt:
    kind, amount, owed, credited, at = entry.decode().split(" ")
    return receipt(channel_id, seq, kind, int(amount), int(owed), int(credited), int(at))


def _terms(blob: bytes, amount: bytes, expires: bytes | None) -> ChannelTerms:
    return msgspec.structs.replace(
        terms_from_blob(blob),
        amount=int(amount),
        expires_at=None if not expires else int(expires),
    )


def _issuer_channel(channel_id: str, reply: list[Any]) -> IssuerChannel:
    """A channel from the `channel()` fields of a script's reply."""
    t, a, e, st, dl, vc, x, cb, vb, ca, d, entries = reply
    state = ChannelState(st.decode()) if st else (
        ChannelState.closed if d else ChannelState.open  # written before client protection
    )
    credited = int(vc) if vc is not None else 0
    closure = None
    if state is ChannelState.closed:
        closure = stored_closure(x, credited, int(cb), int(vb), int(ca or 0))
        if vc is None:  # settled before client protection: what it settled
            credited = closure.owed
    return IssuerChannel(
        terms=_terms(t, a, e),
        closure=closure,
        state=state,
        dispute_deadline=None if dl is None else int(dl),
        vendor_credited=credited,
        receipts=tuple(
            _receipt(channel_id, seq, entry) for seq, entry in enumerate(entries, start=1)
        ),
    )


def _view(reply: list[bytes | None]) -> VendorView:
    """A reply of HMGET i o p t c (and nodes after them) as a view."""
    i, o, p, t, c = reply[:5]
    return VendorView(state=_state(i, o, p, t), nodes=reply[5:], closing=c is not None)  # type: ignore[arg-type]


def _cas_result(reply: list[Reply]) -> CasResult:
    if reply[0] == 0:
        return CasResult(outcome=CasOutcome.stored)
    outcome = CasOutcome.lost if reply[0] == 1 else CasOutcome.closing
    return CasResult(outcome=outcome, current=_state(*reply[1:5]))


def _pack_load(request: tuple[str, Sequence[int]], keys: list[Arg], args: list[Arg]) -> None:
    channel_id, node_keys = request
    keys += vendor_keys(channel_id)
    args.append(len(node_keys))
    args += [pack_node_key(key) for key in node_keys]


def _pack_write(
    write: tuple[str, int, PaymentState, Mapping[int, bytes]], keys: list[Arg], args: list[Arg]
) -> None:
    channel_id, expected, new, nodes = write
    keys += vendor_keys(channel_id)
    args.append(len(nodes))
    args += _state_args(new, nodes, expected)


def _raise_refusal(reply: list[bytes]) -> None:
    raise refusal(reply[0].decode(), reply[1].decode() if len(reply) > 1 else "")


class RedisIssuerStore:
    def __init__(self, client: Client) -> None:
        self._redis = client

    async def _script(self, script: Script, channel_id: str, *args: Arg) -> Reply:
        """A lifecycle script on one channel (declared for routing; all in one slot)."""
        return await self._redis.evalsha(script, (_channel_key(channel_id),), (channel_id, *args))

    async def register(self, public_key_der_b64: str, initial_balance: int) -> Account:
        check_amount(initial_balance, allow_zero=True)
        reply: Reply = await self._redis.evalsha(
            _ISSUER_REGISTER, (_ACCOUNTS, _SUPPLY), (public_key_der_b64, initial_balance)
        )
        if isinstance(reply, list):
            _raise_refusal(reply)
        return Account(public_key_der_b64=public_key_der_b64, balance=int(reply))

    async def get_account(self, public_key_der_b64: str) -> Account | None:
        while True:  # a sweep first, in steps, so that finalizations reach the balance
            reply = await self._redis.evalsha(
                _ISSUER_ACCOUNT, (_ACCOUNTS,), (public_key_der_b64, FINALIZE_BATCH)
            )
            if reply[0] != b"more":
                break
        if reply[1] is None:
            return None
        return Account(public_key_der_b64=public_key_der_b64, balance=int(reply[1]))

    async def deposit(self, public_key_der_b64: str, amount: int) -> Account | None:
        check_amount(amount, allow_zero=True)
        reply = await self._redis.evalsha(
            _ISSUER_DEPOSIT, (_ACCOUNTS, _SUPPLY), (public_key_der_b64, amount)
        )
        if reply is None:
            return None
        if isinstance(reply, list):
            _raise_refusal(reply)
        return Account(public_key_der_b64=public_key_der_b64, balance=int(reply))

    async def open_channel(
        self, terms: ChannelTerms, *, dispute_window_us: int = DEFAULT_DISPUTE_WINDOW_US
    ) -> Opened:
        check_amount(terms.amount, allow_zero=False)
        check_open_key(terms)
        check_times(terms.ttl_us, dispute_window_us)
        client = terms.client_public_key_der_b64
        reply = await self._redis.evalsha(
            _ISSUER_OPEN,
            (_ACCOUNTS, _ROOTS, _channel_key(terms.channel_id), _OPENS),
            (
                client,
                terms.vendor_public_key_der_b64,
                terms.amount,
                terms.root or b"",
                terms_to_blob(terms),
                terms.open_key,
                terms.channel_id,
                "" if terms.ttl_us is None else terms.ttl_us,
                dispute_window_us,
            ),
        )
        if reply[0] == b"replay":
            # The earlier channel exists for as long as its open key: read it and the account.
            earlier = await self.get_channel(reply[1].decode())
            account = await self.get_account(client)
            assert earlier is not None and account is not None
            return Opened(
                terms=earlier.terms, account=account, receipt=earlier.receipts[0], replayed=True
            )
        if reply[0]:
            _raise_refusal(reply)
        _, balance, expires, entry = reply
        return Opened(
            terms=msgspec.structs.replace(
                terms, expires_at=int(expires) if expires else None
            ),
            account=Account(public_key_der_b64=client, balance=int(balance)),
            receipt=_receipt(terms.channel_id, 1, entry),
        )

    async def get_channel(self, channel_id: str) -> IssuerChannel | None:
        reply = await self._script(_ISSUER_READ, channel_id)
        return None if reply is None else _issuer_channel(channel_id, reply)

    async def settle(self, channel_id: str, closure: Closure, *, final: bool = True) -> Settled:
        check_amount(closure.owed, allow_zero=True)
        reply = await self._script(
            _ISSUER_SETTLE,
            channel_id,
            closure.owed,
            closure.proof_digest,
            closure_to_blob(closure),
            1 if final else 0,
        )
        if reply[0]:
            _raise_refusal(reply)
        _, replayed, seq, entry, cb, vb, fields = reply
        channel = _issuer_channel(channel_id, fields)
        return Settled(
            client_balance=int(cb),
            vendor_balance=int(vb),
            receipt=_receipt(channel_id, seq, entry),
            closure=channel.closure,
            replayed=bool(replayed),
        )

    async def client_close(self, channel_id: str) -> IssuerChannel:
        reply = await self._script(_ISSUER_CLIENT_CLOSE, channel_id)
        if reply is None:
            raise refusal("channel_not_found")
        return _issuer_channel(channel_id, reply)

    async def top_up(
        self, channel_id: str, amount: int, nonce: bytes, digest: bytes
    ) -> ToppedUp:
        check_amount(amount, allow_zero=False)
        reply = await self._script(_ISSUER_TOP_UP, channel_id, amount, nonce, digest.hex())
        if reply[0]:
            _raise_refusal(reply)
        _, replayed, seq, entry, fields = reply
        return ToppedUp(
            channel=_issuer_channel(channel_id, fields),
            receipt=_receipt(channel_id, seq, entry),
            replayed=bool(replayed),
        )

    async def closing_channels(self, vendor_public_key_der_b64: str) -> Closing:
        while True:
            reply = await self._redis.evalsha(
                _ISSUER_CLOSING, (_ACCOUNTS,), (vendor_public_key_der_b64, FINALIZE_BATCH)
            )
            if reply[0] != b"more":
                break
        channels = [
            ClosingChannel(terms=_terms(t, a, e), dispute_deadline=int(dl))
            for t, a, e, dl in reply[2:]
        ]
        channels.sort(key=lambda channel: channel.dispute_deadline)
        return Closing(now=int(reply[1]), channels=channels)

    async def finalize_due(self, limit: int) -> int:
        done: int = await self._redis.evalsha(_ISSUER_SWEEP, (_ACCOUNTS,), (limit,))
        return done

    async def overdue(self) -> int:
        count: int = await self._redis.evalsha(_ISSUER_OVERDUE, (_ACCOUNTS,), ())
        return count

    async def ledger(self) -> Ledger:
        reply = await self._redis.evalsha(_ISSUER_LEDGER, (_ACCOUNTS,), ())
        accounts, supply, roots, *channels = reply
        return Ledger(
            accounts={
                key.decode(): int(value)
                for key, value in zip(accounts[::2], accounts[1::2], strict=True)
            },
            supply=int(supply),
            channels=[
                ledger_channel(
                    _issuer_channel(cid.decode(), fields), None if seq is None else int(seq)
                )
                for cid, fields, seq in channels
            ],
            roots=list(roots),
        )

    async def ping(self, timeout: float | None = None) -> None:
        await self._redis.ping(timeout)

    async def close(self) -> None:
        await self._redis.close()


def vendor_keys(channel_id: str) -> tuple[str, str]:
    return f"v:{{{channel_id}}}", f"n:{{{channel_id}}}"


def _request_key(channel_id: str, request_id: str | None) -> str:
    """A paid request id (its own key, so Redis expires it; same slot as the channel)."""
    return f"r:{{{channel_id}}}:{request_id or ''}"


def _state_args(
    new: PaymentState, nodes: Mapping[int, bytes], expected: int | None
) -> list[bytes | str | int]:
    """store_state's arguments (the scripts compare canonical decimals)."""
    index, owed = new.index, new.owed
    if not (0 <= index <= MAX_INT and 0 <= owed <= MAX_INT) or (
        expected is not None and not 0 <= expected <= MAX_INT
    ):  # check_amount's refusal (inline: every payment passes here)
        for amount in (index, owed, expected or 0):
            check_amount(amount, allow_zero=True)
    condition: str | int = "" if expected is None else expected
    args: list[bytes | str | int] = [condition, new.index, new.owed, new.proof, new.created_at]
    for key, value in nodes.items():
        args.append(pack_node_key(key))
        args.append(value)
    return args


def _charge(reply: list[bytes | int]) -> Charge:
    if reply[0] == 0:  # the common answer first
        return Charge(outcome=ChargeOutcome.charged, owed=int(reply[1]), consumed=int(reply[2]))
    outcome = _CHARGE_OUTCOMES[reply[0]]  # type: ignore[index]  # an int already
    if outcome is ChargeOutcome.lost or outcome is ChargeOutcome.closing:
        current = _state(*reply[1:5])  # type: ignore[arg-type]
        return Charge(outcome=outcome, current=current, owed=current.owed if current else 0)
    return Charge(outcome=outcome, owed=int(reply[1]), consumed=int(reply[2]))


class RedisVendorStore:
    def __init__(self, client: Client) -> None:
        self._redis = client

    async def load(self, channel_id: str, node_keys: Sequence[int] = ()) -> VendorView:
        state_key, nodes_key = vendor_keys(channel_id)
        if node_keys:
            fields = [pack_node_key(k) for k in node_keys]
            reply = await self._redis.evalsha(_VENDOR_LOAD, (state_key, nodes_key), fields)
        else:  # most modes need no nodes: a plain HMGET costs the server less than a script
            reply = await self._redis.execute("HMGET", state_key, "i", "o", "p", "t", "c")
        return _view(reply)

    async def _per_slot(
        self,
        script: Script,
        items: Sequence[T],
        pack_one: Callable[[T, list[Arg], list[Arg]], None],
        parse: Callable[[Reply], R],
    ) -> list[R | StoreUnavailable]:
        """One call of a many-channel `script` per slot (a standalone server: one for
        all), concurrently, so they leave in one write. `items[n]` names its channel
        first; `pack_one` adds its keys and arguments. A failed call's StoreUnavailable
        stands for each of its channels."""
        redis = self._redis
        if not isinstance(redis, ClusterClient):
            return await self._call_many(script, items, pack_one, parse)
        groups: dict[int, list[int]] = {}
        for position, item in enumerate(items):
            slot = redis.slot_of(vendor_keys(item[0])[0].encode())  # type: ignore[index]
            groups.setdefault(slot, []).append(position)
        answers = await asyncio.gather(
            *(
                self._call_many(script, [items[n] for n in positions], pack_one, parse)
                for positions in groups.values()
            )
        )
        results: list[R | StoreUnavailable | None] = [None] * len(items)
        for positions, replies in zip(groups.values(), answers, strict=True):
            for position, reply in zip(positions, replies, strict=True):
                results[position] = reply
        return [result for result in results if result is not None]

    async def _call_many(
        self,
        script: Script,
        items: Sequence[T],
        pack_one: Callable[[T, list[Arg], list[Arg]], None],
        parse: Callable[[Reply], R],
    ) -> list[R | StoreUnavailable]:
        keys: list[Arg] = []
        args: list[Arg] = []
        for item in items:
            pack_one(item, keys, args)
        try:
            replies = await self._redis.evalsha(script, keys, args)
        except StoreUnavailable as exc:
            return [exc] * len(items)
        return [parse(reply) for reply in replies]

    async def load_many(
        self, requests: Sequence[tuple[str, Sequence[int]]]
    ) -> list[VendorView | StoreUnavailable]:
        return await self._per_slot(_VENDOR_LOAD_MANY, requests, _pack_load, _view)

    async def compare_and_set_many(
        self, writes: Sequence[tuple[str, int, PaymentState, Mapping[int, bytes]]]
    ) -> list[CasResult | StoreUnavailable]:
        for _, expected, new, _ in writes:
            check_amount(expected, allow_zero=True)  # compared as canonical decimals
            check_amount(new.index, allow_zero=True)
            check_amount(new.owed, allow_zero=True)
        return await self._per_slot(_VENDOR_CAS_MANY, writes, _pack_write, _cas_result)

    async def compare_and_set(
        self,
        channel_id: str,
        new: PaymentState,
        nodes: Mapping[int, bytes],
        expected: int | None = None,
    ) -> CasResult:
        args = _state_args(new, nodes, expected)
        return _cas_result(await self._redis.evalsha(_VENDOR_CAS, vendor_keys(channel_id), args))

    async def begin_close(self, channel_id: str) -> PaymentState | None:
        reply = await self._redis.evalsha(_VENDOR_BEGIN_CLOSE, vendor_keys(channel_id)[:1], ())
        return _state(*reply)

    async def nodes(self, channel_id: str, node_keys: Sequence[int]) -> list[bytes | None]:
        if not node_keys:
            return []
        reply: list[bytes | None] = await self._redis.execute(
            "HMGET", vendor_keys(channel_id)[1], *(pack_node_key(k) for k in node_keys)
        )
        return reply

    async def record_settlement(self, channel_id: str, closure: Closure) -> None:
        blob = settlement_to_blob(closure)
        await self._redis.execute("HSET", vendor_keys(channel_id)[0], "s", blob, "c", "1")

    async def remember_terms(self, channel_id: str, terms: ChannelTerms) -> None:
        await self._redis.evalsha(
            _VENDOR_TERMS, vendor_keys(channel_id)[:1], (terms.amount, terms_to_blob(terms))
        )

    async def audit_records(self) -> list[VendorChannel]:
        """Each channel's hash read by one HMGET (one instant per channel); channels are
        found by SCAN on every master, so the set is as of the scan."""
        redis = self._redis
        nodes = redis.masters() if isinstance(redis, ClusterClient) else [redis]
        ids: set[str] = set()
        for node in nodes:
            cursor = b"0"
            while True:
                cursor, keys = await node.execute("SCAN", cursor, "MATCH", "v:{*}", "COUNT", 1000)
                ids.update(key.decode()[3:-1] for key in keys)
                if cursor == b"0":
                    break
        ordered = sorted(ids)
        records: list[VendorChannel] = []
        for start in range(0, len(ordered), AUDIT_READS):
            chunk = ordered[start : start + AUDIT_READS]
            replies = await asyncio.gather(
                *(
                    redis.execute("HMGET", vendor_keys(cid)[0], *VENDOR_AUDIT_FIELDS)
                    for cid in chunk
                )
            )
            for cid, (i, o, p, t, c, settled, blob) in zip(chunk, replies, strict=True):
                records.append(
                    VendorChannel(
                        channel_id=cid,
                        state=_state(i, o, p, t),
                        closing=c is not None,
                        settlement=None if settled is None else settlement_from_blob(settled),
                        terms=None if blob is None else terms_from_blob(blob),
                    )
                )
        return records

    async def settlement(self, channel_id: str) -> Closure | None:
        blob = await self._redis.execute("HGET", vendor_keys(channel_id)[0], "s")
        return None if blob is None else settlement_from_blob(blob)

    async def charge(
        self,
        channel_id: str,
        price: int,
        *,
        new: PaymentState | None = None,
        nodes: Mapping[int, bytes] | None = None,
        expected: int | None = None,
        request_id: str | None = None,
        minimum: int = 0,
        remember: float = REQUEST_MEMORY,
    ) -> Charge:
        check_amount(price, allow_zero=True)
        check_amount(minimum, allow_zero=True)
        need = price if price >= minimum else minimum
        keys = (*vendor_keys(channel_id), _request_key(channel_id, request_id))
        args: list[Arg] = [need, need - price, 0 if request_id is None else 1]
        args.append(max(round(remember * 1000), 1))
        if new is None:
            args.append(0)
        else:
            args += (1, *_state_args(new, nodes or {}, expected))
        return _charge(await self._redis.evalsha(_PAYWALL_CHARGE, keys, args))

    async def refund(self, channel_id: str, amount: int, request_id: str | None = None) -> Charge:
        check_amount(amount, allow_zero=True)
        keys = (vendor_keys(channel_id)[0], _request_key(channel_id, request_id))
        args = (amount, "0" if request_id is None else "1")
        return _charge(await self._redis.evalsha(_PAYWALL_REFUND, keys, args))

    async def credit(self, channel_id: str) -> Charge:
        owed, consumed = await self._redis.execute("HMGET", vendor_keys(channel_id)[0], "o", "u")
        return Charge(
            outcome=ChargeOutcome.charged, owed=int(owed or 0), consumed=int(consumed or 0)
        )

    async def ping(self, timeout: float | None = None) -> None:
        await self._redis.ping(timeout)

    async def close(self) -> None:
        await self._redis.close()
