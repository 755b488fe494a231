"""``RedisRunJournal``: a run's start and end as one Lua script each, and the outbox as a
Redis stream with one consumer group.

The start script checks the run's state hash (a duplicate delivery records nothing),
takes the lock with the same Lua function ``RedisLockManager`` uses, marks the run
``running`` and appends its start record; the finish script pushes the last log lines
and ends the live log with the ``RedisLogBus`` functions, acts on the lock only when the
token (or Celery task id) still holds it, updates the run's state and appends its end
record. Each script counts the run's records not yet applied (``undrained``); the
writers' acknowledgement (``XACK``, then ``XDEL``, so the stream holds only what waits)
counts them down. Key names are ``redis.keys``'s.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Sequence
from typing import Any

import redis
import redis.exceptions

from dataforge_scheduler.core.clock import Clock
from dataforge_scheduler.core.journal import (
    FinishRecord,
    LockEnd,
    LockRequest,
    OutboxEntry,
    OutboxStats,
    StartOutcome,
    StartRecord,
    decode_record,
    encode_record,
)
from dataforge_scheduler.core.values import Acquired, LockInfo, ttl_milliseconds, writable_line
from dataforge_scheduler.redis.connection import backend_errors
from dataforge_scheduler.redis.keys import Keys
from dataforge_scheduler.redis.locks import LOCK_FUNCTIONS, acquire_args, lock_outcome
from dataforge_scheduler.redis.logbus import LOG_FUNCTIONS

__all__ = ["FORGET_IDLE_SECONDS", "GROUP", "RedisRunJournal"]

logger = logging.getLogger(__name__)

GROUP = "history"

# KEYS: run state, outbox[, lock, lock index]; ARGV: attempt, redelivered, state ttl ms, record,
# then the acquire() arguments when a lock is asked for.
# Returns {0} for a duplicate, {1} or {1, <acquire() answer>}.
_START = (
    LOCK_FUNCTIONS
    + """
local attempt = tonumber(ARGV[1])
local state = redis.call('HMGET', KEYS[1], 'state', 'attempt')
if state[1] then
  local before = tonumber(state[2])
  local startable = (state[1] == 'retrying' and before == attempt)
    or (state[1] == 'running' and before < attempt)
    or (ARGV[2] == '1' and state[1] == 'running' and before == attempt)
  if not startable then return {0} end
end
local lock = nil
if #KEYS == 4 then
  lock = acquire(KEYS[3], KEYS[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11])
end
redis.call('HSET', KEYS[1], 'state', 'running', 'attempt', attempt)
redis.call('HINCRBY', KEYS[1], 'undrained', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('XADD', KEYS[2], '*', 'r', ARGV[4])
if lock then return {1, lock} end
return {1}
"""
)

# KEYS: run state, outbox, log list, log end[, lock, lock index]; ARGV: live channel,
# attempt ('' for any), final ('1'/'0'), status, log ttl ms, state ttl ms, record, lock action, lock
# token or task id, lock ttl ms, done ttl ms ('0': none), then the log lines. Returns 1
# when the lock step acted. A final end with a done ttl notes it (``keep_ms``) for the
# acknowledgement that applies the run's last record.
_FINISH = (
    LOCK_FUNCTIONS
    + LOG_FUNCTIONS
    + """
local lines = {}
for i = 12, #ARGV do lines[#lines + 1] = ARGV[i] end
if #lines > 0 then append_lines(KEYS[3], ARGV[1], lines) end
if ARGV[3] == '1' then end_log(KEYS[3], KEYS[4], ARGV[1], ARGV[4], ARGV[5]) end
local acted = 0
if #KEYS == 6 then
  if ARGV[8] == 'release' then acted = release_if(KEYS[5], KEYS[6], 'token', ARGV[9])
  elseif ARGV[8] == 'release_task' then
    acted = release_if(KEYS[5], KEYS[6], 'celery_task_id', ARGV[9])
  elseif ARGV[8] == 'extend' then acted = extend(KEYS[5], KEYS[6], ARGV[9], ARGV[10]) end
end
local state = redis.call('HMGET', KEYS[1], 'state', 'attempt')
local mine = ARGV[2] == '' or not state[2] or tonumber(state[2]) == tonumber(ARGV[2])
if mine then
  if ARGV[3] == '1' then
    redis.call('HSET', KEYS[1], 'state', 'done')
    if ARGV[11] ~= '0' then redis.call('HSET', KEYS[1], 'keep_ms', ARGV[11]) end
  elseif ARGV[4] == 'retrying' then
    redis.call('HSET', KEYS[1], 'state', 'retrying', 'attempt', tonumber(ARGV[2]) + 1)
  end
end
redis.call('HINCRBY', KEYS[1], 'undrained', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('XADD', KEYS[2], '*', 'r', ARGV[7])
if acted > 0 then return 1 end
return 0
"""
)

# KEYS: outbox, then one run state key per entry; ARGV: group, then the entry ids.
# Acknowledges, deletes and counts down each entry still pending; a run left with none
# that noted a done ttl keeps its state only that long. Returns how many.
_ACK = """
local done = 0
for i = 2, #ARGV do
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 then
    redis.call('XDEL', KEYS[1], ARGV[i])
    if KEYS[i] ~= '' and redis.call('EXISTS', KEYS[i]) == 1 then
      local left = redis.call('HINCRBY', KEYS[i], 'undrained', -1)
      if left <= 0 then
        if left < 0 then redis.call('HSET', KEYS[i], 'undrained', 0) end
        local keep = redis.call('HGET', KEYS[i], 'keep_ms')
        if keep then redis.call('PEXPIRE', KEYS[i], keep) end
      end
    end
    done = done + 1
  end
end
return done
"""


# KEYS: outbox; ARGV: group, idle ms, the caller's consumer name. Deletes every other
# consumer that holds no record and has been idle that long (a writer that stopped: each
# process reads under a name of its own, so names pile up over restarts). Atomic, so no
# record can be handed to a consumer between the check and its deletion; a live writer
# deleted this way is simply made again by its next read. Returns how many it deleted.
_FORGET = """
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if not ok then return 0 end
local removed = 0
for _, consumer in ipairs(consumers) do
  local fields = {}
  for j = 1, #consumer, 2 do fields[consumer[j]] = consumer[j + 1] end
  if fields['name'] ~= ARGV[3] and tonumber(fields['pending']) == 0
      and tonumber(fields['idle']) >= tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], fields['name'])
    removed = removed + 1
  end
end
return removed
"""

#: A consumer that held nothing for this long is forgotten (see ``_FORGET``).
FORGET_IDLE_SECONDS = 3600.0


class RedisRunJournal:
    """The ``RunJournal`` port on Redis (see the Protocol for the invariants)."""

    def __init__(self, client: redis.Redis, keys: Keys, *, clock: Clock) -> None:
        self._client = client
        self._keys = keys
        self._clock = clock
        self._start = client.register_script(_START)
        self._finish = client.register_script(_FINISH)
        self._ack = client.register_script(_ACK)
        self._forget = client.register_script(_FORGET)
        self._group_ready = False

    # ------------------------------------------------------------ a run's steps

    def start(
        self, record: StartRecord, *, lock: LockRequest | None, state_ttl: float
    ) -> StartOutcome:
        keys = [self._keys.run(record.celery_task_id), self._keys.outbox()]
        args: builtins.list[Any] = [
            record.retries,
            "1" if record.redelivered else "0",
            ttl_milliseconds(state_ttl),
            encode_record(record),
        ]
        if lock is not None:
            keys += self._keys.lock_keys(lock.scope)
            args += acquire_args(lock.owner, ttl=lock.ttl, now=self._clock.now())
        with backend_errors(f"recording the start of run {record.celery_task_id}"):
            answer = self._start(keys=keys, args=args)
        if int(answer[0]) == 0:
            return StartOutcome(duplicate=True)
        if lock is None:
            return StartOutcome()
        taken: Acquired | LockInfo = lock_outcome(keys[2], lock.scope, lock.owner, answer[1])
        if isinstance(taken, Acquired):
            return StartOutcome(acquired=taken)
        return StartOutcome(holder=taken)

    def finish(
        self,
        record: FinishRecord,
        *,
        log_lines: Sequence[str],
        log_ttl: float,
        lock: LockEnd | None,
        state_ttl: float,
        done_ttl: float | None = None,
    ) -> bool:
        run = record.celery_task_id
        keys = [
            self._keys.run(run),
            self._keys.outbox(),
            self._keys.log(run),
            self._keys.log_end(run),
        ]
        args: builtins.list[Any] = [
            self._keys.log_channel(run),
            "" if record.attempt is None else record.attempt,
            "1" if record.final else "0",
            record.status.value,
            ttl_milliseconds(log_ttl),
            ttl_milliseconds(state_ttl),
            encode_record(record),
            "",
            "",
            1,
            0 if done_ttl is None else ttl_milliseconds(done_ttl),
        ]
        if lock is not None:
            keys += self._keys.lock_keys(lock.scope)
            args[7:10] = [
                lock.action.value,
                lock.key,
                ttl_milliseconds(lock.ttl) if lock.ttl is not None else 1,
            ]
        args += [writable_line(line) for line in log_lines]
        with backend_errors(f"recording the end of run {run}"):
            return bool(int(self._finish(keys=keys, args=args)))

    # ------------------------------------------------------------ the writers' side

    def read(self, consumer: str, *, count: int, block: float) -> builtins.list[OutboxEntry]:
        timeout = max(1, int(block * 1000)) if block > 0 else None
        return self._read_group(consumer, ">", count=count, block=timeout)

    def pending(self, consumer: str, *, count: int) -> builtins.list[OutboxEntry]:
        return self._read_group(consumer, "0", count=count, block=None)

    def claim(self, consumer: str, *, idle: float, count: int) -> builtins.list[OutboxEntry]:
        self._ensure_group()
        with backend_errors("claiming records a writer left"):
            answer = self._client.xautoclaim(
                self._keys.outbox(), GROUP, consumer, int(idle * 1000), "0-0", count=count
            )
        entries = answer[1] if len(answer) > 1 else []
        deleted = answer[2] if len(answer) > 2 else []
        if deleted:
            with backend_errors("acknowledging deleted records"):
                self._client.xack(self._keys.outbox(), GROUP, *deleted)
        claimed = self._entries(entries)
        if claimed:
            logger.warning("claimed %d history record(s) a stopped writer left", len(claimed))
        with backend_errors("forgetting stopped writers"):
            forgotten = int(
                self._forget(
                    keys=[self._keys.outbox()],
                    args=[GROUP, int(FORGET_IDLE_SECONDS * 1000), consumer],
                )
            )
        if forgotten:
            logger.info("forgot %d stopped history writer(s) that held no record", forgotten)
        return claimed

    def ack(self, entries: Sequence[OutboxEntry]) -> None:
        if not entries:
            return
        keys = [self._keys.outbox(), *(self._keys.run(e.record.celery_task_id) for e in entries)]
        with backend_errors("acknowledging history records"):
            self._ack(keys=keys, args=[GROUP, *(e.entry_id for e in entries)])

    def reject(self, entry: OutboxEntry, reason: str) -> None:
        with backend_errors("setting a history record aside"):
            dead: dict[Any, Any] = {
                "r": encode_record(entry.record),
                "id": entry.entry_id,
                "why": reason[:2000],
            }
            self._client.xadd(self._keys.outbox_dead(), dead)
        logger.error(
            "history record %s set aside in %s: %s",
            entry.entry_id,
            self._keys.outbox_dead(),
            reason,
        )
        self.ack([entry])

    def undrained(self, celery_task_ids: Sequence[str]) -> set[str]:
        ids = list(dict.fromkeys(celery_task_ids))
        if not ids:
            return set()
        with backend_errors("reading which runs wait in the outbox"):
            pipe = self._client.pipeline(transaction=False)
            for run in ids:
                pipe.hget(self._keys.run(run), "undrained")
            counts = pipe.execute()
        return {run for run, count in zip(ids, counts, strict=True) if count and int(count) > 0}

    def stats(self) -> OutboxStats:
        self._ensure_group()
        with backend_errors("reading the outbox's length"):
            pipe = self._client.pipeline(transaction=False)
            pipe.xlen(self._keys.outbox())
            pipe.xpending(self._keys.outbox(), GROUP)
            pipe.xrange(self._keys.outbox(), "-", "+", count=1)
            pipe.time()
            length, pending, first, (seconds, micros) = pipe.execute()
        oldest = None
        if first:
            entry_id = first[0][0]
            millis = int(
                (entry_id.decode() if isinstance(entry_id, bytes) else entry_id).split("-")[0]
            )
            oldest = max(0.0, (seconds * 1000 + micros / 1000 - millis) / 1000)
        in_flight = int(pending["pending"]) if isinstance(pending, dict) else 0
        return OutboxStats(length=int(length), in_flight=in_flight, oldest_age_seconds=oldest)

    # ------------------------------------------------------------ helpers

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            with backend_errors("creating the history writers' group"):
                self._client.xgroup_create(self._keys.outbox(), GROUP, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def _read_group(
        self, consumer: str, start: str, *, count: int, block: int | None
    ) -> builtins.list[OutboxEntry]:
        self._ensure_group()
        try:
            with backend_errors("reading the outbox"):
                answer: Any = self._client.xreadgroup(
                    GROUP, consumer, {self._keys.outbox(): start}, count=count, block=block
                )
        except redis.exceptions.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._group_ready = False  # the stream was deleted (a flush): make it again
            return []
        if not answer:
            return []
        # RESP2 answers [[stream, entries]]; RESP3 {stream: [entries]}
        streams = list(answer.values()) if isinstance(answer, dict) else [s[1] for s in answer]
        return self._entries(streams[0])

    def _entries(self, raw: Any) -> builtins.list[OutboxEntry]:
        entries: builtins.list[OutboxEntry] = []
        for entry_id, fields in raw:
            key = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            if not fields:  # deleted while it was pending: nothing left to apply
                with backend_errors("acknowledging a deleted record"):
                    self._client.xack(self._keys.outbox(), GROUP, key)
                continue
            try:
                record = decode_record(fields.get(b"r") or fields.get("r"))
            except (ValueError, KeyError, TypeError) as exc:
                self._set_aside(key, fields, f"unreadable record: {exc}")
                continue
            entries.append(OutboxEntry(entry_id=key, record=record))
        return entries

    def _set_aside(self, entry_id: str, fields: Any, reason: str) -> None:
        logger.error("history record %s is unreadable and was set aside: %s", entry_id, reason)
        with backend_errors("setting an unreadable record aside"):
            pipe = self._client.pipeline(transaction=True)
            dead: dict[Any, Any] = {_text(k): v for k, v in dict(fields).items()}
            dead["why"] = reason[:2000]
            pipe.xadd(self._keys.outbox_dead(), dead)
            pipe.xack(self._keys.outbox(), GROUP, entry_id)
            pipe.xdel(self._keys.outbox(), entry_id)
            pipe.execute()


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
