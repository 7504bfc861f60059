r"""Deep MLPs and a user's own JAX network, as ensembles the whole pipeline can sample.

:class:`MLP` — ``depth`` hidden layers of width N, one activation:

.. math::

    z^{(1)} = W^{(0)} x + b^{(0)},\qquad z^{(\ell+1)} = W^{(\ell)}\,\sigma(z^{(\ell)})
    + b^{(\ell)},\qquad f(x) = z^{(L+1)},\quad L = \text{depth},

:math:`W^{(0)} \sim \mathcal N(\mu_W, \sigma_W^2/d_{in})`, :math:`W^{(\ell \ge 1)} \sim
\mathcal N(\mu_W/N, \sigma_W^2/N)` (the mean scaled by the fan-in N, as the single-layer
readout's, so that the N -> ∞ limit exists), every bias :math:`\sim \mathcal N(\mu_b,
\sigma_b^2)`, all independent. ``depth = 1`` is the paper's single-layer net (physics.md
§1). Its NNGP kernel is the layer recursion (Neal 1996; Lee et al. 2018, arXiv:1711.00165, eq. 4)

.. math::

    K^{(1)}(x, y) = m(x, y) = \sigma_b^2 + \sigma_W^2\, x\cdot y/d_{in},\qquad
    K^{(\ell+1)}(x, y) = \sigma_b^2 + \sigma_W^2\, E\big[\sigma(u)\,\sigma(v)\big],

:math:`(u, v) \sim \mathcal N(0, K^{(\ell)}|_{\{x,y\}})`, and :math:`K = K^{(L+1)}`. The
expectation is the arcsine kernel for erf (Williams 1997), the degree-1 arc-cosine kernel
for ReLU (Cho & Saul 2009) and the 2-D quadrature
:func:`nngp_ppl.ensembles.quadrature.pair_expectation` for every other activation.

**The 2-pt function.** For depth 1 the output is a sum of N independent neurons, so
:math:`E[f f'] = K` at every width. For depth >= 2 the second layer's pre-activations share
the first layer: they are only Gaussian as N -> ∞, and :math:`G^{(2)} = K + O(1/N)` (Yaida
2019, arXiv:1910.00019; Roberts, Yaida, Hanin 2021, ch. 4). Rule 4.5 of physics.md §6
(K is the exact 2-pt function, so 2-pt corrections are dropped) then fails as stated: a fit
that subtracts Wick(K) from the 4-pt function also absorbs the 2-pt shift into λ. Such
ensembles declare ``two_point_exact = False``, and their :meth:`MLP.kernel` warns
(:class:`TwoPointWarning`) whenever it is asked for K. They also have no exact finite-width
oracle (``exact_moments = None``): the inference falls back to the sampled noise model.

:class:`JaxNetwork` — any ``init(key, width) -> params`` and ``apply(params, X) -> f``.
Without a kernel function its kernel is a Monte Carlo estimate over a fixed set of wide
networks (:meth:`JaxNetwork.kernel_stderr` gives its standard error). It saves and reloads
when ``init`` and ``apply`` are named by import path (``"package.module:function"``).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from .. import _checks
from .._checks import NNGPInputError
from .activations import ACTIVATIONS, quadrature_names
from .core import (
    ENSEMBLES,
    SingleLayerNet,
    allow_import,
    ensemble_from_dict,
    import_allowed,
    kernel_growth_numeric,
    module_of,
    network_keys,
    refuse_import,
    register_ensemble,
)
from .quadrature import pair_expectation

__all__ = [
    "TwoPointWarning",
    "warn_two_point",
    "MLP",
    "JaxNetwork",
]


class TwoPointWarning(UserWarning):
    """K is used where the finite-width 2-pt function is meant, for an ensemble in which
    they differ (``two_point_exact = False``)."""


def warn_two_point(net, stacklevel: int = 3) -> None:
    """Warn (:class:`TwoPointWarning`) that ``net``'s kernel is not its 2-pt function."""
    if getattr(net, "two_point_exact", True):
        return
    warnings.warn(
        f"{net!r}: K is the infinite-width kernel, but the finite-width 2-pt function of "
        "this ensemble differs from it at O(1/N), so rule 4.5 (K is the exact 2-pt "
        "function) does not hold: G4 - Wick(K) then contains the 2-pt shift as well as the "
        "connected 4-pt function, and a coupling fitted to it absorbs that shift. Compare "
        "with the connected correlators of the sampled data (wick.connected_correlator on "
        "the measured 2-pt function) before reading lambda as the quartic coupling",
        TwoPointWarning,
        stacklevel=stacklevel,
    )


def _quadrature_recursion(h, depth, sb2, sw2, vx, vy, mxy):
    """The recursion of the module docstring in NumPy (for ``jax.pure_callback``)."""

    def diagonal(v):
        # Many rows share a variance (a lattice line, repeated inputs): integrate each once.
        u, inv = np.unique(np.asarray(v, dtype=np.float64), return_inverse=True)
        return pair_expectation(h, u, u, u)[inv.reshape(np.shape(v))]

    vx, vy, mxy = (np.asarray(t, dtype=np.float64) for t in (vx, vy, mxy))
    for _ in range(depth):
        mxy = sb2 + sw2 * pair_expectation(h, vx, vy, mxy)
        vx, vy = sb2 + sw2 * diagonal(vx), sb2 + sw2 * diagonal(vy)
    return mxy


def _mlp_names() -> list[str]:
    """Activations an MLP takes: every elementwise one, the closed forms first."""
    closed = sorted(n for n, a in ACTIVATIONS.items() if a.pair is not None
                    and not a.needs_variance)
    return closed + quadrature_names()


# --------------------------------------------------------------------------------------------
# deep MLP
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, init=False)
class MLP(SingleLayerNet):
    r"""Fully connected net with ``depth`` hidden layers of width N (module docstring).

    ``activation``: ``"erf"`` or ``"relu"`` (closed-form kernels), or any name known to
    :class:`nngp_ppl.ActivationNet` (``tanh``, ``gelu``, ``sin``, ``softplus``, or one
    added with :func:`nngp_ppl.register_activation`; kernel by quadrature, which runs in
    NumPy through ``jax.pure_callback``: traceable, not differentiable). ``depth = 1``
    reproduces the single-layer ensembles' kernels (tested against ErfNet, ReLUNet and
    ActivationNet); for depth >= 2, ``two_point_exact`` is False.

    No exact finite-width oracle: ``exact_moments = None``, ``exact_max_order = 0``.
    """

    depth: int = 2
    activation: str = "erf"

    name: ClassVar[str] = "mlp"
    exact_moments: ClassVar[str | None] = None
    exact_max_order: ClassVar[int] = 0

    def __init__(self, depth=2, activation="erf", d_in=1, sigma_w=1.0, sigma_b=1.0,
                 mu_w=0.0, mu_b=0.0):
        depth = _checks.positive_int("depth", depth)
        if not isinstance(activation, str):
            raise NNGPInputError(
                f"activation must be a name, got {type(activation).__name__}; register a "
                "function first with nngp_ppl.register_activation(name, fn) and pass its name"
            )
        key = activation.lower()
        if key not in _mlp_names():
            raise NNGPInputError(
                f"activation must be one of {_mlp_names()} (or "
                f"a name added with nngp_ppl.register_activation), got {activation!r}"
            )
        for field, value in (("depth", depth), ("activation", key), ("d_in", d_in),
                             ("sigma_w", sigma_w), ("sigma_b", sigma_b), ("mu_w", mu_w),
                             ("mu_b", mu_b)):
            object.__setattr__(self, field, value)
        object.__setattr__(self, "spec", ACTIVATIONS[key])
        self.__post_init__()

    def __reduce__(self):
        return (type(self), (self.depth, self.activation, self.d_in, self.sigma_w,
                             self.sigma_b, self.mu_w, self.mu_b))

    @classmethod
    def from_description(cls, d: dict) -> MLP:
        """Inverse of :meth:`to_dict` (used by
        :func:`nngp_ppl.ensembles.core.ensemble_from_dict`)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in fields})

    @property
    def two_point_exact(self) -> bool:
        """Whether E[f(x) f(y)] = K(x, y) at every width: only for a single hidden layer."""
        return self.depth == 1

    # --- kernel -----------------------------------------------------------------------------
    def kernel(self, X, Y=None) -> np.ndarray:
        """The NNGP kernel K (infinite width). For depth >= 2 it is *not* the finite-width
        2-pt function, and a :class:`TwoPointWarning` says so."""
        warn_two_point(self)
        return super().kernel(X, Y)

    def traced_kernel(self, X, Y):
        mxy = self.preactivation_cov(X, Y)
        vx = self.preactivation_var(X)
        vy = self.preactivation_var(Y)
        sb2, sw2 = self.sigma_b**2, self.sigma_w**2
        pair = self.spec.pair
        if pair is not None:
            for _ in range(self.depth):
                mxy = sb2 + sw2 * pair(vx[:, None], vy[None, :], mxy)
                vx, vy = sb2 + sw2 * pair(vx, vx, vx), sb2 + sw2 * pair(vy, vy, vy)
            return mxy
        h = self.spec.numpy_fn
        vx = jnp.broadcast_to(vx[:, None], mxy.shape)
        vy = jnp.broadcast_to(vy[None, :], mxy.shape)

        def callback(a, b, c):
            return _quadrature_recursion(h, self.depth, sb2, sw2, a, b, c)

        shape = jax.ShapeDtypeStruct(mxy.shape, jnp.float64)
        return jax.pure_callback(callback, shape, vx, vy, mxy, vmap_method="broadcast_all")

    def kernel_growth(self, propagator: str = "full") -> float | None:
        """Measured from the kernel (:func:`~nngp_ppl.ensembles.core.kernel_growth_numeric`)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TwoPointWarning)
            return kernel_growth_numeric(self, propagator)

    # --- finite-width networks ------------------------------------------------------------
    def _phi(self, z):
        return self.spec.jax_fn(z)

    def _layers(self, key, X, width: int, dtype):
        """(last hidden activations (width, n), readout draw) of the network of ``key``."""
        # Python floats keep the batch in `dtype` (see SingleLayerNet.network_outputs).
        s_in = float(self.sigma_w / np.sqrt(self.d_in))
        s_hid = float(self.sigma_w / np.sqrt(width))
        mu_w, mu_b, sb = float(self.mu_w), float(self.mu_b), float(self.sigma_b)

        def layer(k, fan_in, fan_out, scale, h, mean):
            kw, kb = jax.random.split(k)
            W = mean + scale * jax.random.normal(kw, (fan_out, fan_in), dtype)
            b = mu_b + sb * jax.random.normal(kb, (fan_out,), dtype)
            return W @ h + b[:, None]

        # A layer fed by N neurons has weight mean mu_W / N, as the single-layer readout
        # (ensembles module docstring): with mean mu_W its pre-activations' mean grows like N
        # and the ensemble has no N -> infinity limit.
        mu_hid = mu_w / width
        z = layer(jax.random.fold_in(key, 0), self.d_in, width, s_in, X.T, mu_w)  # (width, n)
        for ell in range(1, self.depth):
            z = layer(jax.random.fold_in(key, ell), width, width, s_hid, self._phi(z), mu_hid)
        h = self._phi(z)

        def readout():
            return layer(jax.random.fold_in(key, self.depth), width, 1, s_hid, h, mu_hid)[0]

        return h, readout

    def network_outputs(self, keys, X, width: int, dtype=jnp.float32):
        """Outputs (len(keys), n), one network per key; layer l draws from fold_in(key, l)."""
        X = jnp.asarray(X, dtype)

        def one(key):
            return self._layers(key, X, width, dtype)[1]()

        return jax.vmap(one)(keys)

    def hidden_features(self, keys, X, width: int, dtype=jnp.float32):
        r"""Last hidden layer :math:`\sigma(z^{(L)})` (len(keys), width, n) of the networks of
        ``keys`` (the same networks as :meth:`network_outputs`).

        Given them, f is exactly Gaussian with covariance :math:`\Sigma(x, y) = \sigma_b^2
        + \frac{\sigma_W^2}{N}\sum_i \sigma(z_i^{(L)}(x))\,\sigma(z_i^{(L)}(y))` (for zero
        means), so :math:`G^{(2)} = E[\Sigma]` and the connected 4-pt function is
        :math:`\mathrm{Cov}(\Sigma_{12}, \Sigma_{34}) + \mathrm{Cov}(\Sigma_{13},
        \Sigma_{24}) + \mathrm{Cov}(\Sigma_{14}, \Sigma_{23})` (law of total cumulance):
        estimators with the readout layer integrated out exactly (``benchmarks/mlp_scaling.py``).
        """
        X = jnp.asarray(X, dtype)
        return jax.vmap(lambda key: self._layers(key, X, width, dtype)[0])(keys)

    def parameter_count(self, width: int) -> int:
        """Random numbers drawn per network (for memory estimates)."""
        return (width * (self.d_in + 1) + (self.depth - 1) * width * (width + 1)
                + width + 1)


# --------------------------------------------------------------------------------------------
# a user's own network
# --------------------------------------------------------------------------------------------
def _import_path(spec: str, what: str) -> Callable:
    """The object named ``"package.module:qualname"``."""
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise NNGPInputError(
            f"{what} must be a callable or an import path 'package.module:function', got "
            f"{spec!r}"
        )
    module, qualname = spec.split(":")
    try:
        obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as err:
        raise NNGPInputError(f"{what}: cannot import {spec!r} ({err})") from None
    if not callable(obj):
        raise NNGPInputError(f"{what}: {spec!r} is not callable")
    return obj


def _path_of(fn: Callable) -> str | None:
    """The import path that resolves back to ``fn`` itself, or None (a closure, a lambda,
    a function of a script run as ``__main__``)."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<" in qualname:
        return None
    try:
        back = _import_path(f"{module}:{qualname}", "fn")
    except NNGPInputError:
        return None
    return f"{module}:{qualname}" if back is fn else None


@dataclass(frozen=True, init=False, eq=False)
class JaxNetwork(SingleLayerNet):
    r"""An ensemble of the user's own JAX network: ``init(key, width) -> params`` draws one
    network of width N, ``apply(params, X) -> f`` evaluates it on the (n, d_in) inputs
    (an (n,) or (n, 1) output). Both are traced by ``jax.jit`` and ``jax.vmap``.

    ``init`` and ``apply`` are callables or import paths ``"package.module:function"``.
    Only the second form (or module-level functions whose path resolves back to them)
    can be saved: a closure cannot be written to a file and reloaded.

    The kernel is ``kernel(X, Y) -> (n, m)`` when given: a traceable JAX function, or an
    ensemble of this package with the same NNGP kernel (e.g. ``MLP(2, "tanh", ...)`` for a
    two-hidden-layer tanh network; it saves with the network). Otherwise it is the Monte
    Carlo estimate

    .. math:: \hat K(x, y) = \frac1M \sum_{j=1}^{M} f_j(x)\, f_j(y)

    over M = ``kernel_nets`` fixed networks of width ``kernel_width`` (keys from
    ``kernel_seed``, disjoint from the sampler's use of a seed only by convention: pick
    another seed for the data). The same networks serve every (x, y), so :math:`\hat K` is
    a smooth, positive semi-definite, traceable function (the vertex integrals jit and vmap
    it); its standard error is :meth:`kernel_stderr`, about :math:`\sqrt{2/M}\,K` (the
    readout noise is not integrated out for an unknown architecture: M = 4096 gives 2%).
    It is the 2-pt function at
    ``kernel_width``, which is the NNGP kernel up to O(1/kernel_width) when the network's
    2-pt function depends on the width (``two_point_exact=False``, the default: the
    package cannot know).

    ``sigma_b``: the standard deviation of an exactly Gaussian output bias, the constant
    part of K that the ``bias_subtracted`` propagator removes (0 if there is none).
    ``name``: a label for reports and files.
    """

    init: Callable | str = None
    apply: Callable | str = None
    label: str = "own"
    kernel_fn: Callable | str | SingleLayerNet | None = None
    kernel_width: int = 1024
    kernel_nets: int = 4096
    kernel_seed: int = 12345
    declared_two_point_exact: bool = False

    name: ClassVar[str] = "jax_network"
    exact_moments: ClassVar[str | None] = None
    exact_max_order: ClassVar[int] = 0

    def __init__(self, init, apply, d_in=1, *, name="own", kernel=None, sigma_b=0.0,
                 kernel_width=1024, kernel_nets=4096, kernel_seed=12345,
                 two_point_exact=False):
        for what, fn in (("init", init), ("apply", apply), ("kernel", kernel)):
            if what == "kernel" and (fn is None or isinstance(fn, SingleLayerNet)):
                if fn is not None and fn.d_in != d_in:
                    raise NNGPInputError(
                        f"kernel: the ensemble {fn!r} has d_in={fn.d_in}, the network {d_in}"
                    )
                continue
            # The caller named these functions, so a file this net writes may name them
            # back (from_description refuses functions of any module not named so).
            if isinstance(fn, str):
                allow_import(module_of(fn, what))
                _import_path(fn, what)
            elif callable(fn) and getattr(fn, "__module__", None) not in (None, "__main__"):
                allow_import(fn.__module__)
            elif not callable(fn):
                raise NNGPInputError(
                    f"{what} must be a callable or an import path 'package.module:function', "
                    f"got {type(fn).__name__}"
                )
        if not isinstance(name, str) or not name.isidentifier():
            raise NNGPInputError(f"name must be an identifier such as 'my_net', got {name!r}")
        if name.lower() in ENSEMBLES or name.lower() in ACTIVATIONS:
            raise NNGPInputError(
                f"name {name!r} is the name of a built-in ensemble or activation; choose "
                "another, so that no file confuses the two"
            )
        if not isinstance(two_point_exact, (bool, np.bool_)):
            raise NNGPInputError(f"two_point_exact must be True or False, got {two_point_exact!r}")
        values = (("init", init), ("apply", apply), ("label", name), ("kernel_fn", kernel),
                  ("kernel_width", _checks.positive_int("kernel_width", kernel_width)),
                  ("kernel_nets", _checks.positive_int("kernel_nets", kernel_nets)),
                  ("kernel_seed", _checks.seed("kernel_seed", kernel_seed)),
                  ("declared_two_point_exact", bool(two_point_exact)),
                  ("d_in", d_in), ("sigma_w", 1.0), ("sigma_b", sigma_b), ("mu_w", 0.0),
                  ("mu_b", 0.0))
        for field, value in values:
            object.__setattr__(self, field, value)
        self.__post_init__()

    def __reduce__(self):
        return (_rebuild_jax_network, (self._fields(),))

    def _fields(self) -> dict:
        return {"init": self.init, "apply": self.apply, "d_in": self.d_in, "name": self.label,
                "kernel": self.kernel_fn, "sigma_b": self.sigma_b,
                "kernel_width": self.kernel_width, "kernel_nets": self.kernel_nets,
                "kernel_seed": self.kernel_seed, "two_point_exact": self.two_point_exact}

    def __repr__(self):
        return f"JaxNetwork(name={self.label!r}, d_in={self.d_in})"

    def describe(self) -> str:
        kernel = "Monte Carlo kernel" if self.kernel_fn is None else "given kernel"
        return (f"own network {self.label!r} (d_in={self.d_in}, sigma_b={self.sigma_b}, "
                f"{kernel})")

    def _identity(self) -> tuple:
        # A function and its import path are the same network: a reloaded file equals
        # the net that wrote it (and shares the sampler's compilation cache with it).
        fns = []
        for value in (self.init, self.apply, self.kernel_fn):
            plain = value is None or isinstance(value, (str, SingleLayerNet))
            fns.append(value if plain else (_path_of(value) or value))
        return (*fns, self.label, self.d_in, self.sigma_b, self.kernel_width,
                self.kernel_nets, self.kernel_seed, self.declared_two_point_exact)

    def __eq__(self, other):
        return type(other) is type(self) and self._identity() == other._identity()

    def __hash__(self):
        return hash(self._identity())

    @property
    def two_point_exact(self) -> bool:
        """As declared (default False: a deep or unknown architecture)."""
        return self.declared_two_point_exact

    # --- the user's functions ---------------------------------------------------------------
    def _fn(self, what: str):
        fn = getattr(self, {"kernel": "kernel_fn"}.get(what, what))
        return _import_path(fn, what) if isinstance(fn, str) else fn

    # --- serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict:
        """``{"ensemble": "jax_network", "init": "pkg.mod:fn", ...}``; refused for a
        function that has no import path resolving back to it."""
        out = {"ensemble": self.name}
        for what in ("init", "apply", "kernel"):
            fn = self._fn(what) if what != "kernel" or self.kernel_fn is not None else None
            if fn is None:
                out[what] = None
                continue
            if isinstance(fn, SingleLayerNet):
                out[what] = fn.to_dict()
                continue
            path = getattr(self, {"kernel": "kernel_fn"}.get(what, what))
            path = path if isinstance(path, str) else _path_of(fn)
            if path is None:
                raise NNGPInputError(
                    f"JaxNetwork {self.label!r} cannot be saved: its {what} function "
                    f"{getattr(fn, '__qualname__', fn)!r} has no import path (a closure, a "
                    "lambda or a function of a script run directly), so a file could not "
                    "reload it. Put it in an importable module and pass "
                    f"{what}='package.module:function', e.g. JaxNetwork("
                    "'mynets.deep:init', 'mynets.deep:apply', d_in=...)"
                )
            out[what] = path
        out.update(name=self.label, d_in=self.d_in, sigma_b=self.sigma_b,
                   kernel_width=self.kernel_width, kernel_nets=self.kernel_nets,
                   kernel_seed=self.kernel_seed, two_point_exact=self.two_point_exact)
        return out

    @classmethod
    def from_description(cls, d: dict) -> JaxNetwork:
        """Inverse of :meth:`to_dict`: imports ``init``/``apply`` by their paths, which must
        be in modules the user named (:func:`~nngp_ppl.allow_import`; a description read
        from a file never chooses code to import and call)."""
        keys = ("init", "apply", "d_in", "name", "kernel", "sigma_b", "kernel_width",
                "kernel_nets", "kernel_seed", "two_point_exact")
        missing = [k for k in ("init", "apply") if not d.get(k)]
        if missing:
            raise NNGPInputError(f"JaxNetwork description lacks {missing}")
        d = dict(d)
        for what in ("init", "apply", "kernel"):
            # A file is data: it may name functions only from modules the user named.
            path = d.get(what)
            if isinstance(path, str) and not import_allowed(module_of(path, what)):
                raise refuse_import(path, f"JaxNetwork {what} function")
        if isinstance(d.get("kernel"), dict):

            d["kernel"] = ensemble_from_dict(d["kernel"])
        return cls(**{k: d[k] for k in keys if k in d})

    # --- finite-width networks ------------------------------------------------------------
    def network_outputs(self, keys, X, width: int, dtype=jnp.float32):
        """``apply(init(key, width), X)`` for each key, as (len(keys), n) in ``dtype``."""
        init, apply = self._fn("init"), self._fn("apply")
        X = jnp.asarray(X, dtype)
        n = X.shape[0]

        def one(key):
            f = jnp.asarray(apply(init(key, width), X))
            if f.size != n:
                raise NNGPInputError(
                    f"apply must return one output per input ({n}), got shape {f.shape}"
                )
            return f.reshape(n).astype(dtype)

        return jax.vmap(one)(keys)

    def parameter_count(self, width: int) -> int:
        """Numbers in one network's parameters (``jax.eval_shape`` of ``init``; no draw)."""
        init = self._fn("init")
        shapes = jax.eval_shape(lambda key: init(key, int(width)), jax.random.PRNGKey(0))
        return int(sum(np.prod(leaf.shape, dtype=np.int64)
                       for leaf in jax.tree_util.tree_leaves(shapes)))

    # --- kernel -----------------------------------------------------------------------------
    def _kernel_networks(self, X):
        """(M, n) outputs of the fixed kernel networks, in float64."""
        return _kernel_outputs(self)(X)

    def kernel(self, X, Y=None) -> np.ndarray:
        """K from ``kernel_fn``, or the Monte Carlo estimate of the class docstring."""
        warn_two_point(self)
        return super().kernel(X, Y)

    def traced_kernel(self, X, Y):
        if isinstance(self.kernel_fn, SingleLayerNet):
            return self.kernel_fn.traced_kernel(X, Y)
        if self.kernel_fn is not None:
            return jnp.asarray(self._fn("kernel")(X, Y))
        # The Gram matrix (Y is X) draws the kernel networks once, not twice.
        FX = self._kernel_networks(X)
        FY = FX if Y is X else self._kernel_networks(Y)
        return FX.T @ FY / self.kernel_nets

    def kernel_stderr(self, X, Y=None) -> np.ndarray:
        r"""Standard error of the Monte Carlo kernel, :math:`\mathrm{sd}_j(f_j(x) f_j(y))/\sqrt M`
        (zeros when ``kernel_fn`` gives K exactly)."""
        X = _checks.inputs("X", X, self.d_in)
        Y = X if Y is None else _checks.inputs("Y", Y, self.d_in)
        if self.kernel_fn is not None:
            return np.zeros((len(X), len(Y)))
        FX = np.asarray(self._kernel_networks(jnp.asarray(X)))
        FY = FX if Y is X else np.asarray(self._kernel_networks(jnp.asarray(Y)))
        prod = FX[:, :, None] * FY[:, None, :]
        return prod.std(axis=0, ddof=1) / np.sqrt(self.kernel_nets)

    def kernel_growth(self, propagator: str = "full") -> float | None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TwoPointWarning)
            return kernel_growth_numeric(self, propagator)


@functools.lru_cache(maxsize=16)
def _kernel_outputs(net: JaxNetwork):
    # Compiled once per net: run eagerly, vmap over thousands of networks dispatches op by
    # op (3 s for 4000 width-16 networks on 2 CPU cores).
    keys = network_keys(net.kernel_seed, net.kernel_width, 0, net.kernel_nets)
    return jax.jit(lambda X: net.network_outputs(keys, X, net.kernel_width, jnp.float64))


def _rebuild_jax_network(fields: dict) -> JaxNetwork:
    return JaxNetwork(**fields)


register_ensemble(MLP)
register_ensemble(JaxNetwork)
