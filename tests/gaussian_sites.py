"""The discretised Gaussian model shared by the brute-force diagram tests: the data points and
the vertex sites as one centred Gaussian vector."""

from __future__ import annotations

import numpy as np


def joint_covariance(net, X, sites, propagator: str) -> np.ndarray:
    """Covariance of (f(x_1..x_k), φ(y_1..y_s)): K among the data points; the vertex-leg
    propagator (K, or K - σ_b² for ``bias_subtracted``) wherever a site is involved."""
    Kxx = np.asarray(net.kernel(X))
    shift = net.sigma_b**2 if propagator == "bias_subtracted" else 0.0
    Kxy = np.asarray(net.kernel(X, sites)) - shift
    Kyy = np.asarray(net.kernel(sites)) - shift
    return np.block([[Kxx, Kxy], [Kxy.T, Kyy]])
