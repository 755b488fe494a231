"""The SQL room: everything that speaks SQLAlchemy.

``types`` (column types: aware UTC datetimes, JSON/JSONB, str enums), ``models``
(``ScheduledTask``, ``TaskExecution`` and their one ``metadata``), ``engine`` (fork-safe
engines for PostgreSQL and SQLite, session factories, ``ping``) and ``store`` (every SQL
statement the library runs, as functions over a ``Session``). Import from those modules;
this package module imports nothing, so loading one part never drags in the rest.
"""

from __future__ import annotations
