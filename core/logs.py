"""Logs as ``key=value`` lines, one format for every process."""

from __future__ import annotations

import logging
import os


def configure(process: str) -> None:
    logging.basicConfig(
        level=os.environ.get("MAAS_LOG_LEVEL", "INFO").upper(),
        format=f"%(asctime)s level=%(levelname)s process={process} logger=%(name)s %(message)s",
    )
