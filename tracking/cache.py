"""The project's folder in the user's cache: ``$XDG_CACHE_HOME/backprop-bench``, else
``~/.cache/backprop-bench``. The datasets (benchmarks/datasets.py), the server's pid files
(tracking/keeper.py), the template of new stores (tracking/template.py) and the datasets'
decompressed copies (benchmarks/unzipped.py) live under it."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def user_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path("~/.cache").expanduser(), "backprop-bench")


def put(target: Path, write: Callable[[Path], None], errors: tuple[type[BaseException], ...] = (OSError,)) -> bool:
    """Keep a file in a cache, best effort: ``write(part)`` fills a part beside ``target``, which
    is then renamed into place, so that no reader sees half of one. A cache that cannot be written
    (read-only, full: ``errors``) only costs what the file would have saved, and no part is left.
    True when the file is in place."""
    part = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write(part)
        os.replace(part, target)
        return True
    except errors:
        return False
    finally:
        try:
            part.unlink(missing_ok=True)
        except OSError:                  # its folder could not be made: there is no part
            pass
