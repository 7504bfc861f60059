r"""A user's own ensemble: a single-hidden-layer net with σ(z) = cos z, written as a user
would, outside the package (``examples/07_own_ensemble_cli.py`` runs it through the CLI).

.. math::

    f(x) = \sum_{i=1}^N a_i \cos(w_i\cdot x + \beta_i) + b_1,

with the paper's parametrisation (``nngp_ppl.SingleLayerNet``: w ~ N(0, σ_W²/d_in),
β, b_1 ~ N(0, σ_b²), a ~ N(0, σ_W²/N)). For pre-activations (u, v) of variances p, q and
covariance c, E[cos u cos v] = (E cos(u+v) + E cos(u-v))/2 = e^{-(p+q)/2} cosh c, so

.. math:: K(x, y) = \sigma_b^2 + \sigma_W^2\, e^{-(m(x,x) + m(y,y))/2} \cosh m(x, y),

m(x, y) = σ_b² + σ_W² x·y/d_in. A closed form, so the vertex integrals are fast; and the
exact finite-width correlators come from the package's quadrature oracle, which needs only
the activation in NumPy (``exact_moments = "quadrature"``, ``numpy_activation``).

Saved by its import path, ``own_nets.cos_net:CosNet``: every file it writes reloads as
this class wherever ``own_nets`` is importable; no registration needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import jax.numpy as jnp
import numpy as np

from nngp_ppl import SingleLayerNet


@dataclass(frozen=True)
class CosNet(SingleLayerNet):
    name: ClassVar[str] = "cos"
    exact_moments: ClassVar[str | None] = "quadrature"
    exact_max_order: ClassVar[int] = 12

    def activation(self, z, var):
        return jnp.cos(z)

    def numpy_activation(self):
        return np.cos

    def traced_kernel(self, X, Y):
        c = self.preactivation_cov(X, Y)
        p, q = self.preactivation_var(X), self.preactivation_var(Y)
        # e^{-(p+q)/2} cosh c as two exponentials: (p+q)/2 >= sqrt(pq) >= |c|, so neither
        # exponent is positive and nothing overflows far out in a cutoff box.
        half = (p[:, None] + q[None, :]) / 2
        return self.sigma_b**2 + self.sigma_w**2 * 0.5 * (jnp.exp(c - half)
                                                          + jnp.exp(-c - half))
