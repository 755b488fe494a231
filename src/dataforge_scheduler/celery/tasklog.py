"""``task_log()``: print-like logging bound to the current DataForgeTask run.

Inside a run (sync body, ``async def`` body, its asyncio tasks and ``asyncio.to_thread``
threads) the line goes to the run's log buffer, which batches it to the log bus (a Redis
list for replay, a channel for live viewers) and into ``task_executions.log_output`` at
run end. The run is found through the ContextVar of ``core.context``; a plain
``threading.Thread`` started by the body does not inherit it and logs as "outside a run"
unless started under ``contextvars.copy_context().run``. Outside a run the line goes to
the ``dataforge_scheduler.task_log`` logger. ``task_log`` never raises.
"""

from __future__ import annotations

import logging

from dataforge_scheduler.core.context import current_run

__all__ = ["task_log"]

logger = logging.getLogger("dataforge_scheduler.task_log")


def task_log(*args: object, print_console: bool | None = None, sep: str = " ") -> None:
    """Log ``args`` joined by ``sep`` (as ``print`` does) to the current run's log.

    ``print_console`` True or False forces or suppresses the echo to the worker's
    console; None follows the ``log_console_echo`` setting. A message holding newlines
    is stored as several lines.
    """
    try:
        text = sep.join(str(arg) for arg in args)
        run = current_run()
        if run is None or run.log is None:
            _outside_run(text, print_console=print_console)
            return
        run.log.write(text.split("\n"))
        if run.echo if print_console is None else print_console:
            _echo(text, run.celery_task_id)
    except Exception:
        # a log call must never fail the task that makes it
        logger.exception("task_log could not record a line")


def _outside_run(text: str, *, print_console: bool | None) -> None:
    logger.info("%s", text)
    if print_console:
        print(text, flush=True)  # noqa: T201 - the console echo is task_log's job


def _echo(text: str, celery_task_id: str) -> None:
    # runs of a worker interleave on one console: the task id tells them apart
    print(f"[{celery_task_id}] {text}", flush=True)  # noqa: T201 - the console echo
