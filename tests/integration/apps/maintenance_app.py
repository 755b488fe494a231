"""A Celery app for the maintenance tests: ``setup()`` alone registers the maintenance
tasks, so a worker of this app runs them by name.

``celery -A tests.integration.apps.maintenance_app worker`` reads its configuration from
the environment ``procs.service_env`` builds; the broker and result keys carry the test's
own prefix, so no other test sees its messages. ``mt.blocking`` is the run a SIGKILL
interrupts (``test_worker_sigkill``): it writes a few ``task_log`` lines, then blocks.
"""

from __future__ import annotations

import os
import time

from celery import Celery

from dataforge_scheduler.celery.task import DataForgeTask
from dataforge_scheduler.celery.tasklog import task_log
from dataforge_scheduler.settings import Settings
from dataforge_scheduler.wiring import setup

app = Celery("maintenance_app")
runtime = setup(app, Settings.from_env())
_BROKER_PREFIX = os.environ["DATAFORGE_TEST_BROKER_PREFIX"]
app.conf.broker_transport_options["global_keyprefix"] = _BROKER_PREFIX
app.conf.result_backend_transport_options["global_keyprefix"] = _BROKER_PREFIX


@app.task(base=DataForgeTask, bind=True, name="mt.blocking")
def blocking(
    self: DataForgeTask, scheduled_task_id: int | None = None, lines: int = 3, seconds: float = 120
) -> None:
    for number in range(lines):
        task_log("before the kill", number)
    time.sleep(seconds)  # until the test kills the process running it
