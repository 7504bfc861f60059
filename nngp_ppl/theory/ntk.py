r"""The neural tangent kernel and the infinite-width oracle of gradient-descent training.

Parametrisations (:mod:`nngp_ppl.training.trainer` trains in both)
---------------------------------------------------------
A single-layer ensemble (physics.md §1) is :math:`f(x) = \sum_i a_i \sigma(w_i\cdot x +
\beta_i) + b_1`. In the **NTK parametrisation** (Jacot, Gabriel, Hongler 2018) the trained
parameters are standard normals :math:`\omega, \eta` and the scales sit in the forward pass,

.. math:: w_i = \mu_W + \tfrac{\sigma_W}{\sqrt{d_{in}}}\,\omega^{(0)}_i,\quad
    \beta_i = \mu_b + \sigma_b\,\eta^{(0)}_i,\quad
    a_i = \mu_W + \tfrac{\sigma_W}{\sqrt N}\,\omega^{(1)}_i,\quad
    b_1 = \mu_b + \sigma_b\,\eta^{(1)};

in the **standard parametrisation** the trained parameters are :math:`w, \beta, a, b_1`
themselves. Both draw the same networks; only the gradient differs.

The NTK of a single hidden layer (derived)
------------------------------------------
:math:`\Theta(x, y) = \sum_p \partial_p f(x)\, \partial_p f(y)`. With :math:`z_i(x) = w_i
\cdot x + \beta_i`, :math:`h_i = \sigma(z_i)`, zero means and the NTK parametrisation:

* readout, :math:`\partial f/\partial\omega^{(1)}_i = \tfrac{\sigma_W}{\sqrt N} h_i(x)`,
  :math:`\partial f/\partial\eta^{(1)} = \sigma_b`: their sum is :math:`\sigma_b^2 +
  \tfrac{\sigma_W^2}{N}\sum_i h_i(x) h_i(y) \to \sigma_b^2 + \sigma_W^2 E[\sigma(z)
  \sigma(z')] = K(x, y)`, the NNGP kernel;
* input layer, :math:`\partial f/\partial\omega^{(0)}_{i\alpha} = a_i \sigma'(z_i(x))
  \tfrac{\sigma_W}{\sqrt{d_{in}}} x_\alpha`, :math:`\partial f/\partial\eta^{(0)}_i = a_i
  \sigma'(z_i(x))\sigma_b`: their sum is :math:`\sum_i a_i^2 \sigma'(z_i(x))\sigma'(z_i(y))
  \, m(x, y)`, and :math:`N E[a^2] = \sigma_W^2`, so it tends to :math:`\sigma_W^2
  E[\sigma'(z)\sigma'(z')]\, m(x, y)` with :math:`m = \sigma_b^2 + \sigma_W^2 x\cdot y/d_{in}`
  the pre-activation covariance.

.. math:: \Theta(x, y) = K(x, y) + \sigma_W^2\, \dot E(x, y)\, m(x, y),\qquad
    \dot E = E[\sigma'(z)\sigma'(z')],\ (z, z') \sim \mathcal N(0, [[m_{xx}, m_{xy}],
    [m_{xy}, m_{yy}]]).

Closed forms of :math:`\dot E` (variances a, b, covariance c):
erf, :math:`\sigma' = \tfrac{2}{\sqrt\pi} e^{-z^2}`: :math:`\tfrac{4}{\pi}
E[e^{-z^2-z'^2}] = \tfrac{4}{\pi}\det(1 + 2\Sigma)^{-1/2} = \tfrac{4}{\pi}
((1+2a)(1+2b) - 4c^2)^{-1/2}`; ReLU, :math:`\sigma' = 1_{z>0}`: :math:`P(z>0, z'>0) =
(\pi - \theta)/(2\pi)`, :math:`\cos\theta = c/\sqrt{ab}` (Sheppard); Gauss-net,
:math:`\sigma = \sigma' = e^{z - v}`: :math:`e^{c - (a+b)/2}`. Any other activation:
:func:`nngp_ppl.ensembles.quadrature.pair_expectation` of :math:`\sigma'` (from ``jax.grad``).

In the standard parametrisation the same sums give, at width N (not a limit: the readout
term grows like N, and a fixed learning rate must shrink like 1/N for a limit to exist),
:math:`\Theta_N = 1 + N E[\sigma\sigma'] + \sigma_W^2 \dot E\, (1 + x\cdot y)`.

Deep MLPs (NTK parametrisation, every layer scaled by :math:`\sigma_W/\sqrt{\text{fan-in}}`,
biases :math:`\sigma_b`): :math:`K^{(0)} = \Theta^{(0)} = m`, and per hidden layer
:math:`K^{(l+1)} = \sigma_b^2 + \sigma_W^2 E[\sigma\sigma']_{K^{(l)}}`,
:math:`\Theta^{(l+1)} = K^{(l+1)} + \sigma_W^2 \dot E_{K^{(l)}}\, \Theta^{(l)}`
(Jacot et al. 2018, Thm. 1; Lee et al. 2019, eq. 7); depth 1 is the formula above.

The training oracle
-------------------
Loss :math:`L = \tfrac{1}{2n}\sum_{i=1}^n (f(X_i) - Y_i)^2` over the n training points,
plain gradient descent with learning rate η. Linearised around initialisation (exact at
N → ∞, Lee et al. 2019, "Wide neural networks of any depth evolve as linear models under
gradient descent", §2.2, here in the discrete-step form),
:math:`f_{t+1}(x) = f_t(x) - \tfrac{\eta}{n}\Theta(x, X)(f_t(X) - Y)`, so with
:math:`A = 1 - \tfrac{\eta}{n}\Theta_{XX}` and
:math:`M_t = \tfrac{\eta}{n}\sum_{s<t} A^s = V\,\mathrm{diag}\big((1-(1-\eta\lambda/n)^t)
/\lambda\big)V^T` (:math:`\Theta_{XX} = V\Lambda V^T`; the entry is :math:`t\eta/n` at
λ = 0),

.. math:: f_t(x) = f_0(x) + B_t(x)\,(Y - f_0(X)),\qquad B_t(x) = \Theta(x, X) M_t .

:math:`f_0` is the GP with kernel K, hence :math:`f_t` is Gaussian with

.. math:: \mu_t(x) = B_t Y,\qquad \Sigma_t(x, x') = K_{xx'} - B_t K_{Xx'} - K_{xX} B_t^T
    + B_t K_{XX} B_t^T .
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .. import _checks
from .. import tuples as _tuples
from .._checks import NNGPInputError
from ..ensembles.core import SingleLayerNet
from ..ensembles.quadrature import pair_expectation

__all__ = [
    "PARAMETRISATIONS",
    "check_parametrisation",
    "layer_maps",
    "ntk_and_nngp",
    "ntk",
    "check_steps",
    "training_oracle",
    "gaussian_moment_tuples",
]

PARAMETRISATIONS = ("ntk", "standard")


def check_parametrisation(value) -> str:
    if value not in PARAMETRISATIONS:
        raise NNGPInputError(
            f"parametrisation must be one of {list(PARAMETRISATIONS)}, got {value!r}")
    return value


@functools.cache
def _derivative(jax_fn):
    """σ' as a vectorised NumPy function (one object per activation: the quadrature caches
    its probes per function)."""
    grad = jax.jit(jax.vmap(jax.grad(lambda z: jax_fn(z))))

    def dfn(z):
        z = np.asarray(z, np.float64)
        return np.asarray(grad(jnp.asarray(z.ravel()))).reshape(z.shape)

    return dfn


def _quadrature_pairs(h, dh):

    return (lambda a, b, c: pair_expectation(h, a, b, c),
            lambda a, b, c: pair_expectation(dh, a, b, c))


def layer_maps(net):
    """``(pair, dpair)``: E[σσ'] and E[σ'σ'] as functions of (a, b, c), NumPy arrays: the
    closed forms of the net's activation record (:mod:`nngp_ppl.ensembles.activations`), else the
    quadrature of σ and σ'."""

    spec = getattr(net, "spec", None) if isinstance(net, SingleLayerNet) else None
    if spec is None:
        raise NNGPInputError(
            f"the NTK is known for ErfNet, ReLUNet, GaussNet, ActivationNet and MLP, not for "
            f"{type(net).__name__}")
    if spec.pair is not None:
        return (lambda a, b, c: np.asarray(spec.pair(a, b, c))), spec.dpair
    return _quadrature_pairs(spec.numpy_fn, _derivative(spec.jax_fn))


def _depth(net) -> int:
    return int(getattr(net, "depth", 1))


def ntk_and_nngp(net, X, Y=None, *, parametrisation: str = "ntk", width: int | None = None):
    r"""``(Θ(X, Y), K(X, Y))`` as NumPy (n, m) arrays (module docstring for the formulas).

    ``parametrisation="standard"`` needs ``width`` (the kernel grows like N) and a single
    hidden layer. Zero weight and bias means only.
    """
    net._require_zero_mean("the NTK")
    parametrisation = check_parametrisation(parametrisation)
    X = _checks.inputs("X", X, net.d_in)
    Y = X if Y is None else _checks.inputs("Y", Y, net.d_in)
    pair, dpair = layer_maps(net)
    sb2, sw2 = float(net.sigma_b) ** 2, float(net.sigma_w) ** 2
    d = net.d_in
    m = sb2 + sw2 * (X @ Y.T) / d
    vx = np.broadcast_to((sb2 + sw2 * np.sum(X * X, 1) / d)[:, None], m.shape)
    vy = np.broadcast_to((sb2 + sw2 * np.sum(Y * Y, 1) / d)[None, :], m.shape)
    if parametrisation == "standard":
        if _depth(net) != 1:
            raise NNGPInputError("parametrisation='standard': the NTK is implemented for a "
                                 "single hidden layer only; use 'ntk' for deep MLPs")
        width = _checks.positive_int("width", width)
        E, dE = pair(vx, vy, m), dpair(vx, vy, m)
        return (1.0 + width * E + sw2 * dE * (1.0 + X @ Y.T),
                sb2 + sw2 * E)
    K, theta = m, m
    for _ in range(_depth(net)):
        E, dE = pair(vx, vy, K), dpair(vx, vy, K)
        K = sb2 + sw2 * E
        theta = K + sw2 * dE * theta
        vx = sb2 + sw2 * pair(vx, vx, vx)
        vy = sb2 + sw2 * pair(vy, vy, vy)
    return np.asarray(theta, np.float64), np.asarray(K, np.float64)


def ntk(net, X, Y=None, *, parametrisation: str = "ntk", width: int | None = None):
    """The neural tangent kernel Θ(X, Y) (:func:`ntk_and_nngp`)."""
    return ntk_and_nngp(net, X, Y, parametrisation=parametrisation, width=width)[0]


def check_steps(steps) -> tuple[int, ...]:
    if isinstance(steps, (int, np.integer)) and not isinstance(steps, bool):
        steps = [steps]
    out = []
    for s in steps:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0:
            raise NNGPInputError(f"steps must be non-negative integers, got {s!r}")
        out.append(int(s))
    if not out:
        raise NNGPInputError("steps must name at least one training step")
    return tuple(sorted(set(out)))


def _step_sum(lam, rate, t: int):
    r""":math:`\text{rate}\sum_{s<t}(1 - \text{rate}\,\lambda)^s = (1 - (1 -
    \text{rate}\,\lambda)^t)/\lambda`, without cancellation for small λ (expm1/log1p) and
    :math:`t\,\text{rate}` at λ = 0."""
    r = rate * lam
    stable = r < 1.0
    log_decay = np.log1p(-np.where(stable, r, 0.0))
    one_minus = np.where(stable, -np.expm1(t * log_decay), 1.0 - (1.0 - r) ** t)
    safe = np.where(lam > 0, lam, 1.0)
    return np.where(lam > 0, one_minus / safe, t * rate)


def training_oracle(net, X, x_train, y_train, steps, learning_rate: float, *,
                    parametrisation: str = "ntk", width: int | None = None):
    r"""Infinite-width mean and covariance of the trained ensemble at each step.

    Returns ``(mu, Sigma)``: (S, k) and (S, k, k) float64 for the sorted ``steps`` at the
    k inputs ``X``, after plain gradient descent on :math:`L = \frac{1}{2n}\sum (f(X_i) -
    Y_i)^2` with ``learning_rate`` η (module docstring: :math:`\mu_t = B_t Y`,
    :math:`\Sigma_t = K - B_t K_{X\cdot} - K_{\cdot X} B_t^T + B_t K_{XX} B_t^T`).
    """
    X = _checks.inputs("X", X, net.d_in)
    x_train = _checks.inputs("x_train", x_train, net.d_in)
    y_train = np.asarray(y_train, np.float64).reshape(-1)
    if len(y_train) != len(x_train) or not np.all(np.isfinite(y_train)):
        raise NNGPInputError(
            f"y_train must be {len(x_train)} finite numbers (one per x_train row), got "
            f"{y_train.shape[0]} values")
    eta = _checks.finite_float("learning_rate", learning_rate, minimum=0.0)
    steps = check_steps(steps)
    n = len(x_train)
    both = np.concatenate([X, x_train])
    theta, K = ntk_and_nngp(net, both, parametrisation=parametrisation, width=width)
    k = len(X)
    lam, V = np.linalg.eigh((theta[k:, k:] + theta[k:, k:].T) / 2)
    lam = np.clip(lam, 0.0, None)
    mus, covs = [], []
    for t in steps:
        B = theta[:k, k:] @ (V * _step_sum(lam, eta / n, t)) @ V.T
        mus.append(B @ y_train)
        cov = K[:k, :k] - B @ K[k:, :k] - K[:k, k:] @ B.T + B @ K[k:, k:] @ B.T
        covs.append((cov + cov.T) / 2)
    return np.asarray(mus), np.asarray(covs)


def gaussian_moment_tuples(mu, Sigma, n: int) -> np.ndarray:
    r""":math:`E[\prod_{a \in t} f(x_a)]` of a Gaussian field with mean ``mu`` (k,) and
    covariance ``Sigma`` (k, k) on the distinct n-tuples t (:func:`nngp_ppl.tuples.
    distinct_tuples`): Isserlis with a mean, by the recursion on the first factor
    :math:`E[f_1 R] = \mu_1 E[R] + \sum_{j} \Sigma_{1j} E[R / f_j]`. The trained
    ensemble's correlators at infinite width (μ_t, Σ_t of :func:`training_oracle`).
    """

    mu = np.asarray(mu, np.float64)
    Sigma = np.asarray(Sigma, np.float64)
    rows = _tuples.distinct_tuples(len(mu), n)

    @functools.cache
    def moment(cols: tuple[int, ...]) -> np.ndarray:
        if not cols:
            return np.ones(len(rows))
        first, rest = cols[0], cols[1:]
        out = mu[rows[:, first]] * moment(rest)
        for j, c in enumerate(rest):
            out = out + Sigma[rows[:, first], rows[:, c]] * moment(rest[:j] + rest[j + 1:])
        return out

    return moment(tuple(range(n)))
