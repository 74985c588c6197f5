"""Where a prefork worker's processes write their Prometheus samples.

Kept apart from :mod:`worker.metrics` because it must run before prometheus_client is imported.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def use_multiprocess_dir(directory: Path) -> None:
    """Point PROMETHEUS_MULTIPROC_DIR at an emptied ``directory`` unless it is set already.

    Must run before prometheus_client is imported by anything in this process (hence the
    service calls it first): the client picks its value store at import time.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
