"""The project's folder in the user's cache: ``$XDG_CACHE_HOME/backprop-bench``, else
``~/.cache/backprop-bench``. The datasets (benchmarks/datasets.py), the server's pid files
(tracking/keeper.py) and the template of new stores (tracking/template.py) live under it."""
from __future__ import annotations

import os
from pathlib import Path


def user_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path("~/.cache").expanduser(), "backprop-bench")
