"""The pure core: enums, the clock, triggers, the run context and the ports.

Nothing here talks to a database, Redis or Celery; every other room builds on it.
"""
