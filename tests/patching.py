"""Monkeypatch a function of nngp_ppl everywhere it is bound.

The package imports at module level (``from ..inference import infer_couplings``), so a
module that uses a function holds its own reference: patching the defining module alone
would not reach it. :func:`patch_everywhere` replaces the function in its module and in
every loaded nngp_ppl module (the package root included) that holds the same object.
"""

from __future__ import annotations

import sys


def patch_everywhere(monkeypatch, module, name: str, replacement) -> int:
    """Replace ``module.name`` and every other binding of the same object in nngp_ppl's
    loaded modules; the number of bindings replaced (at least 1)."""
    original = getattr(module, name)
    monkeypatch.setattr(module, name, replacement)
    n = 1
    for modname, mod in list(sys.modules.items()):
        if mod is None or mod is module or not (
                modname == "nngp_ppl" or modname.startswith("nngp_ppl.")):
            continue
        for attr, obj in list(vars(mod).items()):
            if obj is original:
                monkeypatch.setattr(mod, attr, replacement)
                n += 1
    return n
