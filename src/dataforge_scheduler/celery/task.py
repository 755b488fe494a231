"""``DataForgeTask``: the Celery task base that guards each run with a lock.

The run's bookkeeping (execution row, log, lock release) is done by the signal handlers
in ``celery.signals``, because Celery skips ``after_return`` for runs that end as RETRY,
IGNORED or REJECTED while ``task_postrun`` runs for every outcome inside the process
(docs/internals.md §1). This class owns what must happen in the task's own frame:

- ``before_start`` acts on what the run's start found (``celery.lifecycle``, in the same
  Redis step that recorded it): the run's lock (scope ``task:<scheduled_task_id>``, else
  ``name:<task name>``; owner = Celery task id + execution id + host + pid), taken or
  re-entered for a retry of the same Celery task id. When another run holds it, the body
  does not run: the skip is noted for ``task_postrun`` and ``Ignore`` is raised, which
  Celery neither retries nor turns into a failure (docs/internals.md §3, §4). A
  duplicate delivery of an attempt that already started is ignored the same way,
  recording nothing; a run whose lock could not be asked for (Redis down) fails.
- ``extend_lock()``, and the lock watchdog that extends the lock every TTL/3 (one
  renewer thread per process serves every run).
- retry defaults from the settings (``dataforge_task_*`` in ``app.conf``) unless the task
  sets ``max_retries``/``default_retry_delay``/``retry_backoff`` itself; ``retry()``
  without a countdown waits with capped exponential backoff and full jitter.
- ``async def`` bodies: wrapped at class creation to run on a fresh event loop
  (``asyncio.run``), so ``bind=True`` and ``autoretry_for`` keep working
  (docs/internals.md §8). Green pools
  (gevent, eventlet) cannot run them reliably and are not supported for async bodies.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import random
import sys
from datetime import datetime
from typing import Any, ClassVar

from celery import Task, states
from celery.exceptions import Ignore

from dataforge_scheduler.celery.outcomes import describe
from dataforge_scheduler.celery.renewal import LockWatchdog
from dataforge_scheduler.core.clock import utcnow
from dataforge_scheduler.core.context import RunContext, current_run
from dataforge_scheduler.core.enums import OverlapPolicy
from dataforge_scheduler.core.timing import aware_utc
from dataforge_scheduler.core.values import LockInfo
from dataforge_scheduler.errors import (
    ConfigurationError,
    LockLost,
    LockNotAcquired,
)

__all__ = ["DataForgeTask", "holder_details"]

logger = logging.getLogger(__name__)

_RETRY_SETTINGS = {
    "max_retries": "dataforge_task_max_retries",
    "default_retry_delay": "dataforge_task_retry_delay",
}
_EXPLICIT_CANDIDATES = (*_RETRY_SETTINGS, "retry_backoff", "time_limit", "soft_time_limit")


def holder_details(info: LockInfo) -> dict[str, Any]:
    """A lock holder as JSON for the skipped run's result."""
    return {
        "scope": info.scope,
        "celery_task_id": info.celery_task_id,
        "execution_id": info.execution_id,
        "hostname": info.hostname,
        "pid": info.pid,
        "acquired_at": info.acquired_at.isoformat(),
    }


class DataForgeTask(Task[Any, Any]):
    """Celery task base: a lock per schedule, run history, retry defaults, async bodies.

    Per-task attributes (set them in ``@app.task(...)`` or on a subclass):

    - ``overlap_policy``: ``"skip"`` (default) takes the lock and skips the run while
      another holds it; ``"allow"`` takes no lock. A schedule whose ``overlap_policy``
      is ``allow`` runs without the lock too; its ``buffer_one`` and ``cancel_other``
      are the beat's to apply (the run takes the lock as under ``skip``). The default
      policy of new schedules is the registry's (``register_task(overlap_policy=...)``).
    - ``lock_ttl``: seconds (default: the ``lock_ttl_seconds`` setting).
    - ``lock_auto_renew``: extend the lock every TTL/3 while the body runs (default: the
      ``lock_auto_renew`` setting).
    """

    overlap_policy: ClassVar[str] = OverlapPolicy.SKIP.value
    lock_ttl: ClassVar[float | None] = None
    lock_auto_renew: ClassVar[bool | None] = None
    _df_explicit: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._df_explicit = frozenset(
            name
            for name in _EXPLICIT_CANDIDATES
            if any(name in klass.__dict__ for klass in cls.__mro__ if _below_base(klass))
        )
        policy = cls.__dict__.get("overlap_policy")
        if policy is not None:
            try:
                cls.overlap_policy = OverlapPolicy(policy).value
                if cls.overlap_policy not in (OverlapPolicy.SKIP, OverlapPolicy.ALLOW):
                    raise ValueError(policy)
            except ValueError:
                raise ConfigurationError(
                    f"task {cls.__name__}: overlap_policy must be 'skip' or 'allow' (a "
                    "schedule's buffer_one and cancel_other are set on the schedule, "
                    f"or as the task's default with register_task), got {policy!r}",
                    field="overlap_policy",
                ) from None
        _wrap_coroutine_run(cls)

    @classmethod
    def on_bound(cls, app: Any) -> None:
        cls._apply_retry_defaults(app.conf)
        cls._fit_soft_time_limit()

    @classmethod
    def _fit_soft_time_limit(cls) -> None:
        """Keep a task's own ``time_limit`` effective under the app-wide soft limit.

        The prefork pool arms the hard limit only when the soft one fires
        (``AsynPool._on_soft_timeout``, docs/internals.md §15), so a task with
        ``time_limit=60`` under the default ``task_soft_time_limit`` of hours would never
        be stopped at 60 s. A task that sets only ``time_limit`` gets a soft limit just
        below it, as the settings derive the app-wide pair. (It must be positive: the pool
        reads a missing soft limit as the app-wide one.)
        """
        if "time_limit" not in cls._df_explicit or "soft_time_limit" in cls._df_explicit:
            return
        hard, soft = cls.time_limit, cls.soft_time_limit
        if hard and (soft is None or soft >= hard):
            fitted: Any = hard - min(60, max(1, int(hard) // 10))
            # celery-types declares int seconds; Celery takes float seconds as well
            cls.soft_time_limit = fitted if fitted > 0 else hard * 0.9  # type: ignore[assignment]

    @classmethod
    def _apply_retry_defaults(cls, conf: Any) -> None:
        for attribute, key in _RETRY_SETTINGS.items():
            if attribute not in cls._df_explicit and conf.get(key) is not None:
                setattr(cls, attribute, conf.get(key))

    # ------------------------------------------------------------ lock

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        run = current_run()
        if run is None or run.celery_task_id != task_id:
            logger.error(
                "task %s[%s] runs without its run context: were the signal handlers "
                "connected by dataforge_scheduler.setup()? It runs unguarded",
                self.name,
                task_id,
            )
            return
        state = run.state
        if state.duplicate:
            logger.warning(
                "task %s[%s] was delivered again after its run started; not running it twice",
                self.name,
                task_id,
            )
            raise Ignore()
        if not self.wants_lock(run):
            return
        if state.holder is not None:
            self._skip(run, state.holder)
        if state.lock is None:
            # Redis could not be reached when the run started: the run fails visibly
            # rather than running unguarded
            raise state.lock_error or LockLost(
                f"the lock of run {task_id} could not be taken", scope=state.lock_scope
            )
        renew = self.lock_auto_renew
        if renew is None:
            renew = bool(run.runtime.settings.lock_auto_renew)
        if renew:
            state.watchdog = LockWatchdog(run).start()

    def wants_lock(self, run: RunContext) -> bool:
        """Whether the run takes its lock: not when the task or its schedule (as the
        message said) has ``overlap_policy`` ``allow``."""
        return OverlapPolicy.ALLOW.value not in (self.overlap_policy, run.schedule_overlap_policy)

    def _skip(self, run: RunContext, holder: LockInfo) -> None:
        run.state.skipped_by = holder_details(holder)
        where = f"execution {holder.execution_id}" if holder.execution_id else "a run"
        message = (
            f"lock {holder.scope!r} is held by task {holder.celery_task_id} ({where} on "
            f"{holder.hostname or 'an unknown host'}, pid {holder.pid}); this run was skipped"
        )
        run.state.error = message
        logger.info("task %s[%s] skipped: %s", self.name, run.celery_task_id, message)
        if not (self.ignore_result or getattr(self.request, "ignore_result", False)):
            # Ignore stores nothing, so a caller's AsyncResult.get() would wait forever.
            try:
                error = LockNotAcquired(message, holder=run.state.skipped_by)
                self.backend.store_result(
                    run.celery_task_id, error, states.FAILURE, request=self.request
                )
            except Exception:
                logger.exception("could not store the skipped result of %s", run.celery_task_id)
        raise Ignore()

    def extend_lock(self, ttl: float | None = None) -> None:
        """Reset the run's lock TTL to ``ttl`` seconds (default: the task's lock TTL).

        Raises ``LockLost`` when the lock expired or was force-released since it was
        taken. Does nothing for a run without a lock (``overlap_policy="allow"``) or
        outside a run.
        """
        run = current_run()
        hold = None if run is None else run.state.lock
        if run is None or hold is None:
            logger.debug("extend_lock() outside a locked run does nothing")
            return
        if hold.lost:
            raise LockLost(
                f"lock {hold.scope!r} was lost (expired or force-released)", scope=hold.scope
            )
        try:
            run.runtime.locks.extend(hold.scope, hold.token, ttl=ttl or hold.ttl)
        except LockLost:
            hold.lost = True
            raise

    # ------------------------------------------------------------ retries

    def retry(
        self,
        args: Any = None,
        kwargs: Any = None,
        exc: Exception | None = None,
        throw: bool = True,
        eta: Any = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Any:
        """Celery's ``retry()`` with dataforge's defaults (see the module docstring)."""
        type(self)._apply_retry_defaults(self.app.conf)
        if eta is None and countdown is None and self._backoff_enabled():
            countdown = self.backoff_countdown(int(self.request.retries or 0))
        self._log_retry(exc, countdown=countdown, eta=eta, max_retries=max_retries)
        return super().retry(
            args=args,
            kwargs=kwargs,
            exc=exc,
            throw=throw,
            eta=eta,
            countdown=countdown,
            max_retries=max_retries,
            **options,
        )

    def _log_retry(
        self,
        exc: BaseException | None,
        *,
        countdown: float | None,
        eta: Any,
        max_retries: int | None,
    ) -> None:
        # Celery publishes the next attempt before this one ends (docs/internals.md §2):
        # with a short countdown its lines can reach the log before a marker written at
        # postrun, so the marker goes out now, before super().retry() publishes.
        run = current_run()
        request = self.request
        if run is None or run.log is None or run.celery_task_id != request.id:
            return
        limit = self.max_retries if max_retries is None else max_retries
        if request.called_directly or (limit is not None and int(request.retries or 0) >= limit):
            return  # Celery raises instead of retrying: no marker
        wait = countdown
        if wait is None and isinstance(eta, datetime) and eta.utcoffset() is not None:
            wait = max(0.0, (aware_utc(eta, field="eta") - utcnow()).total_seconds())
        reason = exc if exc is not None else sys.exc_info()[1]
        try:
            run.log.write([f"… retrying in {float(wait or 0):.1f} s: {describe(reason)}"])
            run.log.flush()
            run.state.retry_logged = True
        except Exception:  # the log must never change whether the task retries
            logger.exception("dataforge: could not log the retry of task %s", request.id)

    def _backoff_enabled(self) -> bool:
        if "retry_backoff" in self._df_explicit:
            return bool(getattr(self, "retry_backoff", False))
        return bool(self.app.conf.get("dataforge_task_retry_backoff", False))

    def backoff_countdown(self, retries: int) -> float:
        """Seconds before retry number ``retries + 1``: full jitter over
        ``default_retry_delay * 2**retries``, capped at ``retry_backoff_max`` (600 s)."""
        cap = float(getattr(self, "retry_backoff_max", 600))
        ceiling = min(cap, float(self.default_retry_delay) * 2 ** min(retries, 32))
        return random.uniform(0, ceiling)


def _below_base(klass: type) -> bool:
    """Whether ``klass`` is a subclass of DataForgeTask (not the base itself)."""
    return (
        isinstance(klass, type) and issubclass(klass, DataForgeTask) and klass is not DataForgeTask
    )


def _wrap_coroutine_run(cls: type[DataForgeTask]) -> None:
    raw = cls.__dict__.get("run")
    fn = getattr(raw, "__func__", raw)  # a staticmethod when bind=False
    if fn is None or not inspect.iscoroutinefunction(fn):
        return

    @functools.wraps(fn)
    def run_sync(*args: Any, **kwargs: Any) -> Any:
        # a fresh loop per run; asyncio.run copies the context, so task_log works inside
        return asyncio.run(fn(*args, **kwargs))

    cls.run = staticmethod(run_sync) if isinstance(raw, staticmethod) else run_sync  # type: ignore[method-assign]
