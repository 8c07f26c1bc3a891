"""The suite's registries by name, all three here, filled by decorators and by entry points.

| registry | decorator | built-in package(s) | entry-point group |
|---|---|---|---|
| :data:`METHODS` (recommenders the matrix runs) | ``@register_method`` | ``baselines``, ``benchmarks.methods`` | ``genrec_bench.methods`` |
| :data:`IDENTIFIERS` (item identifier schemes) | ``@register_identifier`` | ``identifiers`` | ``genrec_bench.identifiers`` |
| :data:`BACKBONES` (``t5``, ``causal``: config class + models) | ``@register_backbone`` | ``backbones`` | ``genrec_bench.backbones`` |

Built-in plugins register themselves when their module is imported; a registry imports every
module of its built-in packages the first time a name is looked up, so adding a file under
``baselines/``, ``identifiers/`` or ``backbones/`` with a decorated class is all it takes.

Third-party packages declare an entry point in their own ``pyproject.toml``::

    [project.entry-points."genrec_bench.methods"]
    my-scheme = "my_package.my_module:MyScheme"      # a class: registered under "my-scheme"
    my-plugins = "my_package.plugins"                # a module: importing it registers its classes

This module imports nothing heavy and nothing of the plugins at import time.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from importlib import metadata
from typing import Callable, TypeVar

from benchmarks.errors import ConfigError, UnknownNameError

log = logging.getLogger(__name__)
T = TypeVar("T", bound=type)


class Registry:
    """Name -> class. ``kind`` is used in messages; ``group`` is the entry-point group."""

    def __init__(self, kind: str, group: str, builtin_packages: tuple[str, ...]):
        self.kind = kind
        self.group = group
        self.builtin_packages = builtin_packages
        self._classes: dict[str, type] = {}
        self._origin: dict[str, str] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator: ``@REGISTRY.register("name")``; sets ``cls.name``."""
        def deco(cls: T) -> T:
            self.add(name, cls, origin=cls.__module__)
            return cls
        return deco

    def add(self, name: str, cls: type, origin: str = "") -> None:
        if name in self._classes and self._classes[name] is not cls:
            raise ConfigError(f"{self.kind} {name!r} registered twice: {self._origin[name]} "
                              f"and {origin or cls.__module__}")
        cls.name = name
        self._classes[name] = cls
        self._origin[name] = origin or cls.__module__

    def load(self) -> None:
        """Import the built-in plugin modules and the entry points (once)."""
        if self._loaded:
            return
        self._loaded = True
        for pkg_name in self.builtin_packages:
            pkg = importlib.import_module(pkg_name)
            for mod in pkgutil.iter_modules(pkg.__path__):
                if not mod.name.startswith("_"):
                    importlib.import_module(f"{pkg_name}.{mod.name}")
        for ep in metadata.entry_points(group=self.group):
            try:
                obj = ep.load()
            except Exception as exc:  # a broken third-party plugin must not break the suite
                log.warning("entry point %s = %s (group %s) failed to load: %s",
                            ep.name, ep.value, self.group, exc)
                continue
            if isinstance(obj, type) and ep.name not in self._classes:
                self.add(ep.name, obj, origin=f"entry point {ep.value}")

    def get(self, name: str) -> type:
        self.load()
        if name not in self._classes:
            raise UnknownNameError(self.kind, name, list(self._classes))
        return self._classes[name]

    def names(self) -> list[str]:
        self.load()
        return sorted(self._classes)

    def origin(self, name: str) -> str:
        self.load()
        return self._origin[name]

    def __contains__(self, name: str) -> bool:
        self.load()
        return name in self._classes


def config_class(registry: Registry, name: str, field: str) -> type:
    """``registry``'s class ``name``'s ``Config``, for the config ``field`` that names it (a
    method's ``identifier`` or ``backbone``): an unknown name is a ConfigError naming the field."""
    try:
        return registry.get(name).Config
    except ConfigError as exc:
        raise ConfigError(f"field {field!r}: {exc}") from None


#: recommenders the matrix runs: traditional baselines and generative methods
METHODS = Registry("method", "genrec_bench.methods", ("baselines", "benchmarks.methods"))
register_method = METHODS.register

#: item identifier schemes (:class:`identifiers.base.IdentifierScheme` subclasses)
IDENTIFIERS = Registry("identifier", "genrec_bench.identifiers", ("identifiers",))
register_identifier = IDENTIFIERS.register

#: generative backbones (:class:`backbones.base.Backbone` subclasses: a config dataclass and
#: the models built from it), chosen by a method config's ``backbone`` field
BACKBONES = Registry("backbone", "genrec_bench.backbones", ("backbones",))
register_backbone = BACKBONES.register
