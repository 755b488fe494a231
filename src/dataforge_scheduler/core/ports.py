"""The ports: one Protocol per role the faces depend on, with the invariants every
implementation keeps.

``LockManager``, ``LogBus`` and ``ChangeNotices`` are the Redis-backed roles (``redis/``
holds the production implementations, ``memory/`` their in-process twins);
``AsyncLogFeed`` is the API's non-blocking view of a run's live log; ``RunJournal`` is a
run's start and end as one backend step each, and the outbox the history writer drains
into the database; ``Dispatcher``
publishes runs to the workers (``celery/dispatch.py``, and the pytest plugin's recording
double); ``Backend`` bundles the roles of one configured ``redis_url``. Every
implementation passes the same contract suite in ``tests/contract``, so a behaviour
stated in a docstring here holds for all of them. The values the roles exchange live in
``core.values`` and are re-exported here. This module imports nothing but the standard
library and the core.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from types import TracebackType
from typing import Protocol, Self

from dataforge_scheduler.core.journal import (
    FinishRecord,
    LockEnd,
    LockRequest,
    OutboxEntry,
    OutboxStats,
    StartOutcome,
    StartRecord,
)
from dataforge_scheduler.core.messages import RunMessage
from dataforge_scheduler.core.slots import ClaimedSlot
from dataforge_scheduler.core.values import (
    Acquired,
    LockInfo,
    LockOwner,
    LogEnd,
    LogLine,
    ttl_milliseconds,
    writable_line,
)

__all__ = [
    "CANCEL_NOTE_TTL_SECONDS",
    "Acquired",
    "AsyncLogFeed",
    "AsyncLogSubscription",
    "Backend",
    "CancelNotes",
    "ChangeNotices",
    "Dispatcher",
    "LockInfo",
    "LockManager",
    "LockOwner",
    "LogBus",
    "LogEnd",
    "LogLine",
    "LogSubscription",
    "NoticeListener",
    "RunJournal",
    "ttl_milliseconds",
    "writable_line",
]


# ---------------------------------------------------------------- locks


class LockManager(Protocol):
    """Mutual exclusion per scope (``task:<id>`` or ``name:<task name>``), with a TTL.

    Invariants every implementation keeps:

    - At most one holder per scope. A holder is identified by its **Celery task id**; the
      random ``token`` proves ownership for ``extend`` and ``release``.
    - ``acquire`` is re-entrant for the same Celery task id: Celery publishes a retry before
      the old attempt finishes, so the new attempt (maybe in another process that never
      saw the token) must get in. Re-entering refreshes the TTL, replaces the owner details
      it is given (execution id, hostname, pid; ``None`` keeps the stored value), keeps
      ``acquired_at`` and returns the existing token with ``reentered=True``.
    - Every mutation compares before it acts, atomically: ``extend`` and ``release`` act only
      when the stored token matches, ``release_for_task`` only when the stored Celery task id
      matches. A lock that expired or was force-released is never silently re-acquired by
      ``extend``: it raises ``LockLost``.
    - Every lock has a TTL (seconds, rounded up to whole milliseconds, at least 1 ms), so a
      SIGKILLed worker cannot hold a scope forever.
    - An expired lock is gone: ``get`` returns None, ``list`` omits it, ``acquire`` succeeds.
    - Backend failures raise ``BackendUnavailable``; bad arguments ``ConfigurationError``.
    """

    def acquire(self, scope: str, owner: LockOwner, *, ttl: float) -> Acquired | LockInfo:
        """Take the lock or re-enter it; when another task holds it, return the holder."""
        ...

    def extend(self, scope: str, token: str, *, ttl: float) -> None:
        """Reset the TTL to ``ttl``; raise ``LockLost`` unless ``token`` holds the scope."""
        ...

    def release(self, scope: str, token: str) -> bool:
        """Release if ``token`` holds the scope; False (and nothing changes) otherwise."""
        ...

    def release_for_task(self, scope: str, celery_task_id: str) -> bool:
        """Release if ``celery_task_id`` holds the scope (main-process handlers know no token)."""
        ...

    def force_release(self, scope: str) -> LockInfo | None:
        """Release whoever holds the scope (admin); return what was released."""
        ...

    def get(self, scope: str) -> LockInfo | None:
        """The holder of ``scope``, or None."""
        ...

    def list(self) -> builtins.list[LockInfo]:
        """Every held lock, sorted by scope (Redis reads an index of held locks, never the
        keyspace)."""
        ...


# ---------------------------------------------------------------- log bus


class LogSubscription(Protocol):
    """A live feed of one run's log: lines in ``seq`` order, then one ``LogEnd``."""

    def get(self, timeout: float) -> LogLine | LogEnd | None:
        """The next event, waiting up to ``timeout`` seconds; None when none came."""
        ...

    def close(self) -> None:
        """Unsubscribe; idempotent. ``get`` after close returns None at once."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class LogBus(Protocol):
    """A run's log: an append-only list for replay plus live push to subscribers.

    Invariants every implementation keeps:

    - ``append`` is atomic per batch: the lines get consecutive, unique, dense ``seq``
      numbers in the order given, even with concurrent appenders, and are pushed live in
      that order. It returns the log's new length.
    - A subscription sees every line appended after ``subscribe`` returned. To follow a
      run without a gap, subscribe first, then ``read`` the backlog, and drop live lines
      whose ``seq`` the backlog already had; if ``ended`` is set, the run is over.
    - ``finish`` marks the run ended (``ended`` returns the status), pushes ``LogEnd`` and
      starts the retention TTL: lines stay readable for ``ttl`` seconds, then ``read``
      returns ``[]``, ``length`` 0 and ``ended`` None. Lines appended before ``finish`` are
      untouched by it.
    - Lines are text; characters UTF-8 cannot encode (lone surrogates) become ``?``.
    - Live subscribers (``subscribe`` here, ``AsyncLogFeed`` for the API) see the same
      events; on Redis the wire form is documented in ``redis.keys``.
    """

    def append(self, run_id: str, lines: Sequence[str]) -> int:
        """Append ``lines`` in order (one round trip), push them live; the new length."""
        ...

    def read(self, run_id: str, start: int = 0) -> builtins.list[LogLine]:
        """The stored lines from ``seq`` ``start`` on."""
        ...

    def length(self, run_id: str) -> int:
        """How many lines are stored."""
        ...

    def finish(self, run_id: str, status: str, *, ttl: float) -> None:
        """Mark the run ended with ``status``, push ``LogEnd``, keep lines ``ttl`` seconds."""
        ...

    def ended(self, run_id: str) -> str | None:
        """The final status given to ``finish``, until the retention TTL runs out."""
        ...

    def subscribe(self, run_id: str) -> LogSubscription:
        """A live subscription, active when this returns."""
        ...

    def delete(self, run_id: str) -> None:
        """Drop the lines and the end marker."""
        ...


# ---------------------------------------------------------------- the API's live log


class AsyncLogSubscription(Protocol):
    """A live feed of one run's log, read without blocking the event loop."""

    async def get(self, wait: float) -> LogLine | LogEnd | None:
        """The next event, waiting up to ``wait`` seconds; None when none came."""
        ...

    async def close(self) -> None:
        """Unsubscribe; idempotent. ``get`` after close returns None at once."""
        ...


class AsyncLogFeed(Protocol):
    """Async subscriptions to runs' live logs, for streams that may stay open a long time.

    Invariants: a subscription sees, in ``seq`` order, every line appended to the run's
    ``LogBus`` after ``subscribe`` returned, then one ``LogEnd`` when the run finishes;
    waiting holds no thread; ``close`` releases everything the subscription held, even
    when the backend has gone away. Backend failures raise ``BackendUnavailable``.
    """

    async def subscribe(self, run_id: str) -> AsyncLogSubscription:
        """A subscription to ``run_id``'s log, active when this returns."""
        ...


# ---------------------------------------------------------------- change notices


class NoticeListener(Protocol):
    """One listener's view of the change notices."""

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True if any notice arrived since the last wait.

        Every pending notice is consumed, so a burst of changes wakes the waiter once.
        """
        ...

    def close(self) -> None:
        """Stop listening; idempotent. ``wait`` after close returns False at once."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class ChangeNotices(Protocol):
    """Notices that a schedule changed, which wake the beat scheduler early.

    Invariants: a notice published after ``listen`` returned reaches that listener; notices
    are hints, not a queue (no payload is promised, several collapse into one wake-up, and
    none is kept for listeners that were not listening). The scheduler still re-reads the
    database on its own timer, so a lost notice only delays a change.
    """

    def publish(self, schedule_id: int | None = None) -> None:
        """Tell every listener that ``schedule_id`` (or some schedule) changed."""
        ...

    def listen(self) -> NoticeListener:
        """A listener, active when this returns."""
        ...


# ---------------------------------------------------------------- cancellations


class CancelNotes(Protocol):
    """Why a run was cancelled, from the process that cancels it to the worker's process
    that records it ``revoked`` (a revoke message carries no reason).

    Invariants: ``reason`` returns the reason last noted for that Celery task id, as
    often as asked (the run's pool process and the worker's main process may both record
    its end; whichever is first, the row says why); a note is kept
    ``CANCEL_NOTE_TTL_SECONDS``, so a run cancelled before a worker received it finds its
    reason when one does; the reason comes back exactly as noted (any Unicode).
    """

    def note(self, celery_task_id: str, reason: str) -> None:
        """Keep ``reason`` for the run ``celery_task_id`` about to be cancelled."""
        ...

    def reason(self, celery_task_id: str) -> str | None:
        """The reason noted for ``celery_task_id``; None if none (or expired)."""
        ...


#: How long a cancel note waits for the worker that records the run ``revoked``.
CANCEL_NOTE_TTL_SECONDS = 24 * 3600


# ---------------------------------------------------------------- run history


class RunJournal(Protocol):
    """A run's start and end, one backend step each, and the outbox that carries them to
    the database (the history writer drains it).

    Invariants every implementation keeps:

    - ``start`` is atomic: it decides whether this delivery may start (a first start; the
      attempt a ``retrying`` run waits for; a later attempt overtaking a running earlier
      one; or, ``redelivered``, the same attempt again after its worker was lost), then
      takes ``lock`` if given (re-entrant for the same Celery task id, as
      ``LockManager.acquire``), then appends the ``StartRecord``. A duplicate records
      nothing and takes no lock. A lock held by another run is reported in
      ``StartOutcome.holder``; the start is recorded all the same (the run ends
      ``skipped``).
    - ``finish`` is atomic: it appends ``log_lines`` to the run's log (as
      ``LogBus.append``), ends the log when the record is final (as ``LogBus.finish``
      with ``log_ttl``), acts on the lock only if the token (or Celery task id) still
      holds it, and appends the ``FinishRecord``. A finish of an earlier attempt does not
      change what a later attempt may do.
    - What a run knows of itself (its attempt, whether it ended, how many of its records
      are not yet applied) is kept ``state_ttl`` seconds after its last step, so a
      duplicate delivery within that time is recognised. A final ``finish`` given
      ``done_ttl`` keeps it only ``done_ttl`` seconds once every record of the run has
      been acknowledged (never while one waits: ``undrained`` must stay true): a task
      whose message was acknowledged before it ran cannot be delivered again once it
      ended, so its state need not outlive the broker's redelivery window.
    - Records are read in the order they were appended. ``read`` gives a consumer new
      records (waiting up to ``block`` seconds for one); a record stays the consumer's,
      unacknowledged, until ``ack``. ``pending`` gives a consumer back its own
      unacknowledged records; ``claim`` takes records another consumer has held
      unacknowledged for ``idle`` seconds (a writer that died). ``ack`` removes records
      for good and is idempotent.
    - ``undrained`` names the runs with a record not yet acknowledged; ``stats`` says
      how many records wait and how old the oldest is.
    - Backend failures raise ``BackendUnavailable``.
    """

    def start(
        self, record: StartRecord, *, lock: LockRequest | None, state_ttl: float
    ) -> StartOutcome: ...

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
        """Returns whether the lock step acted (released or extended)."""
        ...

    def read(self, consumer: str, *, count: int, block: float) -> builtins.list[OutboxEntry]: ...

    def pending(self, consumer: str, *, count: int) -> builtins.list[OutboxEntry]: ...

    def claim(self, consumer: str, *, idle: float, count: int) -> builtins.list[OutboxEntry]: ...

    def ack(self, entries: Sequence[OutboxEntry]) -> None: ...

    def undrained(self, celery_task_ids: Sequence[str]) -> set[str]: ...

    def stats(self) -> OutboxStats: ...

    def reject(self, entry: OutboxEntry, reason: str) -> None:
        """Set aside a record the database refuses for good (kept for an operator, with
        ``reason``), and acknowledge it."""
        ...


# ---------------------------------------------------------------- publishing runs


class Dispatcher(Protocol):
    """Publishes runs to the workers by registered task name.

    The beat scheduler sends every claimed slot through it and "run now" does too, so
    both publish the same way (and the API never imports Celery). Invariants: ``dispatch``
    builds the run's message with ``message_for`` and publishes exactly that message once,
    with the Celery task id stored on the run's row; it returns the message published.
    When the broker cannot take it, it raises ``BackendUnavailable`` naming the task and
    its Celery task id, and nothing was published.

    Optional: ``batch()``, a context manager inside which ``dispatch`` may only buffer
    (``CeleryDispatcher`` on Redis); its end writes what was buffered and raises
    ``BackendUnavailable`` when that failed, and then none of the block's runs counts as
    sent. The beat uses it when the dispatcher has it.
    """

    def message_for(self, run: ClaimedSlot) -> RunMessage:
        """The message that publishes ``run`` (default: ``core.messages.message_for``)."""
        ...

    def dispatch(self, run: ClaimedSlot) -> RunMessage:
        """Publish ``run``; the message sent."""
        ...

    def cancel(self, celery_task_ids: Sequence[str], *, signal: str = "SIGTERM") -> None:
        """Revoke these runs: one not started yet is dropped when a worker receives it,
        one going is terminated with ``signal`` (``SIGTERM``, or ``SIGKILL`` for a run
        that ignored it). ``BackendUnavailable`` when the broker cannot take the
        revoke."""
        ...


# ---------------------------------------------------------------- one backend


class Backend(Protocol):
    """The Redis-backed roles of one configured ``redis_url``: Redis, or in-process.

    Roles are made on first use, in the process that uses them. ``check`` says whether
    the backend answers (``"ok"``; raises ``BackendUnavailable`` otherwise), ``purge``
    deletes everything the library stored under its key prefix (test clean-up) and
    ``close`` releases connections; both are safe to call twice.
    """

    @property
    def name(self) -> str:
        """``"redis"`` or ``"memory"``."""
        ...

    @property
    def locks(self) -> LockManager: ...

    @property
    def logbus(self) -> LogBus: ...

    @property
    def notices(self) -> ChangeNotices: ...

    @property
    def log_feed(self) -> AsyncLogFeed: ...

    @property
    def journal(self) -> RunJournal: ...

    @property
    def cancels(self) -> CancelNotes: ...

    def check(self) -> str:
        """``"ok"`` (or ``"ok (in-process)"``) when the backend answers."""
        ...

    def purge(self) -> int:
        """Delete every key under the key prefix; how many were deleted."""
        ...

    def close(self) -> None: ...
