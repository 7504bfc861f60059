"""The operator basis a study's posteriors fit: the ``[infer]`` table of a TOML study.

The Wilsonian recipe (physics.md §6d): declare the symmetries, bound the operators'
dimension, keep every operator up to that dimension that respects them. A study asks for
it per study (``[infer]``) or per run (``[run.infer]``, which wins)::

    [infer]
    max_dimension = 6          # every local f^k, 3 <= k <= 6, respecting the symmetry
    symmetry = "z2"            # "z2" (f -> -f: even operators only) or "none"; default:
                               # the run's declared symmetries (z2 if declared, else none)
    # or, instead of max_dimension:
    couplings = ["g3", "lambda"]

The result is a validated fit basis (:func:`nngp_ppl.inference.problem.basis`,
:func:`nngp_ppl.inference.problem.coupling_names`: nested by expected size, λ always present), which
the run's inference stage fits; its ELPD table ranks every nested basis the conditioned
orders hold (:func:`nngp_ppl.inference.couplings.model_bases`). A basis with odd couplings
makes the run sample the odd orders (and so gives it a symmetry stage). Default:
``("lambda",)``, the paper's; a study run with non-zero means (fitted centred) defaults to
``basis(4)`` = (g3, λ), or ``basis(4, "z2")`` = (λ,) where it declares z2
(:mod:`nngp_ppl.study.spec`).

The derivative operator g∂ = f²(∂f)² (:mod:`nngp_ppl.theory.derivative`) is not in the
basis of a dimension: the package counts an operator's dimension as its legs plus its
derivatives (:attr:`nngp_ppl.theory.operators.Operator.dimension`), so f²(∂f)² has
dimension 6 and would join κ in ``max_dimension = 6``; but it has first-order diagrams only
(no second order, no lattice density, no vertex integrals in the posterior's design), and
by ELPD it earns no robust place beside λ (physics.md §6c: its design is 94–96% collinear
with λ's). ``couplings = ["gd", ...]`` is refused by the fit layer with its message.
"""

from __future__ import annotations

from .._checks import NNGPInputError
from .problem import basis, coupling_names, odd_couplings

#: Keys of an ``[infer]`` table.
INFER_KEYS = ("couplings", "max_dimension", "symmetry")
#: Values of ``symmetry``.
SYMMETRY_VALUES = ("z2", "none")


def infer_basis(table, where: str, declared=()) -> tuple[str, ...]:
    """The fit basis of an ``[infer]`` table (module docstring), checked where it enters.

    ``table``: the parsed TOML table (or None: the default ``("lambda",)``); ``where``:
    the file and key the messages name; ``declared``: the run's declared symmetries (the
    default of ``symmetry``, and a declared z2 refuses odd ``couplings``). Raises
    :class:`~nngp_ppl.NNGPInputError` with one message naming the key and what is allowed.
    """
    if table is None:
        return ("lambda",)
    if not isinstance(table, dict):
        raise NNGPInputError(f"{where} must be a table with keys {list(INFER_KEYS)}, got "
                             f"{table!r}")
    unknown = sorted(set(table) - set(INFER_KEYS))
    if unknown:
        raise NNGPInputError(f"{where}: unknown key {unknown[0]!r} (allowed: "
                             f"{', '.join(INFER_KEYS)})")
    if "couplings" in table and ("max_dimension" in table or "symmetry" in table):
        raise NNGPInputError(f"{where}: give either couplings or max_dimension (with "
                             f"symmetry), not both")
    if "couplings" in table:
        value = table["couplings"]
        if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
            raise NNGPInputError(f"{where}.couplings must be a list of coupling names, e.g. "
                                 f'["g3", "lambda"], got {value!r}')
        names = coupling_names(value, name=f"{where}.couplings")
        odd = odd_couplings(names)
        if odd and "z2" in declared:
            raise NNGPInputError(
                f"{where}.couplings holds {', '.join(odd)}, odd under f -> -f, which the run "
                f"declares (symmetries = [\"z2\"]): a declared symmetry prunes the basis; "
                f"drop the declaration or the odd couplings")
        return names
    if "max_dimension" not in table:
        raise NNGPInputError(f"{where} must give couplings or max_dimension")
    k = table["max_dimension"]
    if isinstance(k, bool) or not isinstance(k, int):
        raise NNGPInputError(f"{where}.max_dimension must be an integer 4, 5 or 6, got {k!r}")
    sym = table.get("symmetry", "z2" if "z2" in declared else "none")
    if sym not in SYMMETRY_VALUES:
        raise NNGPInputError(f"{where}.symmetry must be one of {list(SYMMETRY_VALUES)} "
                             f"(z2: f -> -f), got {sym!r}")
    try:
        return basis(k, None if sym == "none" else sym)
    except NNGPInputError as err:
        raise NNGPInputError(f"{where}.{err}") from None


__all__ = ["INFER_KEYS", "SYMMETRY_VALUES", "infer_basis"]
