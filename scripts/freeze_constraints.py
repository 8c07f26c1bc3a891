"""Print a pip constraints file pinning, at their installed versions, genrec-bench's
requirements and everything they require in turn, every extra of pyproject.toml included
(``dev``, ``ray``, ``faiss`` ...).

    python scripts/freeze_constraints.py > constraints/quick.txt

The project's own requirements are read from the checkout's ``pyproject.toml`` (the installed
``genrec-bench`` metadata is as old as its last ``pip install -e``), what they require in turn
from the installed distributions. Only that closure is written, not whatever else the
environment holds; a requirement that is not installed is named on stderr and left unpinned.
A local version label (``2.13.0+cpu``) is dropped: ``torch==2.13.0`` matches the CPU build and
the PyPI one alike.
"""

from __future__ import annotations

import platform
import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def project_requirements(pyproject: Path = PYPROJECT) -> list[str]:
    """The ``[project]`` dependencies and those of every optional-dependencies extra."""
    try:
        import tomllib
    except ImportError:
        raise SystemExit("freeze_constraints: needs Python >= 3.11 (tomllib) to read pyproject.toml") from None
    try:
        project = tomllib.loads(pyproject.read_text())["project"]
    except (OSError, tomllib.TOMLDecodeError, KeyError) as exc:
        raise SystemExit(f"freeze_constraints: {pyproject}: expected a pyproject.toml with a [project] table ({exc})")
    reqs = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    return reqs


def closure(requirements: list[str]) -> tuple[dict[str, str], list[str]]:
    """(installed distribution name -> version for ``requirements`` and their transitive
    requirements whose environment markers hold here, the names not installed)."""
    env = default_environment()
    todo: list[tuple[str, tuple[str, ...]]] = []
    for line in requirements:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({**env, "extra": ""}):
            todo.append((req.name, tuple(req.extras)))
    done: set[tuple[str, str]] = set()        # (distribution, extra or "" for its base)
    found: dict[str, str] = {}
    missing: set[str] = set()
    while todo:
        name, want = todo.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing.add(_norm(name))
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
    return found, sorted(missing - set(found))


def main() -> int:
    pins, missing = closure(project_requirements())
    for name in missing:
        print(f"freeze_constraints: {name} is required but not installed here: left unpinned", file=sys.stderr)
    print("# pip constraints: the quick preset's environment (scripts/install.sh uses this file;")
    print("# GENREC_BENCH_CONSTRAINTS=none installs without it). Written by")
    print("# scripts/freeze_constraints.py from an environment with "
          f"Python {platform.python_version()} on {sys.platform}/{platform.machine()}.")
    for name in sorted(pins):
        print(f"{name}=={pins[name].split('+')[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
