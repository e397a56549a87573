"""Where the service keeps what it can build again (the content model's numbers, the
broker's class archive): ``$XDG_CACHE_HOME/maas``, else ``~/.cache/maas``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "maas"
