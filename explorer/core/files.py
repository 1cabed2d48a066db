"""Files written whole or not at all. Plain Python: no torch, no gradio."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def atomic_write(path: str | Path, write) -> None:
    """`write(tmp_path)` writes the file beside `path` under a temporary name, then it is renamed to `path`:
    a reader (or a crash) sees the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f'.{path.name}.tmp-{os.getpid()}-{threading.get_ident()}')
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
