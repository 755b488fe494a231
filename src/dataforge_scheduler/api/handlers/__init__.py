"""The request handlers, one module per resource: ``tasks`` (schedules), ``runs`` (run
now, pause, resume, executions), ``locks``, ``misc`` (registry, preview, health, audit).
Each handler takes a ``Context`` and returns a ``Response``; the route table in
``api.app`` says which handler serves which path and method."""

from __future__ import annotations
