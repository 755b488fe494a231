"""The service's scheduled tasks, one module per area.

Nothing is imported here: the Celery app lists the modules in ``include=``, so the
worker, beat and the API process (``app.main``) import them.
"""
