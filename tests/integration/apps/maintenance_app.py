"""A Celery app for the maintenance tests: ``setup()`` alone registers the maintenance
tasks, so a worker of this app runs them by name.

``celery -A tests.integration.apps.maintenance_app worker`` reads its configuration from
the environment ``procs.service_env`` builds; the broker and result keys carry the test's
own prefix, so no other test sees its messages. (The SIGKILL-mid-run case will add a
slow DataForgeTask here once the worker side has landed.)
"""

from __future__ import annotations

import os

from celery import Celery

from dataforge_scheduler.settings import Settings
from dataforge_scheduler.wiring import setup

app = Celery("maintenance_app")
runtime = setup(app, Settings.from_env())
_BROKER_PREFIX = os.environ["DATAFORGE_TEST_BROKER_PREFIX"]
app.conf.broker_transport_options["global_keyprefix"] = _BROKER_PREFIX
app.conf.result_backend_transport_options["global_keyprefix"] = _BROKER_PREFIX
