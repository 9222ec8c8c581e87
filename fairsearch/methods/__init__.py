"""The training methods, one file each.

Each module here defines ``METHOD`` (:class:`~fairsearch.methods.base.Method`): its name, the parameters
it samples with their bounds and default ranges, and its loss. :data:`METHODS` is found from the files,
so adding a method is adding a file: the space file's checks and sampler, the trial and the report read
the registry.

Layer: above ``judge`` (whose math the losses use), below ``spec`` (which names the methods and checks
their parameters). It must not import ``spec``, ``train``, ``output``, ``search`` or ``cli``, nor Ray or
transformers.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any

from fairsearch.errors import FairsearchError
from fairsearch.methods.base import Loss, Method, Order, Parameter, StatefulLoss, TrainingGroups

__all__ = [
    "METHODS",
    "METHOD_PARAMETERS",
    "Loss",
    "Method",
    "Order",
    "Parameter",
    "StatefulLoss",
    "TrainingGroups",
    "method_named",
]


def _discover() -> dict[str, Method]:
    """Every ``METHOD`` of this package's modules, in their :attr:`~Method.order`."""
    found: list[Method] = []
    for info in pkgutil.iter_modules(__path__):
        if info.name == "base" or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        method = getattr(module, "METHOD", None)
        if not isinstance(method, Method):
            raise TypeError(f"{module.__name__} defines no METHOD = Method(...)")
        found.append(method)
    found.sort(key=lambda m: (m.order, m.name))
    names = [m.name for m in found]
    if len(set(names)) != len(names):
        raise TypeError(f"two methods share a name: {names}")
    return {m.name: m for m in found}


def _parameters(methods: Mapping[str, Method]) -> dict[str, Parameter]:
    """Every method parameter by name; methods that share one (``lam`` in ``fr`` and ``hybrid``) must
    declare it alike."""
    out: dict[str, Parameter] = {}
    for method in methods.values():
        for p in method.parameters:
            if out.setdefault(p.name, p) != p:
                raise TypeError(f"methods declare parameter {p.name!r} differently: {out[p.name]} and {p}")
    return out


METHODS: Mapping[str, Method] = _discover()
"""The methods by name, in the order the report and error messages list them."""

METHOD_PARAMETERS: Mapping[str, Parameter] = _parameters(METHODS)
"""The settings that only some methods read, by name: sampled only for the methods that use them."""


def method_named(name: Any) -> Method:
    """The registry entry of a method.

    Raises:
        FairsearchError: ``method: 'grr' is not one of ['vanilla', 'fr', 'gr', 'hybrid', ...]``.
    """
    method = METHODS.get(name) if isinstance(name, str) else None
    if method is None:
        raise FairsearchError(f"method: {name!r} is not one of {list(METHODS)}")
    return method
