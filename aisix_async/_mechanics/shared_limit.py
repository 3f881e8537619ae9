"""One account, many processes: the pace shared through Redis (``shared_limit=``).

The gateway limits an account, not a process. Clients that each learn the limit alone
(replicas of a web service, workers of a campaign) all probe it, all meet it, and their
-1 answers add up. With ``shared_limit="redis://..."`` every client of one account and
gateway URL takes its turns from one schedule kept in Redis:

* **One step per turn.** A Lua script books the next turn of the shared pace and says how
  long to wait for it: no read-modify-write race between clients, whatever their number.
  The script reads the time from Redis itself, so the clients' clocks need not agree.
* **One pace, learned together.** The script raises the pace for each turn that had to
  wait (demand above the pace: the probe for a raised limit is shared), and a -1 cuts it
  for everybody, once per episode: a -1 counts only if its turn was booked after the
  last cut, as a single client counts them. The cut starts from the rate of turns booked
  since the last cut, i.e. what the whole fleet sent. Measured from few answers (under
  16), that rate may fall short of the limit by one answer over its span: the climb
  after the cut aims at that bound, so a short measure is not held as the limit; from
  more, at half an answer above it, the shortfall to expect. A cut
  also moves the turns already booked ahead to the new pace (a client asks again before
  it uses a turn booked behind others'): sent as booked, at the pace just found too
  fast, into a bucket the -1 found empty, most of them would be refused.
* **Fair.** A client holds at most one booked turn at a time, so clients that all want
  more than their share are served in turn (each gets pace / N), and one that wants less
  gets all it asks. A client that dies holds at most that one turn, which simply passes.
* **A new client joins at the learned pace at once**: the pace is in Redis, not in it.

Redis is never a single point of failure: every call is bounded by ``timeout``; a client
whose call fails or is slow paces itself (the scheduler's own adaptive control, started
from its last share of the shared pace), logs that once, and tries Redis again after a
while (every ``retry_after`` while it fails fast, as during a restart; less often while
it fails slowly). A schedule lost with a restart is seeded again by the first client that
returns, from the pace it last saw (later seeds do not reset it); until the others are
back (or for ``REJOIN_WINDOW`` at most) the schedule gives those back only their shares,
since the others still pace themselves at theirs. Nothing is ever sent or withheld
because of Redis: the turn only says *when*.

Safe data: the keys name a hash of the account and gateway URL (never the authkey, which
this module never sees); they expire after ``key_ttl`` seconds unused; the Redis URL's
password is never logged nor shown in a repr or an error.

redis-py's asyncio client runs on asyncio only (under trio it fails with "no running event
loop"), so a client with ``shared_limit`` refuses to run under trio with
:class:`SharedLimitError`.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import attrs
import sniffio

from .._core.errors import (
    ExtraNotInstalledError,
    SharedLimitError,
    ValidationError,
    ssl_error_in,
)
from .scheduler import QUEUE_PACE_MARGIN, TurnBeyondDeadline

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "FleetRun",
    "HiddenUrl",
    "SharedLimit",
    "SharedTurn",
    "hide_url",
    "redact_url",
    "schedule_key",
]

logger = logging.getLogger("aisix_async")

#: The schemes redis-py's ``from_url`` takes: plain TCP, TLS, and a Unix socket.
_SCHEMES = ("redis", "rediss", "unix")


def redact_url(url: str) -> str:
    """``url`` without its user name and password, for logs, reprs and errors."""
    if "#" in url:
        # A Redis URL has no fragment: the '#' is a password's, which the parse then cut
        # in two, and the part after it read as the host.
        return "<a URL with '#' in it, not shown>"
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return "<unparsable URL>"
    netloc = f"***@{host}{port}" if parts.username or parts.password else f"{host}{port}"
    if parts.scheme == "unix" and not netloc and "@" not in url:
        # urlunsplit writes an empty host as "unix:/path", which is not what was given.
        return f"unix://{parts.path}"
    if "://" not in url:
        # Not a URL at all (a password pasted on its own), or one whose credentials are
        # not where a parse finds them ("redis:/:pw@host", "redis//:pw@host": read as a
        # path, they were quoted whole, password and all, in an operator's trial).
        return "<not a URL of the form scheme://host, not shown>"
    if "@" in parts.path:
        # Credentials after an empty host ("redis:///:pw@host/0"): the path holds them.
        return "<a URL with '@' in its path, not shown>"
    # A password may also be passed as a query parameter (?password=...): drop the query.
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class HiddenUrl(str):
    """A Redis URL as the client holds it: a ``str`` whose repr hides its password.

    Error trackers (Sentry by default) and ``traceback``'s ``capture_locals`` print the
    repr of every local of every frame: a refused ``shared_limit`` showed its password
    there, as the constructors' argument. (The authkey is held the same way: Secret.)
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(redact_url(str(self)))


def hide_url(value: str | None) -> str | None:
    """``value`` as a :class:`HiddenUrl` if it is a string (what a constructor was given)."""
    return (
        HiddenUrl(value) if isinstance(value, str) and not isinstance(value, HiddenUrl) else value
    )


def _url_problem(url: str) -> str | None:
    """What is wrong with a redis:// or rediss:// URL that redis-py would misread or
    refuse with a bare ValueError; None: nothing we can see. Never quotes the URL."""
    parts = urlsplit(url)
    if "#" in url:
        # A Redis URL has no fragment: a '#' in it is a password's, and everything after
        # it was dropped (redis://:p@ss#w@host/0 connected to a host named "ss").
        return "it has a '#' in it (a password with '#' in it must be percent-encoded: %23)"
    if parts.scheme == "unix":
        return None
    if not url.startswith(f"{parts.scheme}://"):
        # "redis:/host:6379/0": read as a path, the complaint was about the database.
        return f"it needs two slashes after the scheme, as in {parts.scheme}://host:6379/0"
    try:
        parts.port  # noqa: B018 (parsing it is the check)
    except ValueError:
        # Often a password with '#', '?' or '/' in it: the URL ends there, and the rest
        # of the password is read as the port.
        return (
            "its port is not a number from 0 to 65535 (a password with '#', '?', '/' or "
            "'@' in it must be percent-encoded: '#' as %23)"
        )
    database = parts.path.strip("/")
    if database and not database.isdigit():
        # redis-py quietly uses database 0 for a path it cannot read.
        return "its path must be a database number, as in redis://host:6379/0"
    return None


def _text(value: object) -> str:
    # Redis answers bytes or str, depending on how its client decodes.
    return value.decode() if isinstance(value, bytes) else str(value)


def schedule_key(account: str, gateway_url: str) -> str:
    """The Redis key prefix of one account's schedule at one gateway.

    A hash, so that neither the account nor the gateway can be read from Redis; the braces
    are a Redis Cluster hash tag: both keys of a schedule live on one node, as a script
    that touches two keys needs.
    """
    digest = hashlib.sha256(f"{account}\0{gateway_url}".encode()).hexdigest()[:32]
    return f"aisix:limit:{{{digest}}}"


# Both scripts take the time as ARGV[1] when the caller gives one (tests on virtual time),
# else from Redis: one clock for every client. Floats leave a script as strings (Redis
# truncates Lua numbers to integers).
_CLOCK = """
-- Slots (turn times) are kept WINDOW seconds, and MAX_SLOTS of them at most: a -1 measures
-- the whole episode since the last cut. An episode cut short at its start did not begin
-- with an empty bucket (the dip after a cut lets it fill), and read high by up to a burst
-- over its span: kept 10 s, 2 processes at R = 5 (episodes of 12 s) measured 5.15
-- requests/s, and the climb back to that met the limit every 63 turns.
local WINDOW, HISTORY, MAX_SLOTS = 300, 1, 4096
-- A seeded schedule allows a bucket's burst of up to BURST seconds of its ceiling before
-- the answers prove the ceiling low; with none proven, a trusted ceiling is probed at
-- most HELD above it.
local BURST, HELD = 2, 0.5
-- Seconds without a turn after which the probe's excess is dropped (see below).
local IDLE = 1
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""

# Taking a turn. KEYS: schedule hash, clients sorted set, slots sorted set. ARGV: now or
# '', client id, seed pace or '', key ttl (ms), active window (s), start pace, min rate,
# round trip or '', clients the seed was shared by or '', rejoin window (s), seconds this
# client still sends paced by itself (requests it was told to pace before it rejoined).
_TURN = (
    _CLOCK
    + """
local key, clients, slots = KEYS[1], KEYS[2], KEYS[3]
local s = redis.call('HMGET', key, 'pace', 'ceiling', 'sure', 'next_at', 'epoch', 'cut_at',
                     'expect', 'expect_until', 'measure_from', 'turns', 'cut_turns',
                     'refused_since_cut')
local pace, ceiling, sure = tonumber(s[1]), tonumber(s[2]) or 0, s[3] == '1'
local next_at, epoch = tonumber(s[4]) or 0, tonumber(s[5]) or 0
local cut_at = tonumber(s[6])
local expect, expect_until = tonumber(s[7]) or 0, tonumber(s[8]) or 0
local measure_from = tonumber(s[9]) or 0
-- Turns booked ever, at the last cut (none before a first cut), and refused since it.
local turns, cut_turns, refused_since_cut = tonumber(s[10]) or 0, tonumber(s[11]),
                                            tonumber(s[12]) or 0
if not cut_at then
  -- A new schedule, or one lost with a restart: a client that knew the pace seeds it;
  -- else a cautious start that doubles quickly while demand is above it.
  -- Its epochs start from its creation time in ms: a -1 for a turn booked before a
  -- restart cannot pass for one of this schedule's episodes.
  cut_at, epoch = now, math.floor(now * 1000)
  local seed = tonumber(ARGV[3])
  if seed then
    pace, ceiling, sure = seed, seed, true
    -- After a restart the others still pace themselves, each at its share, until they
    -- too find Redis again: the schedule keeps their shares free meanwhile (see below),
    -- or the first back would take the whole pace on top of them, the -1 answers would
    -- cut the pace from the few turns this schedule saw, and the whole fleet would come
    -- back to that.
    expect = tonumber(ARGV[9]) or 0
    expect_until = now + tonumber(ARGV[10])
  else
    pace, ceiling, sure = tonumber(ARGV[6]), 0, false
  end
end
redis.call('ZADD', clients, now, ARGV[2])
redis.call('ZREMRANGEBYSCORE', clients, '-inf', now - tonumber(ARGV[5]))
local active = redis.call('ZCARD', clients)
-- Rejoining: while fewer clients than shared the seed are back (and not for longer than
-- the rejoin window, in case some are gone for good), those back share only their part
-- of the pace, and the turns count the whole fleet's clients.
local fleet, part = active, 1
if expect > 0 then
  if active < expect and now < expect_until then
    fleet, part = expect, active / expect
  else
    -- All back (or the window passed): one schedule for the fleet again.
    expect = 0
    measure_from = math.max(measure_from, now)
  end
end
-- Until the requests some clients paced by themselves have all gone out, the turns in the
-- slots are not all the fleet sends: a -1 measures nothing then (see _REFUSED).
local own = tonumber(ARGV[11]) or 0
if own > 0 or expect > 0 then
  measure_from = math.max(measure_from, now + own)
end
if sure and ceiling > 0 and pace > ceiling and next_at > 0 and now - next_at > IDLE then
  -- The fleet was quiet: the bucket filled meanwhile, and the excess above the ceiling
  -- the probe had reached was tried on a bucket that may not be there any more. Back to
  -- the ceiling (runs one after another each met the limit at once, from 1.45 times it).
  pace = ceiling
end
local at = math.max(now, next_at)
local wait = at - now
local max_wait = tonumber(ARGV[12])
if max_wait and wait > max_wait then
  -- The caller's deadline comes first: no turn is booked. One booked and left unused
  -- would hold every client back by a turn, and count as a request answered (the
  -- probe read a fleet of expiring handlers as proof of a raised limit).
  return {'late', tostring(wait)}
end
if wait > 0 and part == 1 and now >= measure_from then
  -- Demand above the pace: grow it, every step a share of the pace and counted in turns,
  -- so that it behaves alike at 2 and at 500 requests/s. Below the ceiling (the rate of
  -- the last -1) it closes the gap within a few dozen turns; from it, it creeps up, and
  -- the excess doubles every 90 turns (a steady limit is met about once per 130 turns);
  -- far above it, with no ceiling known, or once the answers prove the ceiling too low
  -- (a raised limit), it doubles every 6 turns.
  -- No probe doubles faster than the answers that would say "too fast" come back: the
  -- turns of two round trips (ARGV[8], the clients' round trip of a -1, when known).
  local per_trip = pace * (tonumber(ARGV[8]) or 0)
  local doubling = math.max(6, 2 * per_trip)
  if ceiling <= 0 then
    -- With no limit met yet, grown only while the fleet uses the pace it has: turns
    -- booked over the last few seconds (a second at least; those ahead too) at a quarter
    -- of it or more. Clients that cannot ask faster (one turn per Redis round trip each:
    -- 25/s through a 40 ms link) still meet turns a step apart now and then, and two of
    -- them doubled the pace to 228/s against a limit of 40 they never reached; and a cold
    -- fleet, whose clients' own slow starts lagged the shared pace, met the limit with it
    -- far above: on the simulated gateway (R = 40, 100 ms) 20-135 -1 answers from 2 to 16
    -- clients, 14-24 now (at half of it: 8-22, but the limit met a second later).
    local span = math.max(1, 8 / pace)
    if redis.call('ZCOUNT', slots, now - span, '+inf') >= 0.25 * pace * span then
      pace = pace * 2 ^ (1 / doubling)
    end
  elseif pace < ceiling then
    pace = math.min(ceiling, pace + math.max((ceiling - pace) / 8, 0.002 * ceiling))
  else
    local excess = pace / ceiling - 1
    local trip = tonumber(ARGV[8])
    local back = now - 2 * (trip or 0)
    if sure and cut_turns and trip and back > cut_at then
      -- The last cut's -1 found the bucket empty: since then it can have accepted its
      -- rate times the time, one token more, and one answer that crossed that -1 on the
      -- way back. The turns answered since (booked, less those refused, less those
      -- booked within the last two round trips, whose answers may not be back: a busy
      -- client sends late) beyond that prove the limit above the ceiling: probe as with
      -- none known, not creeping.
      local answered = turns - cut_turns - refused_since_cut
                       - redis.call('ZCOUNT', slots, '(' .. back, '+inf')
      if answered - 2 > ceiling * (back - cut_at) then
        sure = false
      end
    elseif sure and not cut_turns and back > cut_at then
      -- A seeded schedule found no empty bucket: a full one may have let its burst
      -- through. Beyond BURST seconds of the ceiling, what was answered still proves it.
      local from = math.max(cut_at, now - WINDOW)
      if redis.call('ZCARD', slots) >= MAX_SLOTS then
        local oldest = redis.call('ZRANGE', slots, 0, 0, 'WITHSCORES')
        from = math.max(from, tonumber(oldest[2]))
      end
      local answered = redis.call('ZCOUNT', slots, from, '(' .. back)
      if back > from and answered - 1 - BURST * ceiling > ceiling * (back - from) then
        sure = false
      end
    end
    if sure then
      -- Near the ceiling the probe creeps; beyond 15% it is not sped up on excess alone,
      -- only held under HELD: a bucket full after a quiet while (runs one after another,
      -- a fleet that sent less) lets an excess through with no -1, and a fast probe
      -- went to seven times the limit before one came. The proof above speeds it up.
      excess = excess + 0.0001 + excess * math.log(2) / math.max(90, 2 * doubling)
      excess = math.min(excess, HELD)
    else
      excess = excess + 0.02 + excess * math.log(2) / doubling
    end
    pace = ceiling * (1 + excess)
  end
end
next_at = at + 1 / (pace * part)
redis.call('HSET', key, 'pace', tostring(pace), 'ceiling', tostring(ceiling),
           'sure', sure and '1' or '0', 'next_at', tostring(next_at), 'epoch', epoch,
           'cut_at', tostring(cut_at), 'expect', expect, 'expect_until', tostring(expect_until),
           'measure_from', tostring(measure_from))
-- All turns ever booked on this schedule (for operators and tests) name the slots, whose
-- times (of the last WINDOW seconds, MAX_SLOTS at most) measure the rate at a -1.
local n = redis.call('HINCRBY', key, 'turns', 1)
redis.call('ZADD', slots, at, n)
redis.call('ZREMRANGEBYSCORE', slots, '-inf', now - WINDOW)
redis.call('ZREMRANGEBYRANK', slots, 0, -MAX_SLOTS - 1)
redis.call('PEXPIRE', key, ARGV[4])
redis.call('PEXPIRE', clients, ARGV[4])
redis.call('PEXPIRE', slots, ARGV[4])
-- The rate measured at the limit, and when: only from a cut (a seed was not measured here).
local measured = sure and cut_turns and ceiling > 0
return {tostring(wait), tostring(pace), epoch, fleet, n, tostring(at),
        measured and tostring(ceiling) or '', tostring(cut_at)}
"""
)

# A -1 answer. KEYS: schedule hash, slots sorted set. ARGV: now or '', epoch of the
# refused turn, min rate, seconds from the refused turn to its answer, its number.
_REFUSED = (
    _CLOCK
    + """
local key, slots = KEYS[1], KEYS[2]
-- A refused turn is no evidence of what the gateway accepts: its slot goes, and if it
-- was booked after the last cut it is not counted as answered since (see _TURN).
redis.call('ZREM', slots, ARGV[5])
local s = redis.call('HMGET', key, 'pace', 'ceiling', 'epoch', 'cut_at', 'next_at', 'expect',
                     'measure_from', 'expect_until', 'rejoin_cut_until', 'turns', 'cut_turns',
                     'sure', 'first_cut_at', 'run_last', 'run_length', 'run_from')
if tonumber(ARGV[5]) > (tonumber(s[11]) or math.huge) then
  redis.call('HINCRBY', key, 'refused_since_cut', 1)
end
-- The fleet's run of -1 answers: turns refused one after another, none between them
-- answered otherwise (or left unused). Each client's circuit breaker reads it: at the
-- floor the fleet's pace is shared, and a run of a client's own -1 answers grew N times
-- slower than without Redis (an account bound to another address, 6 processes: no
-- breaker open after 40 s, every call a DeadlineExceededError).
local number = tonumber(ARGV[5])
local run_last, run_length, run_from = tonumber(s[14]), tonumber(s[15]) or 0, tonumber(s[16])
if s[1] and (not run_last or number > run_last) then
  if run_last and number == run_last + 1 and run_from then
    run_length = run_length + 1
  else
    run_length, run_from = 1, now
  end
  redis.call('HSET', key, 'run_last', number, 'run_length', run_length,
             'run_from', tostring(run_from))
end
-- (An older turn's -1 come late leaves the run as it is.)
local run = {run_length, tostring(now - (run_from or now))}
local pace, ceiling, epoch, cut_at = tonumber(s[1]), tonumber(s[2]) or 0, tonumber(s[3]),
                                     tonumber(s[4])
local next_at = tonumber(s[5]) or 0
local measure_from = tonumber(s[7]) or 0
local expecting = (tonumber(s[6]) or 0) > 0
-- The refused request went out one round trip ago: if that was before the clients'
-- own requests were all gone, it belongs to the rejoin.
local sent = now - math.max(tonumber(ARGV[4]) or 0, 0)
local rejoining = expecting or sent < measure_from
local rejoin_until = math.max(measure_from, expecting and (tonumber(s[8]) or 0) or 0)
if not pace or not cut_at or epoch ~= tonumber(ARGV[2]) then
  -- Booked before the last cut (or the schedule was lost): this episode is counted.
  return {0, tostring(pace or ''), 0, '0', '0', '', run[1], run[2]}
end
if rejoining and sent < (tonumber(s[9]) or 0) then
  -- One cut per rejoin: its -1 answers are the clients' overlap (each sending what it
  -- paced itself beside its turns), not news of the limit; cut after cut from the pace
  -- would leave the fleet at a fraction of what it had. Once all are back and their own
  -- requests gone, -1 answers are measured again.
  return {0, tostring(pace), 0, '0', '0', '', run[1], run[2]}
end
-- Between two -1 answers the bucket went from empty to empty: the turns it accepted in
-- between, over that time, are its rate (refused turns left the slots at their -1).
-- Only turns whose answers are back count: those that went out up to one round trip ago
-- (the refused one's); the rest are in flight. A short episode says little (a token more
-- or less is a large share of it): then the last HISTORY seconds are measured.
local to = sent
local oldest_kept = now - WINDOW
if redis.call('ZCARD', slots) >= MAX_SLOTS then
  -- The oldest slots were dropped for room (a high rate): count from the oldest kept.
  local oldest = redis.call('ZRANGE', slots, 0, 0, 'WITHSCORES')
  oldest_kept = math.max(oldest_kept, tonumber(oldest[2]))
end
local from = math.max(oldest_kept, math.min(cut_at, to - HISTORY), measure_from)
local answered = redis.call('ZCOUNT', slots, from, '(' .. to)
-- The episode right after the cold start's first cut is measured from that cut alone,
-- when it holds enough answers: the bucket was empty at both ends, and before it lies
-- the climb, whose answers the bucket's burst inflated. Reaching back into it, or
-- reading the last answers' spacing (the bucket refilled while the pace dipped), a
-- cold fleet of 16 at R = 40 cut to 48.5 and then 36.9 requests/s, untrusted, and met
-- the limit a third time: 20 -1 answers in its first 12 s on the simulated gateway, 6
-- of them after 5 s (now 14 and 2).
-- (The last cut was the first one: the schedule was cold, not seeded, and is not trusted
-- until its next cut.)
local after_first = tonumber(s[13]) == cut_at
if after_first then
  local since_cut = math.max(oldest_kept, cut_at, measure_from)
  local episode = redis.call('ZCOUNT', slots, since_cut, '(' .. to)
  if episode >= 4 then
    from, answered = since_cut, episode
  else
    after_first = false
  end
end
local span = math.max(to - from, 0.001)
local rate = answered / span
-- How the rate was found, for the log: 'measured' (answers over span), 'recent' (the last
-- answers' spacing), 'bound' (few answers: under what they allow), 'pace' (the pace itself).
local how = 'measured'
-- While the pace climbs (a cold start, a raised limit being found) the whole episode's
-- average lags behind it: the last few turns that were answered show where it got to.
if answered > 4 and not after_first then
  local recent = redis.call('ZREVRANGEBYSCORE', slots, '(' .. to, from, 'WITHSCORES',
                            'LIMIT', 0, 9)
  local k = #recent / 2
  local spread = tonumber(recent[2]) - tonumber(recent[2 * k])
  if k > 4 and spread > 0 and (k - 1) / spread > 1.25 * rate then
    rate, how = (k - 1) / spread, 'recent'
  end
end
-- Too few answers to measure anything (a fresh or seeded schedule, a low demand), or
-- clients still rejoining or sending what they paced by themselves (those requests are
-- not in the slots, so the turns there understate what the gateway took): cut from the
-- pace itself.
local first = ceiling <= 0
-- Measured only from a rejoin just past (the clients' own requests gone a moment ago):
-- a few answers over a fraction of a second say nothing ("0 answers in 0.333 s: under
-- 1.50" cut a fleet at R = 5 to 1.35 requests/s after Redis was paused for 10 s).
local just_back = measure_from > math.min(cut_at, to - HISTORY)
if rejoining or (answered < 4 and (first or s[12] == '1' or just_back)) then
  rate = pace
elseif answered < 4 then
  how = 'bound'
  -- Still finding the limit after the first cut (at a low one, a few answers between
  -- two -1): half an answer more than were accepted bounds the rate, as one client's
  -- scheduler counts it. Cutting a tenth from the pace at each -1 instead took seven
  -- -1 answers to come down from 3.7 to 2 requests/s.
  rate = (answered + 0.5) / span
end
if rate >= pace then
  rate, how = pace, 'pace'
end
-- A rate measured from n answers may fall short of the limit by one answer over its span
-- (the tokens the bucket held at either end are a fraction of one): measured from few
-- (under 32), the climb aims at that bound (1/n above it), so that an imprecise cut is
-- not held as the limit for minutes while the gentle probe above it creeps; measured from
-- more, half an answer above the rate, its expected shortfall. Aimed at the rate itself,
-- 16 processes at R = 5 measured 4.81 requests/s from 20 answers and crept from there
-- for the next 30 s at 0.96 of the limit; aimed half an answer above it (the bound was
-- 16 answers), 0.960 in the last three runs; one answer above, 0.98-1.00 in three, the -1
-- share the same (0.7%), and at R = 40 too.
local aim = rate
if not first and answered >= 4 and not rejoining then
  aim = rate * (1 + (answered < 32 and 1 or 0.5) / answered)
end
-- (A cut while clients rejoin keeps the seed's trust: it measured nothing to doubt it.)
-- A rate measured over a span that reaches back before the first cut includes the cold
-- start's climb, when the fleet sent less than the limit (at R = 40, 8 processes
-- measured 32/s that way). It is not trusted: the climb above it is the quick one, not
-- the creep that held such a fleet at 0.87 of the limit for 11 s.
local climbed_until = tonumber(s[13]) or 0
-- The first -1 follows a burst the bucket absorbed: halve, and measure again at the next.
pace = math.max(tonumber(ARGV[3]), (first and 0.5 or 0.9) * rate)
-- The turns booked ahead (one per client at most: with N clients, N turns, seconds ahead
-- at a low limit) were spaced at the pace just found too fast, into a bucket this -1
-- found empty: each would go out as booked and many be refused. They keep their order
-- and are spaced at the new pace from now; each client asks for its turn's time again
-- before it sends (_MOVED), and the next turn booked comes after them.
local ahead = redis.call('ZRANGEBYSCORE', slots, '(' .. now, '+inf', 'WITHSCORES')
local last = now
for i = 1, #ahead, 2 do
  last = math.max(tonumber(ahead[i + 1]), last + 1 / pace)
  redis.call('ZADD', slots, last, ahead[i])
end
-- A cut while clients rejoin lowers the pace, not the ceiling: its -1 answers are the
-- overlap of their turns with what they still pace themselves, not news of the limit.
-- Lowered to each such cut's pace, it held a fleet at R = 10 at 0.8-0.9 of the limit for
-- 35 s after Redis came back, creeping up from there (a trial); kept, the pace is back at
-- it within a few dozen turns.
if rejoining then
  aim = math.max(aim, ceiling)
end
redis.call('HSET', key, 'pace', tostring(pace), 'ceiling', tostring(aim),
           'sure', (not first and (rejoining or (answered >= 4 and from >= climbed_until)))
                   and '1' or '0',
           'next_at', tostring(math.max(last + 1 / pace, next_at)),
           'epoch', epoch + 1,
           'cut_at', tostring(now),
           'cut_turns', tonumber(s[10]) or 0,
           'refused_since_cut', 0)
if rejoining then
  redis.call('HSET', key, 'rejoin_cut_until', tostring(rejoin_until))
end
if first then
  redis.call('HSET', key, 'first_cut_at', tostring(now))
end
redis.call('HINCRBY', key, 'cuts', 1)
return {1, tostring(pace), answered, tostring(span), tostring(rate), how, run[1], run[2]}
"""
)

# Before a turn booked ahead is used: whether a cut moved it later (see _REFUSED). KEYS:
# slots, schedule hash. ARGV: now or '', the turn's number, the time it was booked for.
# Returns the time still to wait ('0': go now) and, if it moved, the episode it now
# belongs to (a -1 for it is news of the new pace) and the time it moved to.
_MOVED = (
    _CLOCK
    + """
local at = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[2]))
if not at or at <= tonumber(ARGV[3]) + 1e-6 or at <= now then
  return {'0', 0}
end
return {tostring(at - now), tonumber(redis.call('HGET', KEYS[2], 'epoch')) or 0,
        tostring(at)}
"""
)


# What check() runs: each command the scripts above run, once, on scratch keys in the
# schedule's own hash slot that expire within a second. Redis checks a script's commands
# against its user's ACL as they run, so a user the ACL lets PING but not, say, ZADD
# passed check() and was refused at its first turn (NOPERM), every client then pacing
# itself; it is refused here instead. KEYS: a scratch hash, a scratch sorted set.
_CHECK = """
redis.call('TIME')
redis.call('HSET', KEYS[1], 'n', '0')
redis.call('HINCRBY', KEYS[1], 'n', 1)
redis.call('HGET', KEYS[1], 'n')
redis.call('HMGET', KEYS[1], 'n')
redis.call('PEXPIRE', KEYS[1], 1000)
redis.call('ZADD', KEYS[2], 1, 'a', 2, 'b')
redis.call('PEXPIRE', KEYS[2], 1000)
redis.call('ZCARD', KEYS[2])
redis.call('ZCOUNT', KEYS[2], '-inf', '+inf')
redis.call('ZSCORE', KEYS[2], 'a')
redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '+inf')
redis.call('ZREVRANGEBYSCORE', KEYS[2], '+inf', '-inf')
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, 0)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', 1)
redis.call('ZREM', KEYS[2], 'b')
return 1
"""


def _setting_refused(exc: BaseException) -> str | None:
    """What in the URL Redis refused, when the failure is a setting to fix, not an outage
    (a wrong password, a database number out of range); None otherwise.

    Told apart by redis-py's class names and Redis's own error words, which quote neither
    the URL nor the password."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    text = str(exc)
    # redis-py strips Redis's error code from the text into ``status_code`` and raises
    # one class for both: asked first, a missing password read as a wrong one.
    code = getattr(exc, "status_code", None)
    if code == "NOAUTH" or "NOAUTH" in text or "Authentication required" in text:
        return "Redis needs a password, and the URL gives none"
    if names & {"AuthenticationError", "AuthenticationWrongNumberOfArgsError"} or (
        "WRONGPASS" in text
    ):
        return "Redis refused the user name or password in the URL"
    # Refused by the user's ACL, at the top level (NOPERM: redis-py's NoPermissionError)
    # or inside a script (a plain error), in the words of every Redis since 6: "no
    # permissions to run the 'zadd' command", "ACL failure in script: ...", "The user
    # executing the script can't run this command", "... access a key", "... access one
    # of the keys", "... can't access at least one of the keys". They name the command at
    # most, never a secret.
    acl = (
        code == "NOPERM"
        or "NOPERM" in text
        or bool(names & {"AuthorizationError", "NoPermissionError"})
        or "ACL failure" in text
        or "user executing the script" in text
    )
    if acl and ("access a key" in text or "of the keys" in text):
        return "the URL's Redis user may not use the keys a shared limit needs (aisix:limit:*)"
    if acl:
        command = re.search(r"run the '([a-z|_-]+)' command", text)
        named = f" ({command.group(1).upper()})" if command else ""
        return f"the URL's Redis user may not run the commands a shared limit needs{named}"
    if "DB index is out of range" in text:
        return "Redis has no database of the URL's number"
    if isinstance(exc, (TypeError, ValueError)):
        # redis-py hands the URL's query options to the connection as they are.
        return "an option in the URL's query could not be used"
    return None


def _describe(exc: BaseException) -> str:
    """The failure's type; for a TLS failure also its cause, which a user must fix.

    redis-py wraps a refused certificate in a ConnectionError, which alone reads like a
    server that is down. OpenSSL's verification message names the reason ("unable to get
    local issuer certificate", "hostname mismatch"), never the URL or a password.
    """
    if isinstance(exc, _Unanswered):
        return f"TimeoutError: {exc}"
    shown = type(exc).__name__
    setting = _setting_refused(exc)
    if setting is not None:
        return f"{shown}: {setting}"
    cause = ssl_error_in(exc.__cause__ or exc.__context__)
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"{shown}: TLS certificate not trusted: {cause.verify_message}"
    if cause is not None:
        return f"{shown}: TLS {type(cause).__name__}"
    return shown


@attrs.frozen
class FleetRun:
    """The fleet's run of -1 answers, as of one of them: how many turns in a row were
    refused (none answered otherwise between them), over how many seconds."""

    length: int
    span: float


class _Unanswered(TimeoutError):
    """Redis answered none of the calls of the last ``timeout`` seconds, each given up on
    by its caller's deadline before its own bound (see SharedLimit._call)."""

    def __init__(self, timeout: float) -> None:
        super().__init__(f"no answer to calls for {timeout:g} s, cut short by deadlines")


@attrs.frozen
class SharedTurn:
    """A turn booked in the shared schedule (already waited for)."""

    #: The shared pace when it was booked (requests/s, the whole fleet).
    pace: float
    #: Clients seen on the schedule lately, this one included.
    clients: int
    #: The cut episode it was booked in: a -1 for it counts if no cut came since.
    epoch: int
    #: When it came (the client's monotonic clock): a -1's round trip is measured from it.
    at: float = 0.0
    #: Its number in the schedule (a -1 removes it from the record of accepted turns).
    number: int = 0

    @property
    def share(self) -> float:
        """This client's fair share of the pace."""
        return self.pace / max(1, self.clients)


@attrs.frozen
class _Booked:
    """A turn booked and not used: its caller was cancelled while it waited for it."""

    pace: float
    clients: int
    epoch: int
    number: int
    booked_for: bytes | str
    #: When it is due (the client's monotonic clock).
    due: float


class SharedLimit:
    """One account's schedule in Redis, as one client sees it (see the module's doc)."""

    #: A schedule's first pace (requests/s) when no client knows one: it doubles every 6
    #: turns that wait, so 40 requests/s is reached in about 2 s, while a low limit is not
    #: met with a burst from every process at once.
    START_PACE = 4.0
    #: A client is counted as sharing the pace while it took a turn this recently (s).
    ACTIVE_WINDOW = 10.0
    #: While Redis keeps failing slowly (timeouts: a hung or unreachable host) a client
    #: asks it again at most this far apart (s); a fast failure (a refused connection,
    #: as while a server restarts) costs a send nothing, and is asked again every
    #: ``retry_after``, so that a fleet rejoins together.
    MAX_BACKOFF = 5.0
    #: After a restart, the schedule keeps the shares of the clients not back yet free for
    #: this long at most (s): long enough for the slowest to ask again, short enough that
    #: a client gone meanwhile holds its share only briefly.
    REJOIN_WINDOW = MAX_BACKOFF + 1.0
    #: A turn booked more than this many turns of the pace ahead (other clients' turns
    #: before it) is asked about again before it is used: a cut meanwhile may have moved
    #: it later (see _REFUSED). One turn ahead is what a single client always waits.
    ASK_AGAIN_AHEAD = 1.5
    #: At a rejoin, the requests a client still sends at its own pace are counted up to
    #: this far ahead (s) and one more (see _pace_yourself).
    OWN_HORIZON = 2.0

    def __init__(
        self,
        url: str,
        *,
        account: str,
        gateway_url: str,
        timeout: float = 0.5,
        retry_after: float = 1.0,
        key_ttl: float = 3600.0,
        min_rate: float = 0.5,
        seed_pace: float | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        # Held hidden, and set before anything can be refused: error trackers print every
        # frame's locals, this argument and the half-made object among them.
        url = hide_url(url)  # type: ignore[assignment]
        self._shown = "<a URL not taken>"
        self._down = False
        try:
            scheme = urlsplit(url).scheme if isinstance(url, str) else None
        except ValueError as exc:
            # An IPv6 host with no closing bracket, say: urlsplit refuses it. The URL is
            # not shown (its password would be).
            raise ValidationError(
                f"shared_limit is not a URL that can be read ({exc}); the URL is not shown"
            ) from None
        if scheme not in _SCHEMES:
            shown = redact_url(url) if isinstance(url, str) else type(url).__name__
            raise ValidationError(
                f"shared_limit must be a redis://, rediss:// or unix:// URL, got {shown!r}"
            )
        self._shown = redact_url(url)
        problem = _url_problem(url)
        if problem is not None:
            raise ValidationError(
                f"shared_limit {self._shown!r} is not a usable Redis URL: {problem}"
            )
        try:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
        except ImportError:
            raise ExtraNotInstalledError(
                "shared_limit needs redis-py: pip install 'aisix-async[redis]' (in a clone of "
                "the repository: pip install '.[redis]')",
                name="redis",
            ) from None
        try:
            # One retry inside redis-py, at once: a pooled connection that a restart
            # broke is replaced without falling back; the whole call stays bounded by
            # ``timeout`` (see _call), so a slow Redis cannot hold a send up.
            self._redis: Redis = aioredis.Redis.from_url(
                url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 1),
                retry_on_timeout=False,
            )
        except (ValueError, TypeError) as exc:
            raise ValidationError(
                f"shared_limit {self._shown!r} is not a usable Redis URL: {type(exc).__name__}"
            ) from None
        prefix = schedule_key(account, gateway_url)
        self._keys = [f"{prefix}:schedule", f"{prefix}:clients", f"{prefix}:slots"]
        self._turn_script = self._redis.register_script(_TURN)
        self._refused_script = self._redis.register_script(_REFUSED)
        self._moved_script = self._redis.register_script(_MOVED)
        self._check_script = self._redis.register_script(_CHECK)
        self._check_keys = [f"{prefix}:check", f"{prefix}:check-slots"]
        self._id = secrets.token_hex(8)
        self._timeout = timeout
        self._retry_after = retry_after
        self._ttl_ms = round(key_ttl * 1000)
        self._min_rate = min_rate
        self._clock = clock
        self._sleep = sleep
        self._monotonic = monotonic
        # One booked turn at a time per client: what makes the shared schedule fair.
        self._lock = anyio.Lock()
        self._down_until = 0.0
        # Since when Redis has answered none of this client's calls, though asked (None:
        # it answered the last), and when the last caller gave up on one (see _call).
        self._silent_since: float | None = None
        self._gave_up_at = 0.0
        self._backoff = retry_after
        # The last shared pace seen: seeds the schedule should Redis have lost it. Until a
        # turn was taken, the pace this client was started from does (not shown as the
        # fleet's: the fleet said nothing yet).
        self._seed = seed_pace
        self._last_pace: float | None = None
        self._last_share: float | None = None
        # ... and how many clients shared it: their shares are kept for them at a rejoin.
        self._last_clients: int | None = None
        # The rate the schedule last measured at the limit (its ceiling, once trusted and
        # measured from a cut, not seeded), and when (the schedule's clock: Redis's).
        self._last_ceiling: float | None = None
        self._measured_at = 0.0
        # When the last request this client was told to pace itself goes out (monotonic,
        # at its last share): at a rejoin its scheduler still sends those on its own, so
        # its first shared turn waits for them, or it would send at twice its share.
        self._own_until = 0.0
        self._turns = 0
        self._fallbacks = 0
        # What Redis last refused in the URL, as said in the log (None: nothing refused).
        self._refused_said: str | None = None
        # The round trip of -1 answers (smoothed): how fast a probe may grow.
        self._rtt: float | None = None
        # A turn booked for a caller that was cancelled while it waited (its own timeout:
        # asyncio.timeout, wait_for): the next caller takes it rather than booking another.
        self._spare: _Booked | None = None

    def __repr__(self) -> str:
        state = "down" if self._down else "up"
        return f"<SharedLimit {self._shown} {state}>"

    @property
    def url(self) -> str:
        """The Redis URL, without user name and password."""
        return self._shown

    @property
    def available(self) -> bool:
        """False while this client paces itself because Redis failed it."""
        return not self._down

    @property
    def _seed_pace(self) -> float | None:
        return self._last_pace if self._last_pace is not None else self._seed

    @property
    def last_pace(self) -> float | None:
        """The whole fleet's pace (requests/s) at this client's last turn or cut; None: none yet."""
        return self._last_pace

    @property
    def last_ceiling(self) -> float | None:
        """The rate (requests/s, the whole fleet) the schedule last measured at the limit,
        as of this client's last turn; None while it has measured none it trusts (a seed
        is not a measure)."""
        return self._last_ceiling

    @property
    def measured_at(self) -> float:
        """When the schedule measured ``last_ceiling``: its last cut, in seconds since the
        epoch (Redis's clock), or the test's clock when one is given."""
        return self._measured_at

    @property
    def last_clients(self) -> int | None:
        """Clients sharing the schedule at this client's last turn; None: none yet."""
        return self._last_clients

    @property
    def last_share(self) -> float | None:
        """This client's share of the shared pace at its last turn (for the fallback)."""
        return self._last_share

    @property
    def fallbacks(self) -> int:
        """How many times Redis failed this client and it paced itself."""
        return self._fallbacks

    def check_runtime(self) -> None:
        """Refuse to run anywhere but asyncio (redis-py's asyncio client needs it)."""
        try:
            library = sniffio.current_async_library()
        except sniffio.AsyncLibraryNotFoundError:
            library = "none"
        if library != "asyncio":
            raise SharedLimitError(
                f"shared_limit works on asyncio only: redis-py's asyncio client cannot run "
                f'under {library}; leave shared_limit unset there, or pass shared_limit="" '
                f"where AISIX_SHARED_LIMIT is set (each client then learns the limit alone)"
            )

    async def check(self) -> bool:
        """Ask Redis once, bounded by ``timeout``: True if it answered, False if it did not
        (this client then paces itself, as at any outage, and says so once).

        Raises :class:`SharedLimitError` when Redis refused what the URL says (a wrong
        password, a database it does not have, a user its ACL does not let run the
        commands the schedule needs, each of which is run once on keys of its own): that
        will not mend by waiting, and a fleet whose clients each pace alone meets the
        limit N times over.
        """
        self.check_runtime()
        began = self._monotonic()
        try:
            with anyio.fail_after(self._timeout):
                await self._redis.ping()
                await self._check_script(keys=self._check_keys, args=[])
        except Exception as exc:
            setting = _setting_refused(exc)
            if setting is not None:
                raise SharedLimitError(f"shared limit at {self._shown}: {setting}") from None
            self._failed(exc, began)
            return False
        await self._recovered()
        return True

    def _now_arg(self) -> str:
        return "" if self._clock is None else repr(self._clock())

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        # Every call is bounded by ``timeout``; but a caller whose own deadline is shorter
        # leaves first, cancelled, and a hung Redis was never found out: handlers with
        # 0.3 s deadlines all failed (DeadlineExceededError) for as long as it hung, and
        # the client said Redis was up. So calls that go unanswered one after another
        # for ``timeout`` count as a timeout too, whoever gave up on them.
        began = self._monotonic()
        if self._silent_since is not None and began - self._gave_up_at > self._timeout:
            # Nobody asked for a while since the last call given up on: start again.
            self._silent_since = None
        if self._silent_since is None:
            self._silent_since = began
        elif began - self._silent_since >= self._timeout:
            self._silent_since = None
            raise _Unanswered(self._timeout)
        try:
            with anyio.fail_after(self._timeout):
                answer = await script(keys=keys, args=args)
        except anyio.get_cancelled_exc_class():
            self._gave_up_at = self._monotonic()
            raise
        except BaseException:
            self._silent_since = None
            raise
        self._silent_since = None
        return answer

    def _failed(self, exc: BaseException, began: float) -> None:
        now = self._monotonic()
        self._down_until = now + self._backoff
        refused = _setting_refused(exc)
        if self._down and refused is not None and refused != self._refused_said:
            # Down for another cause first (a restart), then back refusing the URL (now
            # with a password): the WARNING said "ConnectionError" and no more, though
            # this will not mend by waiting (a fleet operator's trial).
            self._refused_said = refused
            logger.error(
                "shared limit at %s refuses the URL (%s): this client paces itself until "
                "it is fixed; fix the URL",
                self._shown,
                refused,
            )
        if not self._down:
            self._down = True
            self._fallbacks += 1
            self._refused_said = refused
            # Named by its type only: some redis-py messages repeat parts of the URL. A
            # setting Redis refused will not mend by itself: said at ERROR.
            setting = refused is not None
            described = _describe(exc)
            if self._shown.startswith("rediss:") and "Timeout" in described:
                # A TLS handshake with a server that speaks none waits for an answer
                # that never comes: the likeliest cause, said beside the plain timeout.
                described += ", or the server does not speak TLS"
            logger.log(
                logging.ERROR if setting else logging.WARNING,
                "shared limit at %s unavailable (%s): this client paces itself until it "
                "answers again%s",
                self._shown,
                described,
                "; fix the URL" if setting else "",
            )
        elif now - began >= self._timeout / 2 or isinstance(exc, _Unanswered):
            # Still down, and asking cost a send a wait (or callers gave up waiting for
            # an answer: see _call): ask again less often, up to
            # MAX_BACKOFF. A refused connection costs nothing: asking again every
            # retry_after brings every client back within that of a restart (those back
            # keep the shares of the others free meanwhile, but only for a while).
            self._backoff = min(self.MAX_BACKOFF, self._backoff * 2.0)

    async def _recovered(self) -> None:
        if self._down:
            self._down = False
            self._refused_said = None
            self._backoff = self._retry_after
            logger.warning("shared limit at %s answers again: rejoining it", self._shown)
            # The idle connections in the pool predate the failure: after a restart each
            # would fail its next call once (redis-py's one retry did not cover it: in the
            # fault run a client fell back again right after rejoining). Drop them; they
            # reconnect when needed. Closing a local socket does not wait for the server.
            try:
                with anyio.move_on_after(self._timeout):
                    await self._redis.connection_pool.disconnect(inuse_connections=False)
            except Exception:  # closing a broken connection: nothing to keep
                logger.debug("dropping the shared limit's idle connections failed", exc_info=True)

    def _pace_yourself(self) -> None:
        # The scheduler sends this request at its own pace, which starts from the last
        # share: count it where that pace would put it.
        if self._last_share:
            now = self._monotonic()
            step = 1.0 / self._last_share
            # Bounded: should its own pace have drifted above that share during a long
            # outage, the estimate would run ahead of real time and hold its first shared
            # turn back for nothing. An underestimate costs only some overlap.
            self._own_until = min(max(self._own_until, now) + step, now + self.OWN_HORIZON + step)

    async def take_turn(
        self, deadline: float | None = None, paced_here: float = 0.0
    ) -> SharedTurn | None:
        """Book this client's next turn and wait for it; None: pace yourself this time.

        None when Redis failed lately (until ``retry_after`` has passed) or fails now,
        within ``timeout``. A caller cancelled while it waits leaves its turn to this
        client's next caller (see _spare_turn). ``deadline``: the caller's, on anyio's
        clock; a turn after it is not booked, and :class:`TurnBeyondDeadline` is raised
        instead. ``paced_here``: seconds of requests the client still has queued at its
        own pace, told to pace themselves while Redis failed (see _pace_yourself).
        """
        if self._down and self._monotonic() < self._down_until:
            self._pace_yourself()
            return None
        self._hopeless(deadline)
        async with self._lock:
            if self._down and self._monotonic() < self._down_until:
                self._pace_yourself()
                return None
            spare = self._spare_turn(deadline)
            if spare is not None:
                return await self._wait_for(spare)
            began = self._monotonic()
            # What it counted as it said "pace yourself" (up to OWN_HORIZON ahead), or
            # what its own queue says is left, if more: a client with many callers
            # queued (a bulk send's window) drains them for longer than that horizon.
            own = max(0.0, self._own_until - began, paced_here)
            # The time left is read now, not when the caller came: it may have waited
            # for the others' turns to be booked (the lock) meanwhile.
            max_wait = None if deadline is None else deadline - anyio.current_time()
            if max_wait is not None and max_wait <= 0:
                raise TurnBeyondDeadline(0.0)
            try:
                answer = await self._call(
                    self._turn_script,
                    self._keys,
                    [
                        self._now_arg(),
                        self._id,
                        "" if self._seed_pace is None else repr(self._seed_pace),
                        self._ttl_ms,
                        self.ACTIVE_WINDOW,
                        self.START_PACE,
                        self._min_rate,
                        "" if self._rtt is None else repr(self._rtt),
                        "" if self._last_clients is None else self._last_clients,
                        self.REJOIN_WINDOW,
                        repr(own),
                        "" if max_wait is None else repr(max_wait),
                    ],
                )
                late = float(answer[1]) if _text(answer[0]) == "late" else None
                if late is None:
                    wait, pace = float(answer[0]), float(answer[1])
                    epoch, clients, number = int(answer[2]), int(answer[3]), int(answer[4])
                    booked_for = answer[5]
                    ceiling = float(answer[6]) if answer[6] else None
                    measured_at = float(answer[7])
            except Exception as exc:  # any failure of Redis: never the send's business
                self._failed(exc, began)
                self._pace_yourself()
                return None
            await self._recovered()
            if late is not None:
                raise TurnBeyondDeadline(late)
            self._last_pace = pace
            self._last_clients = clients
            self._last_ceiling = ceiling
            self._measured_at = measured_at
            self._last_share = pace / max(1, clients)
            self._turns += 1
            # The requests paced locally go first (they hold this client's share until
            # then); the turn booked meanwhile passes unused if it came earlier.
            wait = max(wait, self._own_until - self._monotonic())
            self._own_until = 0.0
            booked = _Booked(pace, clients, epoch, number, booked_for, self._monotonic() + wait)
            return await self._wait_for(booked)

    async def _wait_for(self, booked: _Booked) -> SharedTurn:
        # Called holding the lock: wait for the turn, and take it.
        wait = booked.due - self._monotonic()
        epoch = booked.epoch
        try:
            if wait > 0:
                await self._sleep(wait)
            if wait * booked.pace > self.ASK_AGAIN_AHEAD:
                epoch = await self._moved(booked.number, booked.booked_for, epoch)
        except BaseException:
            # Cancelled while it waited: a turn left unused here would leave the next
            # caller to book one more behind it, and callers that give up faster than
            # the pace (handlers under asyncio.timeout, say) ran the schedule away from
            # every client of the account (0 sends for 10 s at 5 requests/s in a user's
            # trial). The next caller of this client takes it instead.
            self._spare = booked
            raise
        return SharedTurn(
            pace=booked.pace,
            clients=booked.clients,
            epoch=epoch,
            at=self._monotonic(),
            number=booked.number,
        )

    def _spare_turn(self, deadline: float | None) -> _Booked | None:
        # The turn a cancelled caller left, if it is still to come or just passed (a step
        # of the pace late at most: later, another client's turns follow it closely, and
        # it passes unused, as it would have); None: book one.
        spare, self._spare = self._spare, None
        if spare is None:
            return None
        early = spare.due - self._monotonic()
        if early < -1.0 / spare.pace:
            return None
        if deadline is not None and anyio.current_time() + early > deadline:
            # Kept for a caller with more time.
            self._spare = spare
            raise TurnBeyondDeadline(early)
        return spare

    def check_queue(self, deadline: float, queued: int) -> None:
        """Raise :class:`TurnBeyondDeadline` when a caller behind ``queued`` callers of
        this client (waiting for a slot, say), and behind those waiting for a turn here,
        cannot have its turn by ``deadline`` (anyio's clock), even at QUEUE_PACE_MARGIN
        times this client's share of the last pace: its turn comes no sooner than one per
        caller ahead at that share, and a pace that climbs this much within a queue's
        wait is a fast probe, not a steady limit. Not while Redis is failing: the client
        paces itself then."""
        if self._down and self._monotonic() < self._down_until:
            return
        self._hopeless(deadline, queued)

    def _hopeless(self, deadline: float | None, queued: int = 0) -> None:
        # This client books one turn at a time (see take_turn): callers queue here for
        # the lock, and each learned that its turn was past its deadline only when it got
        # to the front, at about its deadline (a user's trial: 25 of 30 handlers with
        # 1.5 s deadlines at 5 requests/s failed after 1.3 s, not at once). Its own
        # callers drain at its share of the pace, not the whole fleet's: counted at the
        # fleet's, three replicas' handlers all waited out their 5 s deadlines where
        # each replica's queue held 70 callers against room for 51 (a user's trial).
        pace = self._last_share
        if deadline is None or not pace:
            return
        stats = self._lock.statistics()
        ahead = queued + stats.tasks_waiting + (1 if stats.locked else 0)
        soonest = ahead / (pace * QUEUE_PACE_MARGIN)
        if anyio.current_time() + soonest > deadline:
            raise TurnBeyondDeadline(soonest)

    async def _moved(self, number: int, booked_for: bytes | str, epoch: int) -> int:
        # A turn booked some turns ahead may have been moved later by a cut meanwhile
        # (see _REFUSED): wait for its new time, and a -1 for it then counts as news of
        # the new pace. Should Redis fail here the turn goes as booked: it only says when.
        while True:
            began = self._monotonic()
            try:
                answer = await self._call(
                    self._moved_script,
                    [self._keys[2], self._keys[0]],
                    [self._now_arg(), number, booked_for],
                )
                more = float(answer[0])
            except Exception as exc:  # as in take_turn
                self._failed(exc, began)
                return epoch
            if more <= 0:
                return epoch
            # Asked again after this wait: another cut may move it once more meanwhile.
            epoch, booked_for = int(answer[1]), answer[2]
            await self._sleep(more)

    async def refused(self, turn: SharedTurn) -> FleetRun | None:
        """Report a -1 for a request dispatched at ``turn``: it may cut the shared pace.

        Returns the fleet's run of -1 answers this one belongs to (for the circuit
        breaker); None when Redis did not say.
        """
        if self._down:
            return None
        began = self._monotonic()
        rtt = max(0.0, began - turn.at)
        self._rtt = rtt if self._rtt is None else self._rtt + (rtt - self._rtt) / 8.0
        try:
            answer = await self._call(
                self._refused_script,
                [self._keys[0], self._keys[2]],
                [
                    self._now_arg(),
                    turn.epoch,
                    self._min_rate,
                    repr(rtt),
                    turn.number,
                ],
            )
        except Exception as exc:  # as in take_turn: the -1 is handled locally anyway
            self._failed(exc, began)
            return None
        run = FleetRun(length=int(answer[6]), span=float(answer[7]))
        if int(answer[0]) and answer[1]:
            self._last_pace = float(answer[1])
            answered, span, rate = int(answer[2]), float(answer[3]), float(answer[4])
            how = _text(answer[5])
            answers = f"{answered} answer{'' if answered == 1 else 's'} in {span:.3f} s"
            found = {
                "measured": f"{answers}: {rate:.2f} requests/s accepted",
                "recent": f"the last answers came at {rate:.2f} requests/s",
                "bound": f"{answers}: under {rate:.2f} requests/s",
            }.get(how, "cut from the pace: too few answers to measure")
            logger.info(
                "the gateway said -1 (too fast): shared pace now %.2f requests/s (%s)",
                self._last_pace,
                found,
            )
        return run

    async def aclose(self) -> None:
        """Close the connections to Redis (the schedule stays, for the other clients)."""
        try:
            with anyio.move_on_after(self._timeout):
                if self._turns and not self._down:
                    # Leave the clients that share the pace at once, not ACTIVE_WINDOW
                    # later: a run that follows this one would count it as still there.
                    await self._redis.zrem(self._keys[1], self._id)
                await self._redis.aclose()
        except Exception:  # closing a connection that is already broken
            logger.debug("closing the shared limit's Redis connection failed", exc_info=True)
