"""Process-wide logging setup: one line per record on stderr, `key=value` fields."""

from __future__ import annotations

import logging
import os


def setup(level: str = "info", role: str = "interlock") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=f"%(asctime)s %(levelname)s {role}[{os.getpid()}] %(name)s: %(message)s",
        force=True,
    )
