"""Model registry: `create_model("mgca-vit-b16")` across every installed method package.

Method packages register their named configs with `@register_model(name)` in their own module, and
advertise that module through the `cxrvlp.methods` entry-point group in their pyproject, e.g.
`[project.entry-points."cxrvlp.methods"] mgca = "cxrvlp.mgca.registry"`. A method that is not installed
is simply not listed; nothing here imports a method package by name.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from cxrvlp.core.method import MethodSpec


@dataclass(frozen=True)
class ModelEntry:
    """A registered model name: the builder and what it is."""

    name: str
    method: str
    builder: Callable[..., nn.Module]
    description: str = ""
    paper_config: bool = True  # False for our variants (tiny, small real-weight backbones)


_MODELS: dict[str, ModelEntry] = {}
_LOADED = False


def register_model(
    name: str, method: str, description: str = "", paper_config: bool = True
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a model builder under `name` (builder(**overrides) -> nn.Module)."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS and _MODELS[name].builder is not fn:
            raise KeyError(f"model '{name}' is registered twice")
        _MODELS[name] = ModelEntry(name, method, fn, description, paper_config)
        return fn

    return deco


def installed_methods() -> dict[str, str]:
    """Method name -> registry module advertised in the `cxrvlp.methods` entry-point group.

    An entry whose package cannot be found (stale metadata of an uninstalled package) is left out.
    """
    found = {}
    for ep in entry_points(group="cxrvlp.methods"):
        package = ep.value.rsplit(".", 1)[0]
        try:
            if importlib.util.find_spec(package) is None:
                continue
        except ModuleNotFoundError:
            continue
        found[ep.name] = ep.value
    return found


def load_method_registries() -> list[str]:
    """Import every installed method's registry module; returns the method names found."""
    global _LOADED
    names = []
    for name, module in sorted(installed_methods().items()):
        importlib.import_module(module)
        names.append(name)
    _LOADED = True
    return names


def list_models(method: str | None = None) -> list[str]:
    """Registered model names (of one method when given)."""
    if not _LOADED:
        load_method_registries()
    return sorted(n for n, e in _MODELS.items() if method is None or e.method == method)


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry of `name`, or a KeyError listing what exists."""
    if not _LOADED:
        load_method_registries()
    if name not in _MODELS:
        raise KeyError(f"unknown model '{name}'; registered: {sorted(_MODELS)}")
    return _MODELS[name]


def check_model_name(name: str, method: str, where: str = "config") -> str:
    """`name` if it is a registered model of `method`, else a ConfigError listing that method's names."""
    from cxrvlp.core.errors import ConfigError

    names = list_models(method)
    if name not in names:
        raise ConfigError(
            f"{where}: key 'model_name': '{name}' is not a registered {method} model; one of {names}"
        )
    return name


def create_model(name: str, **overrides) -> nn.Module:
    """Build the registered model `name` with config overrides."""
    return get_model_entry(name).builder(**overrides)


def get_method(name: str) -> MethodSpec:
    """The checked `MethodSpec` of an installed method package (`cxrvlp.core.method`).

    Raises KeyError naming the installed methods when `name` is not installed, and MethodContractError
    naming the missing or broken part when its registry module does not fulfil the contract.
    """
    from cxrvlp.core.method import MethodContractError, check_method_spec

    methods = installed_methods()
    if name not in methods:
        raise KeyError(f"method '{name}' is not installed; installed: {sorted(methods)}")
    module = importlib.import_module(methods[name])
    if not hasattr(module, "METHOD_SPEC"):
        raise MethodContractError(
            f"method '{name}': {methods[name]} defines no METHOD_SPEC (see cxrvlp.core.method.MethodSpec)"
        )
    return check_method_spec(module.METHOD_SPEC, name)
