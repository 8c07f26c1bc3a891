"""Print a pip constraints file pinning, at their installed versions, genrec-bench's
requirements and everything they require in turn (the ``dev`` and ``ray`` extras included).

    python scripts/freeze_constraints.py > constraints/quick.txt

Only the project's dependency closure is written, not whatever else the environment holds.
A local version label (``2.13.0+cpu``) is dropped: ``torch==2.13.0`` matches the CPU build
and the PyPI one alike.
"""

from __future__ import annotations

import platform
import re
import sys
from importlib import metadata

from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = "genrec-bench"
EXTRAS = ("dev", "ray")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(root: str = ROOT, extras: tuple[str, ...] = EXTRAS) -> dict[str, str]:
    """Installed distribution name -> version for ``root`` (with ``extras``) and its
    transitive requirements whose environment markers hold here."""
    env = default_environment()
    todo: list[tuple[str, tuple[str, ...]]] = [(root, extras)]
    done: set[tuple[str, str]] = set()        # (distribution, extra or "" for its base)
    found: dict[str, str] = {}
    while todo:
        name, want = todo.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        key = _norm(dist.metadata["Name"])
        found[key] = dist.version
        for extra in ("", *want):
            if (key, extra) in done:
                continue
            done.add((key, extra))
            for line in dist.requires or []:
                req = Requirement(line)
                if req.marker is None or req.marker.evaluate({**env, "extra": extra}):
                    todo.append((req.name, tuple(req.extras)))
    found.pop(_norm(root), None)
    return found


def main() -> int:
    pins = closure()
    print("# pip constraints: the quick preset's environment (scripts/install.sh uses this file;")
    print("# GENREC_BENCH_CONSTRAINTS=none installs without it). Written by")
    print("# scripts/freeze_constraints.py from an environment with "
          f"Python {platform.python_version()} on {sys.platform}/{platform.machine()}.")
    for name in sorted(pins):
        print(f"{name}=={pins[name].split('+')[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
