"""The library's Alembic revisions, one file each, on the ``dataforge`` branch.

Alembic loads these files by path (it skips this one); the package marker only lets
type checkers and the wheel treat them as ordinary modules. Revisions never import the
library's models: each one is a frozen picture of the schema at its point in history.
"""

from __future__ import annotations
