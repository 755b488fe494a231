"""The SQL room: everything that speaks SQLAlchemy.

``types`` (column types: aware UTC datetimes, JSON/JSONB, str enums), ``models``
(``ScheduledTask``, ``TaskExecution``, ``AuditEntry`` and their one ``metadata``),
``engine`` (fork-safe engines for PostgreSQL and SQLite, session factories) and
``store`` (the statements, see its docstring). Import from those modules; this package
module imports nothing, so loading one part never drags in the rest.
"""

from __future__ import annotations
