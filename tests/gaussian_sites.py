"""The discretised Gaussian model shared by the brute-force diagram tests: the data points and
the vertex sites as one centred Gaussian vector."""

from __future__ import annotations

from functools import cache

import numpy as np


def joint_covariance(net, X, sites, propagator: str) -> np.ndarray:
    """Covariance of (f(x_1..x_k), φ(y_1..y_s)): K among the data points; the vertex-leg
    propagator (K, or K - σ_b² for ``bias_subtracted``) wherever a site is involved."""
    Kxx = np.asarray(net.kernel(X))
    shift = net.sigma_b**2 if propagator == "bias_subtracted" else 0.0
    Kxy = np.asarray(net.kernel(X, sites)) - shift
    Kyy = np.asarray(net.kernel(sites)) - shift
    return np.block([[Kxx, Kxy], [Kxy.T, Kyy]])


def moment_function(cov: np.ndarray):
    """<Π_i φ_i^{c_i}> of a centred Gaussian vector with covariance ``cov``, for a count
    vector c: the Isserlis recursion, pairing the first leg with each other leg (a full Wick
    sum, no diagrams involved: the brute force the diagram engines are checked against)."""
    V = cov.shape[0]

    @cache
    def moment(counts: tuple[int, ...]) -> float:
        total = sum(counts)
        if total == 0:
            return 1.0
        if total % 2:
            return 0.0
        i = next(j for j in range(V) if counts[j])
        c = list(counts)
        c[i] -= 1
        out = 0.0
        for j in range(V):
            if c[j]:
                d = c.copy()
                d[j] -= 1
                out += c[j] * cov[i, j] * moment(tuple(d))
        return out

    return moment


def poly_mul(p, q):
    """Product of two polynomials stored as {exponent tuple: coefficient}."""
    out = {}
    for a, ca in p.items():
        for b, cb in q.items():
            key = tuple(x + y for x, y in zip(a, b, strict=True))
            out[key] = out.get(key, 0.0) + ca * cb
    return out


def poly_add(*ps):
    """Sum of polynomials stored as {exponent tuple: coefficient}."""
    out = {}
    for p in ps:
        for a, c in p.items():
            out[a] = out.get(a, 0.0) + c
    return out
