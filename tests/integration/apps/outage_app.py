"""A Celery app for the outage tests: DataForgeTask runs that leave proof their body ran.

``celery -A tests.integration.apps.outage_app worker|beat`` reads its configuration from
the environment ``procs.service_env`` builds (database, Redis, key prefix, broker key
prefix). ``ot.tick`` writes one ``task_log`` line, works for a moment (so runs are in
flight when a store goes away) and appends its Celery task id to the file named by
``DATAFORGE_TEST_BODY_LOG``: a record of every body that ran which no outage of
PostgreSQL or Redis can touch. ``DATAFORGE_TEST_HISTORY_IN_WORKER=0`` leaves the history
to standalone writers.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from celery import Celery

from dataforge_scheduler.celery.task import DataForgeTask
from dataforge_scheduler.celery.tasklog import task_log
from dataforge_scheduler.core.context import current_run
from dataforge_scheduler.settings import Settings
from dataforge_scheduler.wiring import setup

app = Celery("outage_app")
runtime = setup(
    app,
    Settings.from_env(
        history_writer_in_worker=os.environ.get("DATAFORGE_TEST_HISTORY_IN_WORKER", "1") == "1",
        lost_run_grace_seconds=5,
    ),
)
_BROKER_PREFIX = os.environ["DATAFORGE_TEST_BROKER_PREFIX"]
app.conf.broker_transport_options["global_keyprefix"] = _BROKER_PREFIX
app.conf.result_backend_transport_options["global_keyprefix"] = _BROKER_PREFIX
BODY_LOG = Path(os.environ.get("DATAFORGE_TEST_BODY_LOG", os.devnull))


@app.task(base=DataForgeTask, bind=True, name="ot.tick")
def tick(self: DataForgeTask, scheduled_task_id: int | None = None, work: float = 0.2) -> str:
    task_log("tick", self.request.id)
    time.sleep(work)
    with BODY_LOG.open("a", encoding="utf-8") as proof:  # one short append: atomic
        proof.write(f"{self.request.id}\n")
    return "ok"


@app.task(base=DataForgeTask, bind=True, name="ot.slot")
def slot(self: DataForgeTask, scheduled_task_id: int | None = None, work: float = 0.2) -> str:
    """Like ``ot.tick``, and its proof line also names the trigger and the slot its run
    context says it runs for."""
    run = current_run()
    assert run is not None
    at = run.scheduled_for.isoformat() if run.scheduled_for else "-"
    task_log("slot", at)
    time.sleep(work)
    with BODY_LOG.open("a", encoding="utf-8") as proof:
        proof.write(f"{self.request.id},{run.trigger},{at}\n")
    return "ok"


@app.task(base=DataForgeTask, bind=True, name="ot.stubborn")
def stubborn(self: DataForgeTask, work: float = 60) -> str:
    """A body that ignores SIGTERM: only SIGKILL stops it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    task_log("ignoring SIGTERM", self.request.id)
    time.sleep(work)
    with BODY_LOG.open("a", encoding="utf-8") as proof:
        proof.write(f"{self.request.id}\n")
    return "ok"


@app.task(base=DataForgeTask, bind=True, name="ot.flaky")
def flaky(self: DataForgeTask, scheduled_task_id: int | None = None, fail: bool = False) -> str:
    """Fails when told to (``fail``), else leaves its proof like ``ot.tick``."""
    task_log("flaky", "failing" if fail else "working", self.request.id)
    if fail:
        raise RuntimeError("told to fail")
    with BODY_LOG.open("a", encoding="utf-8") as proof:
        proof.write(f"{self.request.id}\n")
    return "ok"
