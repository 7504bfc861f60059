"""The authors' input sets (physics.md §9; read from github keeganstoner/nn-qft)."""

from __future__ import annotations

import numpy as np

from .._checks import NNGPInputError

__all__ = [
    "PAPER_INPUTS",
    "PAPER_WIDTHS",
    "PAPER_CUTOFFS",
    "paper_inputs",
]

_ERF_1D = [-1.0, -0.6, -0.2, 0.2, 0.6, 1.0]
_RELU_1D = [0.2, 0.4, 0.6, 0.8, 1.0, 1.2]
_CORNERS_2D = [[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]]
_RELU_2D = [[0.5, 0.5], [0.5, 1.0], [1.0, 0.5], [1.0, 1.0]]
_ERF_3D = [[-1, -1, -1], [1, 1, -1], [-1, 1, 1], [1, -1, 1]]
_RELU_3D = [[0.2, 0.2, 0.2], [1, 1, 0.2], [0.2, 1, 1], [1, 0.2, 1]]

PAPER_INPUTS: dict[tuple[str, int], list] = {
    ("erf", 1): _ERF_1D,
    ("gauss", 1): [0.01 * x for x in _ERF_1D],
    ("relu", 1): _RELU_1D,
    ("erf", 2): _CORNERS_2D,
    ("gauss", 2): [[0.01 * v for v in p] for p in _CORNERS_2D],
    ("relu", 2): _RELU_2D,
    ("erf", 3): _ERF_3D,
    ("gauss", 3): [[0.01 * v for v in p] for p in _ERF_3D],
    ("relu", 3): _RELU_3D,
}

PAPER_WIDTHS = (2, 3, 4, 5, 10, 20, 50, 100, 500, 1000)

PAPER_CUTOFFS = (7, 10, 15, 20, 30, 40, 50, 70, 100, 200, 500, 1000, 2000, 5000, 7000,
                 1e4, 2e4, 4e4, 6e4, 8e4, 1e5)


def paper_inputs(ensemble: str, d_in: int = 1) -> np.ndarray:
    """The authors' inputs for an ensemble name and input dimension, shape (k, d_in).

    The paper has inputs for Erf-, ReLU- and Gauss-nets in d_in = 1, 2, 3 only; for any
    other ensemble the error names those and the points to pass instead (the Erf-net's,
    which suit any bounded activation: ``paper_inputs("erf", d_in)``)."""
    key = (str(ensemble).lower(), int(d_in))
    if key not in PAPER_INPUTS:
        names = sorted({e for e, _ in PAPER_INPUTS})
        dims = sorted({d for _, d in PAPER_INPUTS})
        hint = "pass your own inputs X (--inputs)"
        if ("erf", int(d_in)) in PAPER_INPUTS:
            pts = np.asarray(PAPER_INPUTS["erf", int(d_in)], dtype=np.float64).reshape(
                -1, int(d_in))
            cli = ("," if int(d_in) == 1 else "; ").join(",".join(f"{v:g}" for v in p)
                                                          for p in pts)
            hint = (f"use the Erf-net's, paper_inputs('erf', d_in={int(d_in)}) (command "
                    f"line: --inputs \"{cli}\"), or {hint}")
        raise NNGPInputError(
            f"preset: the paper has inputs only for the {', '.join(names)} ensembles with "
            f"d_in in {dims}, not for {ensemble!r} with d_in={d_in}; {hint}")
    return np.asarray(PAPER_INPUTS[key], dtype=np.float64).reshape(-1, int(d_in))
