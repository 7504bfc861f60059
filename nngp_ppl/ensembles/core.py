"""Single-hidden-layer network ensembles and their Gaussian-process kernels.

.. math::

    f(x) = \\sum_{i=1}^{N} a_i\\, \\sigma(w_i \\cdot x + \\beta_i) + b_1,

    w_{i\\alpha} \\sim \\mathcal N(\\mu_W, \\sigma_W^2/d_{in}),\\;
    \\beta_i \\sim \\mathcal N(\\mu_b, \\sigma_b^2),\\;
    a_i \\sim \\mathcal N(\\mu_W/N, \\sigma_W^2/N),\\;
    b_1 \\sim \\mathcal N(\\mu_b, \\sigma_b^2),

all independent (Halverson, Maiti, Stoner, arXiv:2008.08601, §2; physics.md §1), except
that the output weights' mean is :math:`\\mu_W/N` rather than :math:`\\mu_W`: then the
mean function :math:`E f(x) = \\mu_b + \\mu_W E[\\sigma(z(x))]` is the same at every
width and the ensemble has an N -> infinity limit, a GP with that mean (with mean
:math:`\\mu_W` each of the N neurons adds :math:`\\mu_W E\\sigma`, and the mean grows like N).
The exact finite-width oracle for non-zero means is :mod:`nngp_ppl.theory.exact`. The
pre-activation covariance is :math:`m(x, x') = \\sigma_b^2 + \\sigma_W^2\\, x\\cdot x'/d_{in}`
and for zero means the output two-point function is the GP kernel at *every* width,
:math:`K(x,x') = \\sigma_b^2 + \\sigma_W^2\\, E[\\sigma(z)\\sigma(z')]`.

Each ensemble pairs its finite-width forward pass with its infinite-width kernel, in the
manner of neural-tangents' ``stax`` layers. Erf-, ReLU- and Gauss-net have closed-form
kernels; :class:`ActivationNet` takes any elementwise activation (built-ins ``tanh``,
``gelu``, ``sin``, ``softplus``, or one added with :func:`register_activation`) and gets
its kernel by quadrature.

Capabilities, not names: an ensemble declares ``exact_moments`` (which exact-moment oracle
of :mod:`nngp_ppl.theory.exact` covers it, or None) and ``exact_max_order``. Saving goes
through :meth:`SingleLayerNet.to_dict`, which refuses any class that would not reload as
itself (a subclass inheriting its parent's name, an unregistered callable activation) and
says how to register it (:func:`register_ensemble`, :func:`register_activation`).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from .. import _checks
from .._checks import NNGPInputError
from .._memo import BytesLRU
from ..vocabulary import check_propagator, propagator_shift
from .activations import ACTIVATIONS, ERF, GAUSS, RELU, Activation, quadrature_names
from .quadrature import pair_expectation

__all__ = [
    "Ensemble",
    "KERNEL_RTOL",
    "check_gram",
    "net_label",
    "SingleLayerNet",
    "GROWTH_DISTANCES",
    "kernel_growth_numeric",
    "network_keys",
    "ErfNet",
    "ReLUNet",
    "GaussNet",
    "Activation",
    "ACTIVATIONS",
    "register_activation",
    "ActivationNet",
    "PAIR_CACHE_BYTES",
    "quadrature_pair_moment",
    "traced_pair_expectation",
    "ENSEMBLES",
    "register_ensemble",
    "module_of",
    "allow_import",
    "import_allowed",
    "refuse_import",
    "ensemble_class",
    "make_ensemble",
    "ensemble_from_dict",
]


@dataclass(frozen=True)
class Ensemble:
    r"""The ensemble protocol: what every stage of the package asks of a network ensemble.

    An ensemble is a frozen dataclass of hyperparameters (``d_in`` first). It is a JAX
    pytree with no leaves: the whole object is static auxiliary data, as equinox treats
    non-array fields, so it can be passed into ``jax.jit`` / ``jax.vmap``-ed functions and
    compiles once per distinct set of hyperparameters (it must be hashable, which a
    frozen dataclass is). Every subclass is registered as such a pytree automatically.

    A subclass provides

    * ``network_outputs(keys, X, width, dtype)`` — the forward pass: outputs
      (len(keys), n) of one freshly drawn network per PRNG key (parameter sampling and
      evaluation in one pure, traceable function; the sampler jit-compiles it);
    * ``traced_kernel(X, Y)`` — the GP (NNGP) kernel :math:`K(x, y)` on ``jnp`` arrays,
      traceable (the vertex integrals jit and vmap it); :meth:`kernel` wraps it for NumPy;

    and may override

    * :meth:`kernel_constant` — the constant part :math:`c` of K that the
      ``bias_subtracted`` vertex propagator :math:`\tilde K = K - c` removes (an exactly
      Gaussian output bias carries no interaction; physics.md §6). Default 0;
    * :meth:`kernel_growth` — the exponent p of :math:`\tilde K(x, y) \sim |y|^p`,
      which sets the β-function exponent γ (physics.md §8). Default: measured from the
      kernel by :func:`kernel_growth_numeric`;
    * ``two_point_exact`` — whether E[f f'] = K at every width (rule 4.5 of physics.md §6).
      Default False (the package cannot know); single-layer nets say True;
    * ``exact_moments`` / ``exact_max_order`` — the capability of an exact finite-width
      moment oracle in :mod:`nngp_ppl.theory.exact` (None / 0: none; the noise model then
      uses the sampled covariance);
    * ``parameter_count(width)`` — random numbers per network, for batch sizing;
    * ``to_dict`` / ``from_description`` — serialisation. By default the fields, under
      the registered ``name`` (:func:`register_ensemble`) or else the class's import path
      ``"package.module:Class"``; a class with neither (defined in a function or in a
      script run as ``__main__``) is refused on saving with a message saying how to
      register it. A file never reloads silently as another class.

    Minimal example (a single-layer cosine net, :math:`E[\cos u \cos v] =
    e^{-(a+b)/2}\cosh c` for :math:`(u, v)` of variances a, b and covariance c)::

        @nngp_ppl.register_ensemble
        @dataclass(frozen=True)
        class CosNet(nngp_ppl.Ensemble):
            sigma_w: float = 1.0
            name: ClassVar[str] = "cos_net"
            two_point_exact: ClassVar[bool] = True

            def network_outputs(self, keys, X, width, dtype=jnp.float32):
                def one(key):
                    kw, ka = jax.random.split(key)
                    w = jax.random.normal(kw, (width, self.d_in), dtype)
                    a = jax.random.normal(ka, (width,), dtype)
                    z = (self.sigma_w / self.d_in**0.5) * (w @ X.T.astype(dtype))
                    return (a / width**0.5) @ jnp.cos(z)
                return jax.vmap(one)(keys)

            def traced_kernel(self, X, Y):
                s = self.sigma_w**2 / self.d_in
                a, b = s * jnp.sum(X * X, 1), s * jnp.sum(Y * Y, 1)
                return jnp.exp(-(a[:, None] + b[None, :]) / 2) * jnp.cosh(s * X @ Y.T)

    (``tests/test_protocol.py`` runs such a class through sample, fit, infer and flow.)
    """

    name: ClassVar[str] = "net"
    #: Which exact finite-width moment oracle (nngp_ppl.theory.exact) covers this ensemble:
    #: "lognormal", "price", "cones", "quadrature", or None (no oracle; sample instead).
    exact_moments: ClassVar[str | None] = None
    #: Highest correlator order that oracle supports (0 without one).
    exact_max_order: ClassVar[int] = 0
    #: Whether the finite-width 2-pt function equals K at every width (rule 4.5).
    two_point_exact: ClassVar[bool] = False

    d_in: int = 1

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _register_pytree(cls)

    def __post_init__(self):
        object.__setattr__(self, "d_in", _checks.positive_int("d_in", self.d_in))

    # --- the protocol ----------------------------------------------------------------------
    def network_outputs(self, keys, X, width: int, dtype=jnp.float32):
        """Outputs (len(keys), n) of the networks drawn from ``keys`` (one key per network)."""
        raise NotImplementedError(
            f"{type(self).__name__} must define network_outputs(keys, X, width, dtype)")

    def traced_kernel(self, X, Y):
        """GP kernel on validated jnp arrays (n, d_in), (m, d_in) -> (n, m); traceable."""
        raise NotImplementedError(f"{type(self).__name__} must define traced_kernel(X, Y)")

    def _kernel(self, X, Y):
        # The name this hook had before the protocol was public.
        return self.traced_kernel(X, Y)

    def kernel_constant(self) -> float:
        """The constant part c of K removed by the ``bias_subtracted`` propagator (0 here)."""
        return 0.0

    def kernel_length_scale(self) -> float:
        """Length over which K varies near the inputs (sizes the vertex-integral panels):
        sqrt(d_in) here, for inputs of unit scale."""
        return math.sqrt(self.d_in)

    @property
    def zero_mean(self) -> bool:
        return True

    def _require_zero_mean(self, what: str):
        """Refuse ``what`` for an ensemble whose closed forms assume zero means (no-op here)."""

    def kernel(self, X, Y=None) -> np.ndarray:
        """GP kernel K(x, y) as an (n, m) NumPy array; rows of X and Y are inputs of
        dimension d_in (:meth:`traced_kernel` on validated inputs).

        Without ``Y`` it is the Gram matrix on X, which every stage factorises or divides
        by: it is refused unless finite, symmetric and positive semi-definite
        (:func:`check_gram`), so that a user's kernel that is none of these fails here
        rather than as nonsense in a fit.
        """
        self._require_zero_mean("kernel")
        X = _checks.inputs("X", X, self.d_in)
        if Y is None:
            Xj = jnp.asarray(X)
            K = np.asarray(self.traced_kernel(Xj, Xj))
            check_gram(self, K, X)
            return K
        Y = _checks.inputs("Y", Y, self.d_in)
        return np.asarray(self.traced_kernel(jnp.asarray(X), jnp.asarray(Y)))

    def kernel_growth(self, propagator: str = "full") -> float | None:
        r"""Exponent p of the vertex propagator's growth, :math:`\tilde K(x, y) \sim |y|^p`.

        :math:`\tilde K = K` (``"full"``) or :math:`K - c` with c = :meth:`kernel_constant`
        (``"bias_subtracted"``); None when it decays faster than any power (then the
        vertex integral converges and the coupling stops running). This sets the
        β-function exponent :math:`\gamma = d_{in} + p\,(\text{legs} + 2\,\text{loops})`
        (physics.md §8). Default: measured by :func:`kernel_growth_numeric`; the
        closed-form ensembles override it with their analytic value.
        """
        return kernel_growth_numeric(self, propagator)

    def sample_outputs(self, seed: int, X, width: int, n_nets: int, dtype=jnp.float32):
        """(n_nets, n) outputs of ``n_nets`` freshly drawn networks of the given width.

        Network j uses the key ``fold_in(fold_in(PRNGKey(seed), width), j)``, the same
        networks the streaming sampler draws for this seed.
        """
        X = _checks.inputs("X", X, self.d_in)
        width = _checks.positive_int("width", width)
        n_nets = _checks.positive_int("n_nets", n_nets)
        keys = network_keys(seed, width, 0, n_nets)
        return np.asarray(self.network_outputs(keys, X, width, dtype))

    # --- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain description, e.g. for file provenance: ``{"ensemble": "erf", ...}``.

        The ``ensemble`` entry is the class's registered ``name``, or else its import path
        ``"package.module:Class"``. Refused (NNGPInputError) for a class that would not
        reload as itself: one with neither, e.g. a subclass defined inside a function that
        inherits its parent's name.
        """
        return {"ensemble": _saved_name(self), **self._fields_dict()}

    def describe(self) -> str:
        """One line for logs and reports, e.g. ``erf-net (d_in=1, sigma_w=1.0, sigma_b=1.0)``:
        the name and the hyperparameters (zero means and the name itself left out)."""
        shown = []
        for k, v in self._fields_dict().items():
            if (k in ("mu_w", "mu_b") and v == 0.0) or v == self.name:
                continue
            if isinstance(v, (int, float, str, bool)):
                shown.append(f"{k}={v}")
        return f"{net_label(self.name)} ({', '.join(shown)})"

    def _fields_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_description(cls, d: dict):
        """Inverse of :meth:`to_dict` (without its ``ensemble`` entry): the class's fields."""
        fields = {f.name for f in dataclasses.fields(cls) if f.init}
        return cls(**{k: v for k, v in d.items() if k in fields})


#: Relative tolerance of :func:`check_gram` per input: a Gram matrix of n inputs may
#: be asymmetric by, and have eigenvalues down to, -n * KERNEL_RTOL * max|K|. A kernel
#: computed in float32 carries relative errors of a few 2^-24 per entry, and an error E
#: moves the eigenvalues by at most ||E||_2 <= n max|E_ij| (Weyl; Gershgorin); 2^-23 per
#: input covers that with room, while a genuinely indefinite or asymmetric kernel is off by
#: O(1) of its scale.
KERNEL_RTOL = 2.0**-23


def check_gram(net, K, X) -> None:
    """Refuse a Gram matrix ``K`` (n, n) of ``net``'s kernel at the n inputs ``X`` unless it
    is finite, symmetric and positive semi-definite within :data:`KERNEL_RTOL`.

    Positive semi-definiteness is tested by a Cholesky factorisation of
    :math:`K + \\tau I`, :math:`\\tau = n\\,\\mathrm{RTOL}\\max|K|` (it exists iff the
    smallest eigenvalue exceeds -τ); only a failure pays for the eigenvalues it reports.
    """
    K, n = np.asarray(K), len(X)
    who = net.describe() if hasattr(net, "describe") else repr(net)
    if K.shape != (n, n):
        raise NNGPInputError(
            f"net: the {who} kernel on {n} inputs must be an ({n}, {n}) matrix, got shape "
            f"{K.shape}")
    K = K.astype(np.float64)
    bad = int(np.count_nonzero(~np.isfinite(K)))
    if bad:
        raise NNGPInputError(
            f"net: the {who} kernel is not finite on these inputs ({bad} of the {n}x{n} "
            f"entries are NaN or infinite; largest |x| = {np.max(np.abs(X)):g}); use inputs "
            "of moderate size, or check traced_kernel")
    scale = float(np.max(np.abs(K))) if n else 0.0
    tol = n * KERNEL_RTOL * scale
    asym = np.abs(K - K.T)
    if n and float(asym.max()) > tol:
        a, b = np.unravel_index(int(np.argmax(asym)), asym.shape)
        raise NNGPInputError(
            f"net: the {who} kernel is not symmetric on these inputs: K[{a},{b}] = "
            f"{K[a, b]:.6g} but K[{b},{a}] = {K[b, a]:.6g} (max |K| = {scale:.6g}); a GP "
            "kernel must satisfy K(x, y) = K(y, x)")
    if not n or scale == 0.0:
        return
    try:
        np.linalg.cholesky((K + K.T) / 2 + tol * np.eye(n))
    except np.linalg.LinAlgError:
        low = float(np.linalg.eigvalsh((K + K.T) / 2)[0])
        raise NNGPInputError(
            f"net: the {who} kernel is not positive semi-definite on these inputs: its "
            f"smallest eigenvalue is {low:.6g} (max |K| = {scale:.6g}, tolerance "
            f"{-tol:.3g}); a covariance of network outputs cannot have negative variances, "
            "so check traced_kernel (a sign, a missing term, float32 round-off)") from None


def net_label(name: str) -> str:
    """A readable label for an ensemble name: ``erf`` -> ``erf-net``, but a name that
    already says it (``sin_net``, ``CosNet``, ``my-net``) as it is, not ``sin_net-net``; an
    import path ``"pkg.mod:SinNet"`` by its last part."""
    name = str(name).rsplit(":", 1)[-1].rsplit(".", 1)[-1]
    return name if name.lower().endswith("net") else f"{name}-net"


def _register_pytree(cls) -> None:
    # No leaves: the ensemble itself is the (hashable) static auxiliary data.
    jax.tree_util.register_pytree_node(cls, lambda net: ((), net), lambda net, _: net)


_register_pytree(Ensemble)


def _class_path(cls) -> str | None:
    """``"module:qualname"`` when importing it gives ``cls`` back, else None."""
    module, qualname = getattr(cls, "__module__", None), getattr(cls, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname:
        return None
    try:
        obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return None
    return f"{module}:{qualname}" if obj is cls else None


def _saved_name(net) -> str:
    """The ``ensemble`` entry under which ``net`` reloads as its own class (or refusal)."""
    cls = type(net)
    owner = ENSEMBLES.get(net.name)
    if owner is cls:
        return net.name
    path = _class_path(cls)
    if path is not None:
        return path
    if owner is None:
        why = f"its name {net.name!r} is not registered and it has no import path"
    else:
        why = (f"its name {net.name!r} belongs to {owner.__name__}, so it would reload as "
               "that class")
    raise NNGPInputError(
        f"{cls.__name__} cannot be saved: {why}. Give the class its own "
        "`name: ClassVar[str] = \"...\"` and register it with "
        "nngp_ppl.register_ensemble(cls) before saving or loading, or define it at the top "
        "level of an importable module (it is then saved by its import path)"
    )


@dataclass(frozen=True)
class SingleLayerNet(Ensemble):
    """Hyperparameters of a single-hidden-layer ensemble (see the module docstring).

    Subclasses fix the activation and supply the closed-form kernel.
    """

    d_in: int = 1
    sigma_w: float = 1.0
    sigma_b: float = 1.0
    mu_w: float = 0.0
    mu_b: float = 0.0

    #: One hidden layer: the output is a sum of N independent neurons plus b_1, so
    #: E[f f'] = K exactly at every width.
    two_point_exact: ClassVar[bool] = True
    #: The activation's record (nngp_ppl.ensembles.activations): its closed forms, exact-moment
    #: oracle and growth exponent; ActivationNet and MLP set it per instance.
    spec: ClassVar[Activation | None] = None

    def __post_init__(self):
        super().__post_init__()
        for field in ("sigma_w", "sigma_b"):
            object.__setattr__(self, field, _checks.sigma(field, getattr(self, field)))
        _checks.nonzero_scales("sigma_w = sigma_b =", self.sigma_w, self.sigma_b)
        for field in ("mu_w", "mu_b"):
            object.__setattr__(self, field, _checks.finite_float(field, getattr(self, field)))

    def kernel_constant(self) -> float:
        """σ_b², the variance of the output bias b_1 (exactly Gaussian, no interaction)."""
        return float(self.sigma_b) ** 2

    def kernel_length_scale(self) -> float:
        """sqrt(d_in)/σ_W (1/σ_W replaced by 1 at σ_W = 0): the input distance over which
        the pre-activation m(x, y) = σ_b² + σ_W² x·y/d_in changes by O(1)."""
        sw = self.sigma_w if self.sigma_w > 0 else 1.0
        return math.sqrt(self.d_in) / sw

    def parameter_count(self, width: int) -> int:
        """Random numbers drawn per network: w (N d_in), β (N), a (N), b_1."""
        return int(width) * (self.d_in + 2) + 1

    @property
    def zero_mean(self) -> bool:
        return self.mu_w == 0.0 and self.mu_b == 0.0

    def _require_zero_mean(self, what: str):
        if not self.zero_mean:
            raise NNGPInputError(
                f"{what} is the closed form for mu_w = mu_b = 0, but this {type(self).__name__} "
                f"has mu_w={self.mu_w}, mu_b={self.mu_b}; for non-zero means use "
                "nngp_ppl.theory.exact (mean_function, limit_kernel, exact_correlator) or sampling"
            )

    # --- kernels ---------------------------------------------------------------------------
    def preactivation_cov(self, X, Y=None):
        """m(x, y) = σ_b² + σ_W² x·y / d_in, the covariance of the hidden pre-activations."""
        X = jnp.asarray(X)
        Y = X if Y is None else jnp.asarray(Y)
        return self.sigma_b**2 + self.sigma_w**2 * (X @ Y.T) / self.d_in

    def preactivation_var(self, X):
        """v(x) = m(x, x) = σ_b² + σ_W² |x|² / d_in, for each row of X."""
        X = jnp.asarray(X)
        return self.sigma_b**2 + self.sigma_w**2 * jnp.sum(X * X, axis=-1) / self.d_in

    def activation(self, z, var):
        """σ(z) for pre-activations z whose variance is ``var`` (only Gauss-net uses it)."""
        if self.spec is None:
            raise NotImplementedError
        return self.spec.jax_fn(z, var) if self.spec.needs_variance else self.spec.jax_fn(z)

    def pair_kernel(self, X, Y):
        """σ_b² + σ_W² E[σ(z)σ(z')] from the activation's closed-form ``pair`` (traceable)."""
        E = self.spec.pair(self.preactivation_var(X)[:, None],
                           self.preactivation_var(Y)[None, :], self.preactivation_cov(X, Y))
        return self.sigma_b**2 + self.sigma_w**2 * E

    def kernel_growth(self, propagator: str = "full") -> float | None:
        """The activation's analytic exponent (its record's ``growth``), else measured from
        the kernel (:func:`kernel_growth_numeric`)."""
        check_propagator(propagator)
        if self.spec is None or self.spec.growth is None:
            return kernel_growth_numeric(self, propagator)
        return self.spec.growth(self, propagator)

    def _activate(self, z, var):
        # The forward pass's hook: ActivationNet keeps its activation in a field of the
        # same name as the method above, so it overrides this instead.
        return self.activation(z, var)

    # --- finite-width networks --------------------------------------------------------------
    def network_outputs(self, keys, X, width: int, dtype=jnp.float32):
        """Outputs (len(keys), n) of the networks drawn from ``keys`` (one key per network).

        Pure and traceable: the sampler jit-compiles it. One key per network makes the
        draws independent of how networks are grouped into batches, shards or devices.
        """
        n_params = width * (self.d_in + 2) + 1
        X = jnp.asarray(X, dtype)
        var = self.preactivation_var(X).astype(dtype)

        def one(key):
            eps = jax.random.normal(key, (n_params,), dtype)
            w0 = eps[: width * self.d_in].reshape(width, self.d_in)
            rest = eps[width * self.d_in :]
            b0, a, b1 = rest[:width], rest[width : 2 * width], rest[2 * width]
            # Python floats (weakly typed) keep the batch in `dtype`; np.float64 scalars
            # would silently promote it to float64 under x64 (3x slower on CPU).
            w0 = self.mu_w + float(self.sigma_w / np.sqrt(self.d_in)) * w0
            b0 = self.mu_b + self.sigma_b * b0
            # Output weights' mean mu_W / N: the N -> infinity limit exists (module docstring).
            a = float(self.mu_w / width) + float(self.sigma_w / np.sqrt(width)) * a
            b1 = self.mu_b + self.sigma_b * b1
            z = w0 @ X.T + b0[:, None]  # (width, n)
            return a @ self._activate(z, var[None, :]) + b1

        return jax.vmap(one)(keys)


#: Distances |y| at which the numeric growth exponent is read: geometric, ratio sqrt(10).
GROWTH_DISTANCES = tuple(float(t) for t in 10.0 ** np.array([1.5, 2.0, 2.5, 3.0]))


@functools.lru_cache(maxsize=64)
def _growth_cached(net, propagator: str, integer: bool):
    d = net.d_in
    x0 = np.full((1, d), 0.5)
    dirs = [np.eye(d)[i] * sign for i in range(d) for sign in (1.0, -1.0)]
    if d > 1:
        dirs += [np.ones(d) / np.sqrt(d), -np.ones(d) / np.sqrt(d)]
    shift = propagator_shift(net, propagator)
    t = np.array(GROWTH_DISTANCES)
    ratio = t[1] / t[0]
    best = None
    for u in dirs:
        k = np.abs(np.asarray(net.kernel(x0, t[:, None] * u[None, :]))[0] - shift)
        if np.any(k <= 1e-300) or np.log(k[-1] / k[-2]) / np.log(ratio) < -4.0:
            continue  # zero or decaying along this direction
        s = np.diff(np.log(k)) / np.log(ratio)  # secant slopes: p + c1/t + c2/t^2 + ...
        s = (ratio * s[1:] - s[:-1]) / (ratio - 1)  # Richardson: removes c1/t
        s = (ratio**2 * s[1:] - s[:-1]) / (ratio**2 - 1)  # removes c2/t^2
        p = float(s[-1])
        best = p if best is None else max(best, p)
    if best is not None and integer and abs(best - round(best)) < 1e-2:
        best = float(round(best))
    return best


def kernel_growth_numeric(net, propagator: str = "full", integer: bool = True):
    r"""The growth exponent p of :math:`\tilde K(x_0, t u)` measured from the kernel itself.

    :math:`x_0 = (0.5, \ldots)`, directions u = ±e_i and ±(1, ..., 1)/√d_in, distances t
    in :data:`GROWTH_DISTANCES` (10^1.5 ... 10^3): the log-log secant slopes, extrapolated
    twice by Richardson (corrections in 1/t and 1/t²), maximised over the directions (the
    box integral grows with its fastest direction). Zero or decaying directions are
    skipped; None if all decay. Measured against the analytic exponents (Erf 0, ReLU 1,
    Gauss-net 0 / decaying) for d_in = 1, 2, 3: within 1e-4 (tested at 1e-3). With
    ``integer`` an estimate within 1e-2 of an integer is returned as that integer (a
    single-layer kernel grows like the activation's power law, |h(z)| ~ |z|^q, whose
    exponent is an integer for every built-in).
    """
    check_propagator(propagator)
    return _growth_cached(net, propagator, bool(integer))


def network_keys(seed: int, width: int, start, count: int):
    """PRNG keys of networks start..start+count-1 at this width: fold_in(seed) on (width, j)."""
    base = jax.random.fold_in(jax.random.PRNGKey(seed), width)
    idx = jnp.arange(count, dtype=jnp.uint32) + jnp.asarray(start, jnp.uint32)
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(base, idx)


@dataclass(frozen=True)
class ErfNet(SingleLayerNet):
    """Erf-net, σ(z) = erf(z).

    .. math:: K = \\sigma_b^2 + \\sigma_W^2 \\frac{2}{\\pi}
        \\arcsin\\frac{2 m(x,y)}{\\sqrt{(1+2m(x,x))(1+2m(y,y))}}

    (Williams 1997; the layer map of :data:`nngp_ppl.ensembles.activations.ERF`). Growth exponent 0:
    K tends to a direction-dependent constant, nonzero also after σ_b² is removed.
    """

    name: ClassVar[str] = "erf"
    spec: ClassVar[Activation] = ERF
    exact_moments: ClassVar[str | None] = ERF.exact_moments
    exact_max_order: ClassVar[int] = ERF.exact_max_order

    def traced_kernel(self, X, Y):
        return self.pair_kernel(X, Y)


@dataclass(frozen=True)
class ReLUNet(SingleLayerNet):
    """ReLU-net, σ(z) = max(0, z); the authors used σ_b = 0 (physics.md §1).

    .. math:: K = \\sigma_b^2 + \\frac{\\sigma_W^2}{2\\pi}\\sqrt{m(x,x)\\,m(y,y)}
        \\,(\\sin\\theta + (\\pi-\\theta)\\cos\\theta),\\quad
        \\cos\\theta = \\frac{m(x,y)}{\\sqrt{m(x,x)\\,m(y,y)}}

    (the degree-1 arc-cosine kernel, Cho & Saul 2009; the layer map of
    :data:`nngp_ppl.ensembles.activations.RELU`): a zero-variance input (x = 0 with σ_b = 0) gives
    K = σ_b². Growth exponent 1: the kernel is homogeneous of degree 1 in y.
    """

    sigma_b: float = 0.0
    name: ClassVar[str] = "relu"
    spec: ClassVar[Activation] = RELU
    exact_moments: ClassVar[str | None] = RELU.exact_moments
    exact_max_order: ClassVar[int] = RELU.exact_max_order

    def traced_kernel(self, X, Y):
        return self.pair_kernel(X, Y)


@dataclass(frozen=True)
class GaussNet(SingleLayerNet):
    """Gauss-net, σ(z; x) = exp(z - v(x)), v(x) = σ_b² + σ_W² |x|²/d_in = Var z(x).

    The normalisation uses the ensemble's real σ_b, σ_W and d_in (the authors' code fixed
    them to 1, which is only right for d_in = 1 and unit σ's). Then

    .. math::

        K = \\sigma_b^2 + \\sigma_W^2
            \\exp\\!\\left(-\\frac{\\sigma_W^2 |x-y|^2}{2 d_{in}}\\right),

    since E[e^{z+z'}] = e^{(v + v' + 2m)/2} (:data:`nngp_ppl.ensembles.activations.GAUSS`). Growth
    exponent 0 for the full K with σ_b > 0 (K -> σ_b²); otherwise K̃ decays like a Gaussian.
    """

    name: ClassVar[str] = "gauss"
    spec: ClassVar[Activation] = GAUSS
    exact_moments: ClassVar[str | None] = GAUSS.exact_moments
    exact_max_order: ClassVar[int] = GAUSS.exact_max_order

    def traced_kernel(self, X, Y):
        # |x - y|² from the differences, one input direction at a time: non-negative by
        # construction. The expanded |x|² + |y|² - 2x·y needed a floor at 0 whose derivative
        # at coincident points is a tie (JAX gives ½, and 0 where round-off made d2 < 0), so
        # the derivative operators' self-loops ∂∂'K(y, y) came out halved or zero.
        d2 = sum((X[:, None, i] - Y[None, :, i]) ** 2 for i in range(X.shape[1]))
        decay = jnp.exp(-(self.sigma_w**2) * d2 / (2 * self.d_in))
        return self.sigma_b**2 + self.sigma_w**2 * decay


def register_activation(name: str, fn: Callable, numpy_fn: Callable | None = None) -> Activation:
    """Make ``fn`` known as ``name``, so ``ActivationNet(name)`` saves and reloads.

    ``fn`` maps a JAX array elementwise (it runs inside the jit-compiled sampler);
    ``numpy_fn`` is an optional NumPy version for the quadrature oracle (default: ``fn``
    through NumPy <-> JAX conversion). A file written with ``name`` reloads in a session
    that registered the same name. Re-registering a name with another function is refused.
    The record goes into :data:`nngp_ppl.ensembles.activations.ACTIVATIONS` (kernel by quadrature).
    """
    if not isinstance(name, str) or not name.isidentifier() or name != name.lower():
        raise NNGPInputError(
            f"activation name must be a lower-case identifier such as 'swish', got {name!r}"
        )
    if name in ENSEMBLES:
        raise NNGPInputError(
            f"activation name {name!r} is taken by the {ENSEMBLES[name].__name__} ensemble; "
            "choose another name"
        )
    if not callable(fn) or (numpy_fn is not None and not callable(numpy_fn)):
        raise NNGPInputError("register_activation needs fn (and numpy_fn, if given) callable")
    old = ACTIVATIONS.get(name)
    if old is not None and old.jax_fn is not fn:
        raise NNGPInputError(
            f"activation {name!r} is already registered with another function; choose "
            "another name"
        )
    if old is not None:
        return old
    act = Activation(name, fn, numpy_fn)
    ACTIVATIONS[name] = act
    return act


@dataclass(frozen=True, init=False)
class ActivationNet(SingleLayerNet):
    r"""Single-layer net with any elementwise activation: σ(z) = ``activation``(z).

    ``activation`` is a built-in name (``tanh``, ``gelu``, ``sin``, ``softplus``), a
    name registered with :func:`register_activation`, or a callable on JAX arrays (which
    works in memory but cannot be saved; register it to save it).

    .. math:: K(x, y) = \sigma_b^2 + \sigma_W^2\, E[\sigma(z)\,\sigma(z')],\quad
        (z, z') \sim \mathcal N\Big(0, \begin{pmatrix} m(x,x) & m(x,y)\\
        m(x,y) & m(y,y)\end{pmatrix}\Big),

    by the two-dimensional trapezoid quadrature of
    :func:`nngp_ppl.ensembles.quadrature.pair_expectation` (relative error <= 1e-12 of
    :math:`E|\sigma\sigma'|`, tested at 1e-10 against adaptive scipy integration). The
    kernel runs in NumPy through ``jax.pure_callback``, so it traces under jit and vmap
    but is not differentiable. Exact finite-width correlators to order 12 come from the
    same quadrature in the rank <= d_in + 1 pre-activation space
    (:mod:`nngp_ppl.theory.exact`); for activations with kinks (ReLU-like) its
    convergence is slow, so prefer the dedicated classes there.
    """

    activation: str | Callable = "tanh"

    exact_moments: ClassVar[str | None] = "quadrature"
    exact_max_order: ClassVar[int] = 12

    def __init__(self, activation="tanh", d_in=1, sigma_w=1.0, sigma_b=1.0, mu_w=0.0,
                 mu_b=0.0):
        if isinstance(activation, str):
            key = activation.lower()
            if key not in quadrature_names():
                raise NNGPInputError(
                    f"activation must be one of {quadrature_names()} (or a callable, or a "
                    f"name added with nngp_ppl.register_activation), got {activation!r}"
                )
            activation = key
        elif not callable(activation):
            raise NNGPInputError(
                f"activation must be a name or a callable, got {type(activation).__name__}"
            )
        object.__setattr__(self, "activation", activation)
        if isinstance(activation, str):
            spec = ACTIVATIONS[activation]
        else:
            name = getattr(activation, "__name__", "custom")
            spec = Activation(name, activation)
        # One spec per net, so the quadrature caches (keyed on the NumPy function) hit.
        object.__setattr__(self, "spec", spec)
        for field, value in (("d_in", d_in), ("sigma_w", sigma_w), ("sigma_b", sigma_b),
                             ("mu_w", mu_w), ("mu_b", mu_b)):
            object.__setattr__(self, field, value)
        self.__post_init__()

    def __reduce__(self):
        # Rebuild from the fields (the cached spec holds local functions that need not
        # pickle); the Dask executor ships the net to workers this way.
        return (type(self), (self.activation, self.d_in, self.sigma_w, self.sigma_b,
                             self.mu_w, self.mu_b))

    @property
    def name(self) -> str:  # type: ignore[override]
        """The activation's name (a callable's ``__name__``)."""
        return self.spec.name

    def to_dict(self) -> dict:
        if not isinstance(self.activation, str):
            raise NNGPInputError(
                f"an ActivationNet with the unregistered callable {self.name!r} cannot be "
                "saved: it could not be reloaded. Register it, e.g. "
                f"nngp_ppl.register_activation({self.name!r}, fn), and build the net as "
                f"ActivationNet({self.name!r}, ...)"
            )
        if type(self) is not ActivationNet:
            raise NNGPInputError(
                f"{type(self).__name__} cannot be saved: it would reload as ActivationNet. "
                "Register the activation with nngp_ppl.register_activation instead of "
                "subclassing"
            )
        return {"ensemble": self.name, **dataclasses.asdict(self)}

    def _activate(self, z, var):
        return self.spec.jax_fn(z)

    def numpy_activation(self) -> Callable:
        """σ as a vectorised NumPy function (for the quadrature oracle)."""
        return self.spec.numpy_fn

    def traced_kernel(self, X, Y):
        return self.sigma_b**2 + self.sigma_w**2 * quadrature_pair_moment(self, X, Y)


def quadrature_pair_moment(net, X, Y, nu_x=None, nu_y=None):
    r""":math:`E[\sigma(z_x)\sigma(z_y)]` (n, m) for the rows of ``X`` and ``Y`` (jnp
    arrays) by :func:`traced_pair_expectation` with ``net.numpy_activation()``: the
    pre-activations of ``net`` (variances m(x, x), m(y, y), covariance m(x, y)) and, if
    given, means ``nu_x`` (n,), ``nu_y`` (m,). The ActivationNet kernel (zero means) and
    the limit covariance of its centred theory (:mod:`nngp_ppl.inference.centring`) both
    read it."""
    mxy = net.preactivation_cov(X, Y)
    full = functools.partial(jnp.broadcast_to, shape=mxy.shape)
    means = () if nu_x is None else (full(nu_x[:, None]), full(nu_y[None, :]))
    return traced_pair_expectation(net.numpy_activation(),
                                   full(net.preactivation_var(X)[:, None]),
                                   full(net.preactivation_var(Y)[None, :]), mxy, *means)


def traced_pair_expectation(h, a, b, c, nu=None, nu_p=None):
    r""":math:`E[h(z)h(z')]` of :func:`~nngp_ppl.ensembles.quadrature.pair_expectation` as a
    traceable function: the NumPy quadrature runs through ``jax.pure_callback`` (so it
    traces under jit and vmap but is not differentiable), memoised per block
    (:func:`_cached_pair_expectation`). ``a, b, c`` (and the means ``nu, nu_p``, if given)
    are JAX arrays of one shape."""
    shape = jax.ShapeDtypeStruct(jnp.shape(c), jnp.float64)
    if nu is None and nu_p is None:
        def callback(a, b, c):
            return _cached_pair_expectation(h, a, b, c)

        return jax.pure_callback(callback, shape, a, b, c, vmap_method="broadcast_all")

    def shifted(a, b, c, n1, n2):
        return _cached_pair_expectation(h, a, b, c, n1, n2)

    nu = jnp.zeros(jnp.shape(c)) if nu is None else nu
    nu_p = jnp.zeros(jnp.shape(c)) if nu_p is None else nu_p
    return jax.pure_callback(shifted, shape, a, b, c, nu, nu_p, vmap_method="broadcast_all")


#: Memo of quadrature kernel blocks: (activation, shape, a, b, c[, nu, nu'] bytes) ->
#: (E[h h'], bytes held).
_PAIR_CACHE = BytesLRU()
#: Bytes of arrays the memo may hold (keys and values together).
PAIR_CACHE_BYTES = 256 * 2**20


def _cached_pair_expectation(h, a, b, c, nu=None, nu_p=None) -> np.ndarray:
    """:func:`~nngp_ppl.ensembles.quadrature.pair_expectation` of one block, memoised.

    The quadrature costs about a millisecond per pair far out in a cutoff box (its node
    count grows with the standard deviation), and every stage of a study asks for the same
    blocks again: the vertex integrals of one box at one cutoff are evaluated by the exact
    stage, the fits of both propagators (the same K before the constant is removed), the
    posterior and the flow. The callback receives the same (a, b, c) arrays each time, so a
    block is integrated once per process. With pre-activation means (``nu``, ``nu_p``; the
    centred theory's propagator) they are part of the key. Least recently used blocks are
    dropped beyond :data:`PAIR_CACHE_BYTES`.
    """
    arrays = [np.ascontiguousarray(v, dtype=np.float64) for v in (a, b, c)]
    if nu is not None or nu_p is not None:
        arrays += [np.ascontiguousarray(np.broadcast_to(0.0 if v is None else v,
                                                        arrays[2].shape), dtype=np.float64)
                   for v in (nu, nu_p)]
    key = (h, arrays[0].shape, *(v.tobytes() for v in arrays))
    hit = _PAIR_CACHE.fetch(key)
    if hit is not None:
        return hit
    means = arrays[3:] if len(arrays) > 3 else (None, None)
    out = pair_expectation(h, *arrays[:3], nu=means[0], nu_p=means[1]).astype(np.float64)
    out.setflags(write=False)
    _PAIR_CACHE.keep(key, out, (len(arrays) + 1) * arrays[0].nbytes, limit=PAIR_CACHE_BYTES)
    return out


ENSEMBLES: dict[str, type[Ensemble]] = {"erf": ErfNet, "relu": ReLUNet, "gauss": GaussNet}


def register_ensemble(cls: type[Ensemble]) -> type[Ensemble]:
    """Make a custom ensemble class save and reload as itself by its ``name`` (usable as a
    decorator; registered names are also what ``nngp-ppl sample --ensemble`` accepts).

    The class must subclass :class:`Ensemble` and define its own ``name``, not taken by
    another class or by an activation. (A class defined at the top level of an importable
    module needs no registration: it is saved by its import path.)
    """
    if not (isinstance(cls, type) and issubclass(cls, Ensemble)):
        raise NNGPInputError(f"register_ensemble needs an Ensemble subclass, got {cls!r}")
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not name:
        raise NNGPInputError(
            f"{cls.__name__} must define its own `name: ClassVar[str] = \"...\"` to be "
            "registered (an inherited name would make it reload as its parent)"
        )
    owner = ENSEMBLES.get(name)
    if (owner is not None and owner is not cls) or name in quadrature_names() or ":" in name:
        raise NNGPInputError(f"ensemble name {name!r} is already taken; choose another name")
    ENSEMBLES[name] = cls
    return cls


#: Modules whose code a file may name (an ensemble class, a JaxNetwork's functions): those
#: the user named (:func:`allow_import`, an import path given to :func:`make_ensemble` or
#: ``--ensemble``, the functions handed to a :class:`~nngp_ppl.JaxNetwork`). A file is
#: data: its ``ensemble`` attribute alone never causes an import (its checksum proves
#: nothing about who wrote it; anyone can recompute one).
_ALLOWED_MODULES: set[str] = set()


def module_of(path: str, what: str = "allow_import") -> str:
    """The module part of ``"package.module"`` or ``"package.module:qualname"``."""
    module = str(path).partition(":")[0]
    if not module or not all(part.isidentifier() for part in module.split(".")):
        raise NNGPInputError(
            f"{what} must name a module 'package.module' or an import path "
            f"'package.module:Class', got {path!r}")
    return module


def allow_import(*paths: str) -> None:
    """Let files name code from these modules (``"package.module"`` or an import path
    ``"package.module:Class"``, whose module counts; submodules included).

    Reading a file never imports the module its ``ensemble`` attribute names, nor the
    functions of a :class:`~nngp_ppl.JaxNetwork` it describes, unless the user named that
    module: here, on the command line (``--ensemble package.module:Class``), by building
    the ensemble from its import path (:func:`make_ensemble`, a study's ``ensemble``), or
    by handing its functions to a JaxNetwork. A class of a module the session has
    imported already is resolved without importing anything.
    """
    for path in paths:
        _ALLOWED_MODULES.add(module_of(path))


def import_allowed(module: str) -> bool:
    """Whether the user named ``module`` (or a package containing it), :func:`allow_import`."""
    return any(module == m or module.startswith(m + ".") for m in _ALLOWED_MODULES)


def refuse_import(path: str, what: str = "ensemble") -> NNGPInputError:
    """The error for a file that names code the user did not name."""
    module = module_of(path, what)
    return NNGPInputError(
        f"the file names the {what} {path!r}, from the module {module}, which this session "
        "has not been told to trust: reading a file never imports the code it names (a "
        "checksum shows a file is intact, not who wrote it). If you trust it, name it "
        f"yourself: --ensemble {path} on the command line, or "
        f"nngp_ppl.allow_import({module!r}) in Python before reading")


def _import_object(path: str, *, trusted: bool = True):
    """The object named by ``"package.module:qualname"``.

    ``trusted``: the user named it (it is imported, and its module allowed); otherwise
    (a path read from a file) only an allowed or already imported module is looked in,
    and only through its own attributes (a module's ``__getattr__`` may import).
    """
    module, _, qualname = path.partition(":")
    if trusted:
        allow_import(module_of(path, "ensemble"))
    elif not (import_allowed(module) or module in sys.modules):
        raise refuse_import(path)
    try:
        obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part) if trusted else vars(obj)[part]
    except (ImportError, AttributeError, ValueError, KeyError, TypeError) as err:
        raise NNGPInputError(
            f"ensemble {path!r} cannot be imported ({type(err).__name__}: {err}); make its "
            "module importable (on PYTHONPATH) or register the class with "
            "nngp_ppl.register_ensemble"
        ) from None
    return obj


def ensemble_class(name: str, *, trusted: bool = False) -> type[Ensemble] | None:
    """The class saved as ``name``: a registered name or an import path
    ``"package.module:Class"`` (an :class:`Ensemble` subclass); None for an unknown name.

    A name read from a file (``trusted=False``) resolves only to a registered class or to
    a class of a module the user named or imported (:func:`allow_import`); a file alone
    never causes an import.
    """
    key = str(name)
    if ":" not in key:
        return ENSEMBLES.get(key.lower())
    obj = _import_object(key, trusted=trusted)
    if not (isinstance(obj, type) and issubclass(obj, Ensemble)):
        raise NNGPInputError(f"ensemble {key!r} is not an nngp_ppl.Ensemble subclass")
    return obj


def make_ensemble(name: str, **hyper) -> Ensemble:
    """Ensemble by name: ``erf``, ``relu``, ``gauss``, ``mlp``, a registered class, an
    activation name (``tanh``, ``gelu``, ``sin``, ``softplus``, registered ones) for
    ActivationNet, or an import path ``"package.module:obj"`` where ``obj`` is an
    :class:`Ensemble` subclass or a factory function returning an ensemble (e.g. a
    :class:`~nngp_ppl.JaxNetwork`); ``hyper`` are passed to the class or the factory."""
    key = str(name)
    if ":" in key:
        obj = _import_object(key)
        if not (isinstance(obj, type) and issubclass(obj, Ensemble)) and callable(obj):
            try:
                net = obj(**hyper)
            except TypeError as err:
                raise NNGPInputError(f"ensemble factory {key!r}: {err}") from None
            if not isinstance(net, Ensemble):
                raise NNGPInputError(
                    f"ensemble factory {key!r} must return an nngp_ppl.Ensemble, got "
                    f"{type(net).__name__}")
            return net
    cls = ensemble_class(key, trusted=True)
    if cls is not None:
        return cls(**hyper)
    key = key.lower()
    if key in quadrature_names():
        return ActivationNet(activation=key, **hyper)
    raise NNGPInputError(
        f"ensemble must be one of {sorted(ENSEMBLES)}, an activation in "
        f"{quadrature_names()} or an import path 'package.module:Class', got {name!r} "
        "(register a custom one first, also before loading a file that names it: "
        "nngp_ppl.register_ensemble / register_activation)"
    )


def ensemble_from_dict(d: dict) -> Ensemble:
    """Inverse of :meth:`Ensemble.to_dict`: the class its ``ensemble`` entry names (by
    registration or import path) reads the rest (:meth:`Ensemble.from_description`).

    ``d`` comes from a file, so an import path resolves only in a module the user named or
    imported (:func:`ensemble_class`, :func:`allow_import`): reading never imports code."""
    d = dict(d)
    name = d.pop("ensemble")
    cls = ensemble_class(name)
    activation = d.get("activation")
    if cls is None or (activation is not None and "activation" not in
                       {f.name for f in dataclasses.fields(cls)}):
        # An ActivationNet's activation is its ensemble name; a file where they differ is
        # damaged, not a choice between them.
        if activation is not None and str(activation).lower() != str(name).lower():
            raise NNGPInputError(
                f"ensemble description is inconsistent: ensemble {name!r} but activation "
                f"{activation!r}"
            )
    if cls is not None:
        return cls.from_description(d)
    d.pop("activation", None)
    fields = {f.name for f in dataclasses.fields(ActivationNet)} - {"activation"}
    return make_ensemble(name, **{k: v for k, v in d.items() if k in fields})
