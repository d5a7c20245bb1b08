"""Yardsticks: the best kernel or loop we can write for a family, timed beside the
registered implementation it judges (``python -m studies families``).

They follow the implementation contract (``impls/base.py``) but are not in the ``impls``
registry: no session, report or regression gate runs them as a row. Like the registry, this
maps names to ``"module:Class"`` strings and imports a module the first time it is asked for,
so that ``import studies.yardsticks`` costs nothing and a missing module (or backend) is a
reason, not an ImportError::

    from studies import yardsticks
    yardsticks.reason("gemm-floor")        # None, or why it cannot run here
    cls = yardsticks.get("gemm-floor")     # an impls.base.Implementation subclass
"""
from __future__ import annotations

import importlib
import importlib.util

_YARDSTICKS = {
    "homework-loop": "studies.yardsticks.homework_loop:HomeworkLoop",        # numpy-sample's
    "torch-minimal": "studies.yardsticks.torch_minimal:TorchMinimal",        # torch-cpu's
    "numba-sample-best": "studies.yardsticks.numba_sample_best:NumbaSampleBest",  # numba-sample's
    "gemm-floor": "studies.yardsticks.gemm_floor:GemmFloor",                 # every minibatch family's
}

# the preset (benchmarks/config.py) each yardstick is measured on, in the families contests
PRESETS = {"homework-loop": "hw1-q4", "torch-minimal": "hw1-q3", "numba-sample-best": "hw1-q4", "gemm-floor": "hw1-q3"}


# the kind of each yardstick: a "trainer" follows the training contract and is prepared through
# benchmarks.runner.prepare (its one-step parity checked); a "floor" runs a step's GEMMs without
# training (gemm_floor.py), so it has no parity to check and is prepared without it
KINDS = {"homework-loop": "trainer", "torch-minimal": "trainer", "numba-sample-best": "trainer", "gemm-floor": "floor"}


class UnknownYardstick(KeyError):
    def __str__(self) -> str:
        return f"unknown yardstick {self.args[0]!r}; valid names: {', '.join(_YARDSTICKS)}"


def names() -> list[str]:
    """Every yardstick name, available here or not."""
    return list(_YARDSTICKS)


def get(name: str):
    """The class of yardstick ``name``; ImportError when its module or backend is missing."""
    try:
        module, cls = _YARDSTICKS[name].split(":")
    except KeyError:
        raise UnknownYardstick(name) from None
    return getattr(importlib.import_module(module), cls)


def missing(name: str) -> str | None:
    """Why yardstick ``name`` cannot even be imported (its module is absent), found without
    importing it; None when the module exists (``reason`` then imports it and says more)."""
    module = _YARDSTICKS[name].split(":")[0]
    return None if importlib.util.find_spec(module) else f"{module} is not there (not written or not merged yet)"


def reason(name: str) -> str | None:
    """None when yardstick ``name`` can run here, else why not (its module is not written or
    merged yet, its backend is not installed, or the class says so)."""
    try:
        cls = get(name)
    except UnknownYardstick as exc:
        return str(exc)
    except ImportError as exc:
        return f"cannot import {_YARDSTICKS[name].split(':')[0]}: {exc}"
    except AttributeError:
        return f"{_YARDSTICKS[name]} does not define that class"
    return cls.unavailable_reason()
