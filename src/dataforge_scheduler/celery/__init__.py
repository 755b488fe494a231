"""The Celery face: the task base class, the beat scheduler, signal handlers, task_log,
dispatch by name and the maintenance tasks. It translates Celery callbacks into store,
lock and log calls."""
