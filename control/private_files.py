"""Files that hold participants' data (``integrations`` are third-party tokens): this user only.

Nothing here imports the rest of ``control``: every layer may use it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["create_private_sqlite"]


def create_private_sqlite(path: Path) -> None:
    """An SQLite database file, readable by this user only (0600, its directory 0700 when
    created here), made before SQLite opens it. SQLite gives its ``-wal`` and ``-shm`` files
    the database file's mode. An existing file (and its ``-wal``/``-shm``) is tightened too."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if name.exists():
            os.chmod(name, 0o600)
