"""A parameter grid split between the tiers (pyproject.toml): the rows a predicate picks stay in
the fast tier (``tox -e quick``), every other row is marked ``integration``, which the default
tier still runs. So a big matrix keeps a representative, fast cover in the fast tier and loses
nothing in the default tier."""
from __future__ import annotations

import itertools

import pytest


def grid(fast, slow=None, **axes):
    """``@pytest.mark.parametrize(*grid(fast, name=[...], dtype=[...]))``: every combination
    of the axes, in the order given, with the ids stacked ``parametrize`` decorators give
    (``numpy-batch-float64``); an axis given as a dict is named by its keys. A row for which
    ``fast(**row)`` is false is marked integration; one for which ``slow(**row)`` is true is
    marked slow (``pytest -m slow``: out of the default tier too)."""
    named = [axis if isinstance(axis, dict) else {str(v): v for v in axis} for axis in axes.values()]
    rows = []
    for ids in itertools.product(*named):
        values = [axis[i] for axis, i in zip(named, ids)]
        row = dict(zip(axes, values))
        marks = (pytest.mark.slow,) if slow is not None and slow(**row) else () if fast(**row) else (pytest.mark.integration,)
        rows.append(pytest.param(*values, id="-".join(ids), marks=marks))
    return ",".join(axes), rows
