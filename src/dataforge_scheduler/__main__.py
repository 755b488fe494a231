"""``python -m dataforge_scheduler``: the same as the ``dataforge-scheduler`` command."""

from __future__ import annotations

import sys

from dataforge_scheduler.cli import main

sys.exit(main())
