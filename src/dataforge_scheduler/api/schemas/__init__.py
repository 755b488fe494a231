"""The pydantic models of every request and response the API speaks.

``common`` (errors, paging), ``tasks`` (schedules: create, update, read, list),
``runs`` (run now, executions, locks) and ``misc`` (registry, preview, health, audit).
The OpenAPI document is generated from these models, so they are the contract.
"""

from __future__ import annotations
