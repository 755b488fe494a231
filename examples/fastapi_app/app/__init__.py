"""fastapi_app: an example host service using dataforge-scheduler.

Laid out like a typical ``backend/app``: ``config.py`` (settings), ``celery_app.py``
(the Celery app, set up by ``dataforge_scheduler.setup``), ``tasks/`` (the scheduled
tasks), ``web.py`` (the FastAPI app factory) and ``main.py`` (what uvicorn serves).
"""
