"""Writing files that other processes read while they are written.

Task processes, the DAG processor and ``dbtflow run`` on one machine read the same caches, DAG
files and markers under ``$DBTFLOW_HOME``; a reader must never see half a file. This lives in no
package of its own concern because project caches, the runner and the state code all use it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file so that readers see either the old or the new content, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
