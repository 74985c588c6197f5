"""Turn a `pip install --dry-run --report` into pinned requirements, leaving some packages out.

The Makefile uses it to install torch without triton (TORCH=lean): pip has no way to skip one
dependency of a package, so it resolves everything once, drops the named packages and installs
the rest with ``--no-deps``. The project itself is left out too (it is installed editable).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned(report: dict[str, object], *, without: set[str]) -> list[str]:
    """The ``name==version`` lines of a pip install report, except ``without`` and editables."""
    lines = []
    for item in report["install"]:  # type: ignore[attr-defined]
        metadata = item["metadata"]
        name = _canonical(metadata["name"])
        if name in without or item.get("download_info", {}).get("dir_info", {}).get("editable"):
            continue
        lines.append(f"{name}=={metadata['version']}")
    return sorted(lines)


def main() -> int:
    """Print the pinned requirements of the report named on the command line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("report", type=Path)
    parser.add_argument("--without", action="append", default=[], help="a package to leave out")
    args = parser.parse_args()
    report = json.loads(args.report.read_text())
    without = {_canonical(name) for name in args.without}
    print("\n".join(pinned(report, without=without)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
