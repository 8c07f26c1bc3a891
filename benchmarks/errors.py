"""The suite's error types: one clear message that names the file, the line or field, and
what was expected. The CLI prints ``str(error)`` and exits with status 2."""

from __future__ import annotations

from pathlib import Path


class GenrecError(Exception):
    """Base class of every error the suite raises on purpose (bad input, bad config)."""


class DataFormatError(GenrecError):
    """A data file that is missing, has a wrong header or a malformed line.

    ``str()`` reads ``<path>:<line>: expected <expected>, got <got>`` (line and got optional).
    """

    def __init__(self, path: str | Path, expected: str, *, line: int | None = None,
                 got: str | None = None, field: str | None = None):
        self.path = str(path)
        self.line = line
        self.expected = expected
        self.got = got
        self.field = field
        where = self.path if line is None else f"{self.path}:{line}"
        what = f"field {field!r}: " if field else ""
        msg = f"{where}: {what}expected {expected}"
        if got is not None:
            shown = got if len(got) <= 120 else got[:117] + "..."
            msg += f", got {shown!r}"
        super().__init__(msg)


class EmptyDatasetError(GenrecError):
    """Filtering (k-core, ratings) left no interaction behind."""


class ConfigError(GenrecError):
    """A matrix file, preset or method config with a wrong or unknown field."""


class UnknownNameError(ConfigError):
    """A method, identifier, dataset or format name that is not registered."""

    def __init__(self, kind: str, name: str, known: list[str]):
        self.kind, self.name, self.known = kind, name, sorted(known)
        super().__init__(f"unknown {kind} {name!r}; known: {', '.join(self.known) or '(none)'}")


class CheckpointError(GenrecError):
    """A model checkpoint that is neither a local folder nor a model the hub (or its local
    cache, offline) can give."""
