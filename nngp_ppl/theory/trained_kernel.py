r"""The trained covariance :math:`\Sigma_t(x, y)` as a propagator: a net-like view of the
infinite-width oracle of gradient-descent training at any points.

:func:`nngp_ppl.theory.ntk.training_oracle` gives the mean and covariance of the trained
ensemble at N → ∞ on a fixed set of test inputs. Expanding the trained ensemble around its
learned 1-pt function (docs/physics.md §6b, the centred convention) needs the covariance as
the propagator of the vertex legs, i.e. at the lattice points :math:`y` of the cutoff box,
traced by JAX like an ensemble's kernel. With the same conventions (discrete-step form of
Lee et al. 2019, "Wide neural networks of any depth evolve as linear models under gradient
descent", §2.2; loss :math:`\frac{1}{2n}\sum_i (f(X_i) - Y_i)^2`, learning rate η, n
training points :math:`X`):

.. math:: M_t = \tfrac{\eta}{n}\sum_{s<t}\big(1 - \tfrac{\eta}{n}\Theta_{XX}\big)^s
    = V\,\mathrm{diag}\Big(\frac{1 - (1 - \eta\lambda_i/n)^t}{\lambda_i}\Big) V^T ,\qquad
    B_t(x) = \Theta(x, X)\, M_t ,

.. math:: \mu_t(x) = B_t(x)\, Y ,\qquad
    \Sigma_t(x, y) = K(x, y) - B_t(x) K(X, y) - K(x, X) B_t(y)^T + B_t(x) K_{XX} B_t(y)^T .

:math:`M_t` depends on the training set only and is computed once in NumPy (float64);
:math:`\Theta(x, X)`, :math:`K(x, X)` and :math:`K(x, y)` are the closed forms of
:mod:`nngp_ppl.theory.ntk` written in ``jax.numpy`` (single hidden layer,
:math:`\Theta = K + \sigma_W^2 \dot E\, m`; erf, ReLU and Gauss-net in closed form; any other
activation through the same quadrature as its kernel, via ``jax.pure_callback``: traceable,
not differentiable in x, as :class:`~nngp_ppl.ActivationNet`'s kernel). At t = 0,
:math:`\Sigma_0 = K` and :math:`\mu_0 = 0`. ``tests/test_training_flow.py`` checks
:meth:`TrainedKernel.traced_kernel` and :meth:`TrainedKernel.mean` against
``training_oracle`` to 1e-10 and step 0 against the ensemble's kernel.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from .. import _checks
from .._checks import NNGPInputError
from ..ensembles.activations import ERF, RELU
from ..ensembles.core import (
    Ensemble,
    ErfNet,
    GaussNet,
    ReLUNet,
    SingleLayerNet,
    ensemble_from_dict,
    register_ensemble,
)
from .ntk import check_parametrisation, layer_maps, ntk_and_nngp, step_sum

__all__ = ["TrainedKernel", "traced_layer_maps", "traced_ntk_and_nngp"]


def _erf_dpair(a, b, c):
    det = jnp.clip((1.0 + 2.0 * a) * (1.0 + 2.0 * b) - 4.0 * c * c, 1e-300, None)
    return (4.0 / jnp.pi) / jnp.sqrt(det)


def _relu_dpair(a, b, c):
    norm = jnp.sqrt(jnp.clip(a * b, 0.0, None))
    cos = jnp.clip(c / jnp.where(norm > 0, norm, 1.0), -1.0, 1.0)
    return jnp.where(norm > 0, (jnp.pi - jnp.arccos(cos)) / (2.0 * jnp.pi), 0.0)


def _gauss_pair(a, b, c):
    return jnp.exp(c - (a + b) / 2.0)


def _callback_pair(numpy_pair):
    """A NumPy E[..](a, b, c) as a traceable function (``jax.pure_callback``)."""

    def pair(a, b, c):
        a, b, c = jnp.broadcast_arrays(a, b, c)
        shape = jax.ShapeDtypeStruct(a.shape, jnp.float64)

        def call(a, b, c):
            return np.asarray(numpy_pair(np.asarray(a), np.asarray(b), np.asarray(c)),
                              np.float64).reshape(np.shape(a))

        return jax.pure_callback(call, shape, a, b, c, vmap_method="broadcast_all")

    return pair


def traced_layer_maps(net):
    """``(pair, dpair)``: E[σσ'] and E[σ'σ'] of (a, b, c) in ``jax.numpy`` (traceable)."""
    if isinstance(net, ErfNet):
        return ERF.pair, _erf_dpair  # the record's E[σσ'] is already jax.numpy
    if isinstance(net, ReLUNet):
        return RELU.pair, _relu_dpair
    if isinstance(net, GaussNet):
        return _gauss_pair, _gauss_pair
    pair, dpair = layer_maps(net)  # refuses what has no NTK
    return _callback_pair(pair), _callback_pair(dpair)


def traced_ntk_and_nngp(net, X, Y, *, parametrisation: str = "ntk", width=None):
    r"""``(Θ(X, Y), K(X, Y))`` on ``jnp`` arrays (n, d_in), (m, d_in): the formulas of
    :func:`nngp_ppl.theory.ntk.ntk_and_nngp` for a single hidden layer, traceable."""
    pair, dpair = traced_layer_maps(net)
    sb2, sw2 = float(net.sigma_b) ** 2, float(net.sigma_w) ** 2
    d = net.d_in
    dot = X @ Y.T
    m = sb2 + sw2 * dot / d
    vx = (sb2 + sw2 * jnp.sum(X * X, 1) / d)[:, None] + jnp.zeros_like(m)
    vy = (sb2 + sw2 * jnp.sum(Y * Y, 1) / d)[None, :] + jnp.zeros_like(m)
    E, dE = pair(vx, vy, m), dpair(vx, vy, m)
    if parametrisation == "standard":
        return 1.0 + width * E + sw2 * dE * (1.0 + dot), sb2 + sw2 * E
    K = sb2 + sw2 * E
    return K + sw2 * dE * m, K


@register_ensemble
@dataclass(frozen=True)
class TrainedKernel(Ensemble):
    r"""The infinite-width trained ensemble after ``step`` gradient-descent steps, as a
    propagator (module docstring): :meth:`traced_kernel` is :math:`\Sigma_t(x, y)` and
    :meth:`mean` is :math:`\mu_t(x)`, at any points.

    It implements the ensemble protocol's kernel side (``traced_kernel``, ``kernel``,
    ``d_in``, ``to_dict``, ``kernel_length_scale``, ``kernel_growth``), so the diagram
    and vertex-integral code takes it where it takes a network ensemble; it draws no
    networks (:meth:`network_outputs` refuses). Build it with :meth:`build` (validated),
    e.g. ``TrainedKernel.build(net, x_train, y_train, step=100, learning_rate=0.5)``.
    """

    net: Ensemble | None = None
    x_train: tuple = ()
    y_train: tuple = ()
    step: int = 0
    learning_rate: float = 0.0
    parametrisation: str = "ntk"
    width: int | None = None

    name: ClassVar[str] = "trained_kernel"

    def __post_init__(self):
        if not isinstance(self.net, Ensemble) or isinstance(self.net, TrainedKernel):
            raise NNGPInputError(f"net must be a network ensemble, got {type(self.net).__name__}")
        object.__setattr__(self, "d_in", self.net.d_in)

    @classmethod
    def build(cls, net, x_train, y_train, step: int, learning_rate: float, *,
              parametrisation: str = "ntk", width: int | None = None) -> TrainedKernel:
        """Validated constructor (each argument refused with a message naming it)."""
        if not isinstance(net, SingleLayerNet) or isinstance(net, TrainedKernel):
            raise NNGPInputError(
                f"net must be a single-layer ensemble (ErfNet, ReLUNet, GaussNet, "
                f"ActivationNet): the trained covariance uses their NTK; got "
                f"{type(net).__name__}")
        if not net.zero_mean:
            raise NNGPInputError("net: the NTK oracle of training (nngp_ppl.theory.ntk) "
                                 "holds for zero weight and bias means")
        x = _checks.inputs("x_train", x_train, net.d_in)
        y = np.asarray(y_train, np.float64).reshape(-1)
        if len(y) != len(x) or not np.all(np.isfinite(y)):
            raise NNGPInputError(f"y_train must be {len(x)} finite numbers (one per x_train "
                                 f"row), got {y.shape[0]} values")
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise NNGPInputError(f"step must be a non-negative integer, got {step!r}")
        lr = _checks.finite_float("learning_rate", learning_rate, minimum=0.0)
        parametrisation = check_parametrisation(parametrisation)
        if parametrisation == "standard":
            width = _checks.positive_int("width", width)
        else:
            width = None
        return cls(net=net, x_train=tuple(tuple(float(v) for v in p) for p in x),
                   y_train=tuple(float(v) for v in y), step=int(step), learning_rate=lr,
                   parametrisation=parametrisation, width=width)

    # --- the fixed matrices ------------------------------------------------------------
    @functools.cached_property
    def _fixed(self):
        """(X_train, Y, M_t, K_XX) as float64 NumPy arrays (module docstring)."""
        x = np.asarray(self.x_train, np.float64)
        y = np.asarray(self.y_train, np.float64)
        # Fixed numbers, also when first asked for inside a traced (jitted) function.
        with jax.ensure_compile_time_eval():
            theta, K = ntk_and_nngp(self.net, x, parametrisation=self.parametrisation,
                                    width=self.width)
        lam, V = np.linalg.eigh((theta + theta.T) / 2)
        lam = np.clip(lam, 0.0, None)
        M = (V * step_sum(lam, self.learning_rate / len(y), self.step)) @ V.T
        return x, y, M, K

    def _B(self, X):
        x, _, M, _ = self._fixed
        theta, K = traced_ntk_and_nngp(self.net, X, jnp.asarray(x),
                                       parametrisation=self.parametrisation, width=self.width)
        return theta @ jnp.asarray(M), K

    # --- the protocol --------------------------------------------------------------------
    def traced_kernel(self, X, Y):
        r""":math:`\Sigma_t(X, Y)` on ``jnp`` arrays (n, d_in), (m, d_in) -> (n, m)."""
        _, _, _, Kxx = self._fixed
        Bx, Kx = self._B(X)
        By, Ky = self._B(Y)
        K = traced_ntk_and_nngp(self.net, X, Y, parametrisation=self.parametrisation,
                                width=self.width)[1]
        return K - Bx @ Ky.T - Kx @ By.T + Bx @ jnp.asarray(Kxx) @ By.T

    def traced_mean(self, X):
        r""":math:`\mu_t(X) = B_t(X)\, Y` on a ``jnp`` array (n, d_in) -> (n,)."""
        _, y, _, _ = self._fixed
        return self._B(X)[0] @ jnp.asarray(y)

    def mean(self, X) -> np.ndarray:
        r""":math:`\mu_t(x)` at the rows of ``X``, NumPy (n,)."""
        X = _checks.inputs("X", X, self.d_in)
        return np.asarray(self.traced_mean(jnp.asarray(X)), np.float64)

    def network_outputs(self, keys, X, width: int, dtype=jnp.float32):
        raise NNGPInputError("a TrainedKernel is the infinite-width oracle's covariance, a "
                             "propagator; it draws no networks (train them with "
                             "nngp_ppl.training.trainer.train_correlators)")

    def kernel_length_scale(self) -> float:
        return self.net.kernel_length_scale()

    def kernel_growth(self, propagator: str = "full") -> float | None:
        r"""The trained net's kernel growth: :math:`\Sigma_t - K` is a finite sum of
        products of :math:`\Theta(y, X)` and :math:`K(y, X)`, which grow no faster than K
        for the single-layer nets (all tend to constants or grow like |y| together)."""
        if propagator != "full":
            raise NNGPInputError("propagator: a trained covariance has no exactly Gaussian "
                                 "constant part to subtract (the output bias is trained); "
                                 "use propagator='full'")
        return self.net.kernel_growth("full")

    # --- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"ensemble": self.name, "net": self.net.to_dict(),
                "x_train": [list(p) for p in self.x_train], "y_train": list(self.y_train),
                "step": self.step, "learning_rate": self.learning_rate,
                "parametrisation": self.parametrisation, "width": self.width}

    @classmethod
    def from_description(cls, d: dict):
        return cls.build(ensemble_from_dict(d["net"]), d["x_train"], d["y_train"],
                         int(d["step"]), float(d["learning_rate"]),
                         parametrisation=d.get("parametrisation", "ntk"),
                         width=d.get("width"))

    def describe(self) -> str:
        return (f"trained covariance Sigma_t of {self.net.describe()} after {self.step} GD "
                f"steps (learning rate {self.learning_rate:g}, {len(self.y_train)} training "
                f"points, {self.parametrisation} parametrisation)")

    def at_step(self, step: int) -> TrainedKernel:
        """The same training at another step."""
        return dataclasses.replace(self, step=int(step))
