"""Studies as data: a TOML file describes what :func:`nngp_ppl.study.stages.reproduce` runs.

``nngp-ppl reproduce --config study.toml`` samples, computes the exact finite-width
correlators where the ensemble has an oracle, fits, infers, runs the flow and writes the
report for any ensembles, inputs, widths, cutoffs and couplings the file names. The
paper's ``quick`` and ``paper`` presets are two such files shipped with the package
(``nngp_ppl/studies/quick.toml``, ``paper.toml``); ``examples/tanh_2d.toml`` is a user's
study. The schema (every key is checked; an unknown or mistyped key is refused with its
name)::

    name = "tanh_2d"                 # required: the study's name (shown in the report)
    n_nets = 20000                   # required: networks per width
    widths = [2, 5, 20]              # required: hidden widths (or "paper": the ten)
    fit_cutoffs = [10, 100, 1000]    # required: point-estimate cutoffs (or "paper": 21)
    infer_cutoffs = [10, 100]        # required: posterior cutoffs
    six_point_cutoff = 10.0          # default: the first infer cutoff
    chunk = 100000                   # networks per resumable part (default min(1e5, n_nets))
    seed = 0
    num_chains = 4                   # NUTS chains, draws and warm-up per posterior
    num_samples = 1000
    num_warmup = 500
    covariance = "auto"              # noise model: auto, exact, sample, gp
    symmetries = []                  # declared symmetries: [] (default) or ["z2"] (f -> -f)
    odd_orders = false               # measure odd orders 1, 3, 5 and test f -> -f

    [infer]                          # the operator basis the posteriors fit (default
    max_dimension = 6                # lambda): every f^k up to max_dimension respecting
    symmetry = "z2"                  # symmetry (default: the declared ones), or
                                     # couplings = ["g3", "lambda"]; [run.infer] per run
                                     # (nngp_ppl.inference.basis_choice)

    [infer_widths]                   # optional overrides by run key
    erf = [5, 20]

    [[run]]                          # one per sampled ensemble, in report order
    key = "tanh"                     # required: names its files (letters, digits, _)
    ensemble = "tanh"                # required: erf, relu, gauss, mlp, an activation
                                     # (tanh, gelu, sin, softplus, registered ones), a
                                     # registered class or "package.module:Class"
    title = "tanh-net"               # label in the report (default "<ensemble>-net")
    d_in = 2
    sigma_b = 1.0                    # optional: passed to the ensemble when given
    inputs = [[0.5, 0.5], [1, 0.5]]  # or "paper" (the authors' inputs: erf/relu/gauss)
    widths = [2, 5, 20]              # default: the study's widths
    infer_widths = [5, 20]           # widths with posteriors (default: all sampled)
    ngp_width = 5                    # width of the λ(Λ) figures: the nearest sampled one
    role = "main"                    # main (N sweep), sigma_b, dim (RG in d_in > 1)
    propagators = ["full"]           # point-fit conventions; the first one is inferred
    order = 1                        # perturbative order of fit/infer
    symmetries = ["z2"]              # declared symmetries (default: the study's, else none)
                                     # (a run with mu_w/mu_b != 0 in [run.params] is fitted
                                     # centred, basis g3, lambda unless z2 is declared or
                                     # [run.infer] says otherwise: RunSpec.centred)
    odd_orders = true                # measure orders 1..6 and test f -> -f (default: the
                                     # study's; implied by a declared symmetry)
    [run.params]                     # further constructor arguments of the ensemble
    sigma_w = 1.5

    [train]                          # optional: train a run's networks on data, record
    steps = [0, 10, 100]             # their correlators per step (schema and checks:
    learning_rate = 0.5              # nngp_ppl.study.train_spec)
    x_train = [-1.0, 0.0, 1.0]
    y_train = [0.3, -0.2, 0.5]

Validation happens when the file is read, and again (:func:`check_study`) when
:func:`~nngp_ppl.study.stages.reproduce` starts, before any stage: the TOML syntax
(``tomllib``), every key's type and range, run keys unique and at most
:data:`MAX_KEY_LENGTH` characters (they name files), names and titles at most
:data:`MAX_TEXT_LENGTH`, at least two NUTS chains, inferred widths among the sampled ones,
the ensemble constructible from its description and saveable to a file (so that every
later stage can read it back), the inputs of dimension ``d_in`` within the shared bounds,
the kernel on them symmetric, nowhere zero and not overflowing; every cutoff (fit, infer,
6-pt) at least the inputs' extent and within the bound of the vertex integrals;
``covariance = "exact"`` only for ensembles with an exact oracle; the posterior draws
within memory. Settings changed in Python (:func:`dataclasses.replace`, the CLI's
``--n-nets``) are checked the same way. Errors are :class:`~nngp_ppl.NNGPInputError`
naming the file, the run and the key.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import tomllib
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from .. import _checks
from .._checks import NNGPInputError
from ..ensembles.core import make_ensemble, net_label
from ..inference import infer_couplings
from ..inference.basis_choice import infer_basis
from ..inference.centring import (
    CENTRED_ORDERS,
    check_mean_net,
    default_centred_orders,
    propagator_net,
    raw_orders,
)
from ..inference.problem import basis as basis_of
from ..inference.problem import exact_noise_available
from ..inference.symmetry import SYMMETRIES
from ..sampling.sampler import MAX_WIDTH
from ..theory.exact import limit_kernel
from ..theory.lattice import check_box
from ..theory.operators import operator
from ..tuples import distinct_tuples
from ..vocabulary import COVARIANCES, PROPAGATORS
from .presets import PAPER_CUTOFFS, PAPER_INPUTS, PAPER_WIDTHS, paper_inputs
from .train_spec import check_train, plan_entry, train_spec

__all__ = [
    "ORDERS",
    "ODD_ORDERS",
    "RunSpec",
    "Preset",
    "PRESETS",
    "get_preset",
    "run_file",
    "exact_file",
    "fit_file",
    "posterior_file",
    "beta_file",
    "second_order_files",
    "symmetry_file",
    "target_file",
    "part_file",
    "plan_dict",
    "STUDY_KEYS",
    "RUN_KEYS",
    "ROLES",
    "COVARIANCES",
    "SHIPPED",
    "MAX_KEY_LENGTH",
    "MAX_TEXT_LENGTH",
    "supported_orders",
    "check_study",
    "load_study",
    "study_from_text",
    "shipped_study",
    "check_preset_overrides",
]

#: Top-level keys: (required, kind).
#: The correlator orders every run measures (the 2-pt function enters the connected ones).
ORDERS = (2, 4, 6)
#: The orders of a run that tests f -> -f (``odd_orders`` or a declared symmetry): the odd
#: correlators are the test's data (:mod:`nngp_ppl.inference.symmetry`).
ODD_ORDERS = (1, 2, 3, 4, 5, 6)


@dataclass(frozen=True)
class RunSpec:
    """One sampled ensemble of the study.

    ``key`` names its files; ``widths`` are sampled, ``infer_widths`` get posteriors,
    ``ngp_width`` is the width the λ(Λ) and 6-pt figures show (the paper's "NGP" width);
    ``propagators`` are the vertex-leg conventions of the point fits (the first one is used
    for the posteriors); ``role`` is ``"main"`` (d_in = 1, the N sweep), ``"sigma_b"``
    (the ReLU-net bias the authors' script really ran) or ``"dim"`` (the RG study in
    d_in = 2, 3).
    """

    key: str
    ensemble: str
    sigma_b: float | None
    d_in: int
    widths: tuple[int, ...]
    infer_widths: tuple[int, ...]
    ngp_width: int
    role: str = "main"
    propagators: tuple[str, ...] = ("full",)
    #: Further constructor arguments of the ensemble, as sorted (name, value) pairs.
    params: tuple = ()
    #: The inputs: "paper" (the authors' set for this ensemble and d_in) or the points.
    points: str | tuple = "paper"
    #: Perturbative order of the fit and the posteriors.
    order: int = 1
    #: Name of the ensemble in the report (default "<ensemble>-net").
    title: str | None = None
    #: Declared symmetries (``"z2"``: f -> -f). Nothing is pruned by default; a declared
    #: symmetry is tested against the data (a rejection warns and the report says so).
    symmetries: tuple[str, ...] = ()
    #: Measure the odd orders 1, 3, 5 and run the parity test (implied by ``symmetries``).
    odd_orders: bool = False
    #: The operator basis of the posteriors (validated: nngp_ppl.inference.basis_choice); odd
    #: couplings make the run measure the odd orders.
    basis: tuple[str, ...] = ("lambda",)

    @property
    def orders(self) -> tuple[int, ...]:
        """The orders the sample stage measures: :data:`ODD_ORDERS` for a run that tests
        f -> -f, else :data:`ORDERS`."""
        tested = (self.odd_orders or self.symmetries or not self.zero_mean
                  or any(not operator(c).even for c in self.basis))
        return ODD_ORDERS if tested else ORDERS

    @property
    def tests_symmetry(self) -> bool:
        """Whether the run has a symmetry stage (the parity test on its odd correlators)."""
        return 1 in self.orders

    @property
    def zero_mean(self) -> bool:
        """Whether the ensemble's parameters have zero means (``zero_mean``; True for an
        ensemble that does not say). The even-coupling stages (exact summary, fit,
        posteriors, flow, the report's even-coupling sections) expand around the zero-mean
        GP kernel; a run with non-zero means is fitted centred instead (:attr:`centred`)."""
        return bool(getattr(self.net(), "zero_mean", True))

    @property
    def centred(self) -> bool:
        """Whether the run has non-zero means and the centred theory describes it
        (physics.md §6d, :mod:`nngp_ppl.inference.centred`: ErfNet, GaussNet and
        ActivationNet, whose limit covariance with means is a traced kernel). Such a run gets
        the centred fit, posterior and flow stages beside its sample and symmetry stages; a
        run with means outside it (an ensemble :func:`~nngp_ppl.inference.centring.check_mean_net`
        refuses) would keep only its sample and symmetry stages, but reading the study
        already refuses those, which have no limit kernel either (ReLU-net, MLP)."""
        if self.zero_mean:
            return False
        try:
            check_mean_net(self.net())
        except NNGPInputError:
            return False
        return True

    def centred_oracle(self) -> dict:
        """The exact centred target's availability for a :attr:`centred` run: the raw
        moment order its basis needs (``needed_order``: the highest raw order of the
        centred data orders, :func:`~nngp_ppl.inference.centring.default_centred_orders`)
        against the oracle the ensemble declares (``moments``, ``max_order``), and
        ``available``."""
        oracle = self.exact_oracle()
        needed = max(raw_orders(default_centred_orders(self.basis)))
        return {"moments": oracle["moments"], "max_order": oracle["max_order"],
                "needed_order": needed,
                "available": bool(self.centred and oracle["moments"] is not None
                                  and oracle["max_order"] >= needed)}

    def net(self):
        """The ensemble, built from its description (a name, a registered class or an
        import path, with ``d_in``, ``sigma_b`` when given, and ``params``)."""

        hyper = dict(self.params, d_in=self.d_in)
        if self.sigma_b is not None:
            hyper["sigma_b"] = self.sigma_b
        return make_ensemble(self.ensemble, **hyper)

    def inputs(self) -> np.ndarray:
        if isinstance(self.points, str):

            return paper_inputs(self.ensemble, self.d_in)
        return np.asarray(self.points, dtype=np.float64).reshape(-1, self.d_in)

    @property
    def label(self) -> str:

        title = self.title or net_label(self.ensemble)
        parts = [] if self.sigma_b is None else [f"σ_b={self.sigma_b:g}"]
        # Non-zero parameter means name a different (symmetry-broken) ensemble.
        parts += [f"{k}={v:g}" for k, v in self.params if k in ("mu_w", "mu_b") and v]
        parts += [f"d_in={self.d_in}"] if self.d_in != 1 else []
        return f"{title} ({', '.join(parts)})" if parts else title

    def exact_oracle(self) -> dict:
        """The exact-moment capability the ensemble declares (``exact_moments``: which
        oracle of :mod:`nngp_ppl.theory.exact`, or None; ``exact_max_order``) and the order
        the exact stage needs (the highest of :data:`ORDERS`); the report states it for a
        run without an exact file."""
        net = self.net()
        moments = getattr(net, "exact_moments", None)
        return {"moments": None if moments is None else str(moments),
                "max_order": int(getattr(net, "exact_max_order", 0)),
                "needed_order": max(ORDERS)}

    def has_exact(self) -> bool:
        """Whether the ensemble's exact oracle reaches the 6-pt function (the exact stage):
        the capability it declares (``exact_moments``, ``exact_max_order``)."""
        oracle = self.exact_oracle()
        return (oracle["moments"] is not None and oracle["max_order"] >= oracle["needed_order"]
                and self.zero_mean)


@dataclass(frozen=True)
class Preset:
    """A study: its sizes and its runs (:mod:`nngp_ppl.study.spec` reads one from TOML).
    ``quick`` fits the demo's budget; ``paper`` is the paper's scale (physics.md §9);
    both are TOML files shipped in ``nngp_ppl/studies/``. Change a field with
    :func:`dataclasses.replace`: runs without their own ``widths`` sample the study's,
    ``infer_widths`` (by run key) overrides the runs' own, and each run's ``ngp_width``
    is the sampled width nearest the one it names."""

    name: str
    n_nets: int
    chunk: int
    widths: tuple[int, ...]
    fit_cutoffs: tuple[float, ...]
    infer_cutoffs: tuple[float, ...]
    six_point_cutoff: float
    num_chains: int
    num_samples: int
    num_warmup: int
    infer_widths: dict = field(default_factory=dict, hash=False)
    seed: int = 0
    only: tuple[str, ...] = ()
    #: Noise model of the coupling posteriors (nngp_ppl.inference.problem.choose_noise): "auto"
    #: takes
    #: the exact finite-width moments, or the sampled ones with a Student-t likelihood where
    #: the tails are heavy.
    covariance: str = "auto"
    #: The runs as the study file gives them (unresolved: see the class docstring).
    run_table: tuple[RunSpec, ...] = ()
    #: Where the study was read from (named in errors); not part of its settings.
    source: str | None = field(default=None, compare=False, repr=False)
    #: The ``[train]`` block (:class:`nngp_ppl.study.train_spec.TrainSpec`), or None.
    train: object = None

    @property
    def rg_dims(self) -> tuple[int, ...]:
        """Input dimensions of the RG study (runs of role ``dim``)."""
        return tuple(sorted({r.d_in for r in self.run_table if r.role == "dim"}))

    def runs(self) -> tuple[RunSpec, ...]:
        """The ensembles of the study, in report order."""
        runs = []
        for t in self.run_table:
            w = tuple(t.widths or self.widths)
            infer = tuple(self.infer_widths.get(t.key, t.infer_widths or w))
            runs.append(dataclasses.replace(
                t, widths=w, infer_widths=infer,
                ngp_width=_closest(w, t.ngp_width or infer[0])))
        if self.only:
            unknown = sorted(set(self.only) - {r.key for r in runs})
            if unknown:
                raise NNGPInputError(
                    f"only must name runs of this preset ({', '.join(r.key for r in runs)}), "
                    f"got {', '.join(unknown)}")
            runs = [r for r in runs if r.key in self.only]
        return tuple(runs)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["infer_widths"] = {k: list(v) for k, v in self.infer_widths.items()}
        d["only"] = list(self.only)
        d["run_table"] = [_run_dict(r) for r in self.run_table]
        d.pop("source")  # where it was read from changes no result (nor a stage's key)
        return d


def _closest(widths, target: int) -> int:
    return int(min(widths, key=lambda w: (abs(np.log(w / target)), w)))


def _run_dict(run: RunSpec) -> dict:
    d = dataclasses.asdict(run)
    d["params"] = dict(run.params)
    d["symmetries"] = list(run.symmetries)
    d["basis"] = list(run.basis)
    return d


class _Shipped(dict):
    """The studies shipped in ``nngp_ppl/studies/``, read on first use."""

    def __missing__(self, name):
        self[name] = shipped_study(name)
        return self[name]

    def __contains__(self, name):
        return name in SHIPPED


#: ``quick`` and ``paper``: the TOML files of ``nngp_ppl/studies/`` (see
#: :mod:`nngp_ppl.study.spec`).
PRESETS = _Shipped()


def get_preset(preset) -> Preset:
    """A :class:`Preset` from its name (``quick``, ``paper``), a TOML study file's path
    (``*.toml``), or itself."""
    if isinstance(preset, Preset):
        return preset
    if isinstance(preset, (str, Path)) and str(preset).endswith(".toml"):

        return load_study(preset)
    if preset not in PRESETS:
        raise NNGPInputError(f"preset must be one of ['paper', 'quick'], got {preset!r}")
    return PRESETS[preset]


# ---------------------------------------------------------------------------------------------
# file layout
# ---------------------------------------------------------------------------------------------
def run_file(key: str) -> str:
    return f"run_{key}.nc"


def exact_file(key: str) -> str:
    return f"exact_{key}.nc"


def fit_file(key: str, propagator: str = "full") -> str:
    return f"fit_{key}.nc" if propagator == "full" else f"fit_{key}_bs.nc"


def posterior_file(key: str) -> str:
    return f"posterior_{key}.nc"


def beta_file(key: str) -> str:
    return f"beta_{key}.nc"


def second_order_files(key: str) -> dict:
    """The files of a run's second-order stage: the (λ, κ) posterior at order 2, its
    β-functions and the connected 6-pt comparison (:mod:`nngp_ppl.inference.connected`)."""
    return {"posterior2": f"posterior2_{key}.nc", "beta2": f"beta2_{key}.nc",
            "sixpoint": f"sixpoint_{key}.nc"}


def symmetry_file(key: str) -> str:
    """The symmetry stage's result: the parity test per width and the odd correlators."""
    return f"symmetry_{key}.json"


def target_file(key: str) -> str:
    """The exact centred target of a run with non-zero means: B(Λ) r of the exact centred
    moments at the posterior's widths and cutoffs (:mod:`nngp_ppl.study.stages`)."""
    return f"target_{key}.json"


def part_file(key: str, width: int, start: int, stop: int) -> str:
    return f"parts/{key}/N{width:05d}_{start:010d}-{stop:010d}.nc"


def plan_dict(preset: Preset) -> dict:
    """Plain description of the study for :mod:`nngp_ppl.study.report`: preset and runs with
    files."""
    runs, tested_only = [], []
    for r in preset.runs():
        if not r.zero_mean:
            files = {"run": run_file(r.key), "symmetry": symmetry_file(r.key)}
            entry = {
                "key": r.key, "label": r.label, "ensemble": r.ensemble,
                "sigma_b": r.sigma_b, "d_in": r.d_in, "widths": list(r.widths),
                "inputs": r.inputs().tolist(), "exact_oracle": r.exact_oracle(),
                "inputs_source": "paper" if isinstance(r.points, str) else "study",
                "params": dict(r.params), "symmetries": list(r.symmetries),
                "orders": list(r.orders), "centred": r.centred, "files": files}
            if r.centred:  # the centred fit, posterior, flow and exact target stages
                oracle = r.centred_oracle()
                files.update({"fit": {p: fit_file(r.key, p) for p in r.propagators},
                              "posterior": posterior_file(r.key), "beta": beta_file(r.key),
                              "target": target_file(r.key) if oracle["available"] else None})
                entry.update(basis=list(r.basis), infer_widths=list(r.infer_widths),
                             propagators=list(r.propagators), centred_oracle=oracle)
            tested_only.append(entry)
            continue
        runs.append({
            "key": r.key, "label": r.label, "ensemble": r.ensemble, "sigma_b": r.sigma_b,
            "d_in": r.d_in, "role": r.role, "widths": list(r.widths),
            "infer_widths": list(r.infer_widths), "ngp_width": r.ngp_width,
            "inputs": r.inputs().tolist(), "propagators": list(r.propagators),
            # Whether the inputs are the authors' set (physics.md §9) or the study's own.
            "inputs_source": "paper" if isinstance(r.points, str) else "study",
            "exact_oracle": r.exact_oracle(),
            "files": {
                "run": run_file(r.key),
                "exact": exact_file(r.key) if r.has_exact() else None,
                "fit": {p: fit_file(r.key, p) for p in r.propagators},
                "posterior": posterior_file(r.key), "beta": beta_file(r.key),
                **(second_order_files(r.key) if r.order == 2 else {}),
                **({"symmetry": symmetry_file(r.key)} if r.tests_symmetry else {}),
            },
            "symmetries": list(r.symmetries), "orders": list(r.orders),
            "basis": list(r.basis),
        })
    # Runs with non-zero means (RunSpec.zero_mean): sampled, tested for f -> -f and, where
    # the centred theory describes them (RunSpec.centred), fitted centred; the report's
    # even-coupling sections do not read them, and a study of such runs alone (``runs``
    # empty) has none.
    return {"preset": preset.to_dict(), "runs": runs, "symmetry_runs": tested_only,
            "training": plan_entry(preset)}


# ---------------------------------------------------------------------------------------------
# stages and the manifest
# ---------------------------------------------------------------------------------------------


STUDY_KEYS = {
    "name": (True, "name"), "n_nets": (True, "count"), "widths": (True, "widths"),
    "fit_cutoffs": (True, "cutoffs"), "infer_cutoffs": (True, "cutoffs"),
    "six_point_cutoff": (False, "positive"), "chunk": (False, "count"),
    "seed": (False, "seed"), "num_chains": (False, "chains"), "num_samples": (False, "count"),
    "num_warmup": (False, "count"), "covariance": (False, "covariance"),
    "infer_widths": (False, "width_table"), "run": (True, "runs"),
    "symmetries": (False, "symmetries"), "odd_orders": (False, "flag"),
    "train": (False, "train"),
    "infer": (False, "infer"),
}
#: Keys of one ``[[run]]`` table: (required, kind).
RUN_KEYS = {
    "key": (True, "key"), "ensemble": (True, "text"), "title": (False, "text"),
    "d_in": (False, "count"), "sigma_b": (False, "nonnegative"), "inputs": (False, "inputs"),
    "widths": (False, "widths"), "infer_widths": (False, "widths"),
    "ngp_width": (False, "count"), "role": (False, "role"),
    "propagators": (False, "propagators"), "order": (False, "order"),
    "params": (False, "table"),
    "symmetries": (False, "symmetries"), "odd_orders": (False, "flag"),
    "infer": (False, "infer"),
}
ROLES = ("main", "sigma_b", "dim")
SHIPPED = ("quick", "paper")
#: Longest run key: a key names files (``posterior2_<key>.nc``, ``parts/<key>/...`` and
#: their temporaries), which must stay well inside the 255 bytes a file name may have.
MAX_KEY_LENGTH = 64
#: Longest study name, title or ensemble description: labels of the report's tables and
#: figure legends (a 2 MB title kept the report's layout busy for minutes).
MAX_TEXT_LENGTH = 200


def _where(source, run=None, key=None) -> str:
    at = str(source)
    if run is not None:
        at += f": [[run]] {run}"
    if key is not None:
        at += f": {key}"
    return at


def _run_where(source, i: int, key) -> str:
    """``<source>: [[run]] <i> (<key>)``, a key too long to repeat cut short."""
    if isinstance(key, str) and len(key) > 24:
        key = key[:20] + "..."
    return _where(source, f"{i} ({key})" if key is not None else i)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(float(v)))


def _value(kind: str, v, where: str):
    """``v`` checked against ``kind`` (raises NNGPInputError naming ``where``)."""

    def bad(what):
        raise NNGPInputError(f"{where} must be {what}, got {v!r}")

    if kind in ("symmetries", "flag"):
        return _symmetry_value(kind, v, where)
    if kind == "infer":  # resolved per run against its declared symmetries (_run)
        if not isinstance(v, dict):
            bad("a table (couplings, or max_dimension and symmetry)")
        return dict(v)

    if kind in ("name", "key"):
        most = MAX_KEY_LENGTH if kind == "key" else MAX_TEXT_LENGTH
        if not isinstance(v, str) or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", v):
            bad("a name of letters, digits, '_', '-' or '.'")
        if len(v) > most:
            raise NNGPInputError(f"{where} must be at most {most} characters"
                                 + (" (it names the run's files)" if kind == "key" else "")
                                 + f", got {len(v):,}")
        return v
    if kind == "text":
        return _checks.text(where, v, max_length=MAX_TEXT_LENGTH)
    if kind in ("count", "seed", "chains"):
        lo = {"seed": 0, "chains": 2}.get(kind, 1)
        if not _is_int(v) or v < lo:
            bad(f"an integer >= {lo}" + (" (R-hat compares chains)" if kind == "chains" else ""))
        return _checks.seed(where, v) if kind == "seed" else int(v)
    if kind in ("positive", "nonnegative"):
        if not _is_real(v) or v < 0 or (kind == "positive" and v == 0):
            bad("a positive number" if kind == "positive" else "a number >= 0")
        return float(v)
    if kind == "widths":

        if v == "paper":
            return tuple(PAPER_WIDTHS)
        if (not isinstance(v, list) or not v
                or not all(_is_int(w) and 1 <= w <= MAX_WIDTH for w in v)
                or len(set(v)) != len(v)):
            bad(f'a list of distinct positive integers up to {MAX_WIDTH} (or "paper")')
        return tuple(int(w) for w in v)
    if kind == "cutoffs":
        if v == "paper":
            return tuple(float(c) for c in PAPER_CUTOFFS)
        if (not isinstance(v, list) or not v or not all(_is_real(c) and c > 0 for c in v)
                or len(set(v)) != len(v)):
            bad('a list of distinct positive numbers (or "paper")')
        return tuple(float(c) for c in v)
    if kind == "covariance":
        if v not in COVARIANCES:
            bad(f"one of {list(COVARIANCES)}")
        return v
    if kind == "role":
        if v not in ROLES:
            bad(f"one of {list(ROLES)}")
        return v
    if kind == "propagators":
        if (not isinstance(v, list) or not v or not all(p in PROPAGATORS for p in v)
                or len(set(v)) != len(v)):
            bad(f"a list of distinct propagators from {list(PROPAGATORS)}")
        return tuple(v)
    if kind == "order":
        allowed = supported_orders()
        if not _is_int(v) or v not in allowed:
            bad(f"one of {list(allowed)} (the perturbative orders infer_couplings supports)")
        return int(v)
    if kind == "inputs":
        if v == "paper":
            return "paper"
        points = [[p] if _is_real(p) else p for p in v] if isinstance(v, list) else None
        if (not points or not all(isinstance(p, list) and p and all(_is_real(c) for c in p)
                                  for p in points)
                or len({len(p) for p in points}) != 1):
            bad('"paper" or a list of points (numbers for d_in = 1, else lists of d_in '
                'numbers of one length)')
        return tuple(tuple(float(c) for c in p) for p in points)
    if kind in ("table", "width_table"):
        if not isinstance(v, dict):
            bad("a table")
        if kind == "width_table":
            return {k: _value("widths", w, f"{where}.{k}") for k, w in v.items()}
        return dict(v)
    raise AssertionError(kind)


def _symmetry_value(kind: str, v, where: str):
    """The symmetry keys (docs/cli.md, "Symmetries"): ``symmetries``, a list of distinct
    names from :data:`nngp_ppl.inference.symmetry.SYMMETRIES` (``[]``: none declared), and
    ``odd_orders``, a boolean."""

    if kind == "flag":
        if not isinstance(v, bool):
            raise NNGPInputError(f"{where} must be true or false, got {v!r}")
        return v
    if (not isinstance(v, list) or not all(isinstance(x, str) and x in SYMMETRIES for x in v)
            or len(set(v)) != len(v)):
        raise NNGPInputError(f"{where} must be a list of distinct symmetries from "
                             f"{list(SYMMETRIES)} (z2: f -> -f), got {v!r}")
    return tuple(v)


def supported_orders() -> tuple[int, ...]:
    """Perturbative orders a run may ask for: 1, and 2 once ``infer_couplings`` takes
    ``order=`` (asked of its signature, so the schema follows the inference code)."""

    return (1, 2) if "order" in inspect.signature(infer_couplings).parameters else (1,)


def _check_keys(table: dict, allowed: dict, where: str) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise NNGPInputError(
            f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(allowed)})")
    missing = [k for k, (req, _) in allowed.items() if req and k not in table]
    if missing:
        raise NNGPInputError(f"{where}: missing required key {missing[0]!r}")


def _run(table, i: int, source, study: dict):

    if not isinstance(table, dict):
        raise NNGPInputError(f"{_where(source, i)} must be a table")
    where = _run_where(source, i, table.get("key"))
    _check_keys(table, RUN_KEYS, where)
    v = {k: _value(RUN_KEYS[k][1], table[k], f"{where}: {k}") for k in table}
    d_in = v.get("d_in", 1)
    widths = v.get("widths", ())
    infer = v.get("infer_widths", ())
    sampled = widths or study["widths"]
    if infer and not set(infer) <= set(sampled):
        raise NNGPInputError(
            f"{where}: infer_widths must be among the sampled widths {list(sampled)}, got "
            f"{list(infer)}")
    params = v.get("params", {})
    clash = sorted({"d_in", "sigma_b"} & set(params))
    if clash:
        raise NNGPInputError(f"{where}: params.{clash[0]} belongs at the run level "
                             f"({clash[0]} = ...)")
    for k, p in params.items():
        if not (_is_real(p) or isinstance(p, (str, bool))):
            raise NNGPInputError(f"{where}: params.{k} must be a number, string or boolean, "
                                 f"got {p!r}")
    # The operator basis its posteriors fit ([run.infer] wins over the study's [infer]).
    declared = v.get("symmetries", study.get("symmetries", ()))
    basis = infer_basis(v.get("infer", study.get("infer")),
                        f"{where}: infer" if "infer" in v else _where(source, key="infer"),
                        declared)
    spec = RunSpec(
        key=v["key"], ensemble=v["ensemble"], sigma_b=v.get("sigma_b"), d_in=d_in,
        widths=widths, infer_widths=infer, ngp_width=v.get("ngp_width", 0),
        role=v.get("role", "main"), propagators=v.get("propagators", ("full",)),
        params=tuple(sorted(params.items())), points=v.get("inputs", "paper"),
        order=v.get("order", 1), title=v.get("title"),
        # A run's own key wins over the study's; declaring a symmetry asks for its test,
        # so it measures the odd orders too.
        symmetries=declared,
        odd_orders=v.get("odd_orders", study.get("odd_orders", False)),
        basis=basis,
    )
    # Build the ensemble and its inputs now, so a wrong description fails before any work.
    try:
        hyper = dict(spec.params, d_in=d_in)
        if spec.sigma_b is not None:
            hyper["sigma_b"] = spec.sigma_b
        net = make_ensemble(spec.ensemble, **hyper)
        net.to_dict()
    except (NNGPInputError, TypeError) as err:
        raise NNGPInputError(f"{where}: ensemble {spec.ensemble!r}: {err}") from None
    if v.get("infer", study.get("infer")) is None and spec.centred:
        # Means break f -> -f, so the recipe's basis up to dimension 4 keeps g3 (the same
        # rule as a declared basis: a declared z2 prunes it; physics.md §6d).
        spec = dataclasses.replace(spec, basis=basis_of(4, "z2" if "z2" in declared else None))
    if spec.points == "paper":

        if (str(spec.ensemble).lower(), d_in) not in PAPER_INPUTS:
            raise NNGPInputError(
                f"{where}: inputs = \"paper\" exists only for erf, relu and gauss with "
                f"d_in = 1, 2, 3; give inputs = [[...], ...] for ensemble {spec.ensemble!r}")
    elif len(spec.points[0]) != d_in:
        raise NNGPInputError(
            f"{where}: inputs has points of dimension {len(spec.points[0])}, d_in is {d_in}")
    return spec


def check_study(preset, source=None) -> None:
    """Validate a whole study before any stage runs, naming ``source`` (the file; default
    the preset's own ``source``) and the key: every setting that a stage would refuse
    hours later is refused here, with the same validators the stages use
    (:mod:`nngp_ppl._checks`). Also checks presets built or changed in Python
    (:func:`dataclasses.replace`, the CLI's overrides)."""
    source = source or getattr(preset, "source", None) or f"study {preset.name!r}"
    at = lambda key: _where(source, key=key)  # noqa: E731
    _value("name", preset.name, at("name"))
    if not _is_int(preset.n_nets) or not 2 <= preset.n_nets <= 2**32:
        raise NNGPInputError(f"{at('n_nets')} must be an integer in 2..2**32 (standard errors "
                             f"need two networks per width), got {preset.n_nets!r}")
    for key, kind in (("chunk", "count"), ("num_chains", "chains"), ("num_samples", "count"),
                      ("num_warmup", "count"), ("seed", "seed"), ("covariance", "covariance")):
        _value(kind, getattr(preset, key), at(key))
    index = {t.key: i for i, t in enumerate(preset.run_table, 1)}
    for run in preset.runs():
        _check_run(preset, run, _run_where(source, index.get(run.key, 0), run.key), source)
    check_train(preset, source)  # the [train] block (nngp_ppl.study.train_spec)


def _check_run(preset, run, where: str, source) -> None:
    """One resolved run of :func:`check_study` (``where`` names it): its key, title,
    ensemble, inputs and kernel, and the study's cutoffs and noise model as they apply."""

    _value("key", run.key, f"{where}: key")
    if not set(run.infer_widths) <= set(run.widths):  # the [infer_widths] table overrides
        raise NNGPInputError(
            f"{_where(source, key='infer_widths')}: {run.key} = {list(run.infer_widths)} must "
            f"be among the widths the run samples, {list(run.widths)}")
    if run.title is not None:
        _value("text", run.title, f"{where}: title")
    try:
        net = run.net()
        net.to_dict()
        X = _checks.inputs("inputs", run.inputs(), net.d_in)
        zero_mean = bool(getattr(net, "zero_mean", True))
        with warnings.catch_warnings():  # e.g. K is not an MLP's 2-pt function: the stages say so
            warnings.simplefilter("ignore")
            # non-zero means: the output covariance of the N -> infinity limit (the
            # propagator of the centred theory, RunSpec.centred)
            K = _checks.symmetric_matrix(
                "kernel", net.kernel(X) if zero_mean else limit_kernel(net, X))
        _checks.kernel_scale("inputs", K, net.describe())
    except (NNGPInputError, TypeError) as err:
        raise NNGPInputError(f"{where}: {err}") from None
    if not zero_mean and not run.centred:
        return  # sample and symmetry stages only: nothing reads the cutoffs or the noise
    if not zero_mean:
        _check_centred_run(preset, run, net, where, source)
        return
    extent = _checks.extent(X)
    whose = f"run {run.key!r}"
    for key, values in (("fit_cutoffs", preset.fit_cutoffs),
                        ("infer_cutoffs", preset.infer_cutoffs),
                        ("six_point_cutoff", preset.six_point_cutoff)):
        cut = _checks.cutoffs(_where(source, key=key), values, extent, inputs_of=whose)
        _check_box(net, X, float(np.max(cut)), _where(source, key=key), whose)
    _check_posterior(preset, run, net, ORDERS[1:],
                     sum(len(distinct_tuples(len(X), n)) for n in run.orders if n != 2),
                     source, whose)


def _check_posterior(preset, run, net, data_orders, latent: int, source, whose: str) -> None:
    """What `infer` checks for its own options: the draws of every posterior of ``run``
    (``latent`` conditioned values per width) fit in memory, and the exact noise model has
    the oracle it needs (moments up to twice the highest of ``data_orders``)."""
    widths = len(run.infer_widths)
    _checks.fits_in_memory(
        f"{_where(source, key='num_chains')}/num_samples",
        8.0 * preset.num_chains * preset.num_samples
        * (len(preset.infer_cutoffs) * widths * 9 + 2 * latent * widths),
        f"{preset.num_chains} chains x {preset.num_samples} draws for {whose}",
        advice="use fewer chains or samples")
    if preset.covariance == "exact" and not exact_noise_available(net, data_orders):
        raise NNGPInputError(
            f"{_where(source, key='covariance')}: \"exact\" needs the exact finite-width "
            f"moments up to order {2 * max(data_orders)}, which {whose} ({net.describe()}) "
            "has no oracle for; use \"auto\", \"sample\" or \"gp\"")


def _check_centred_run(preset, run, net, where: str, source) -> None:
    """What the centred stages of a run with non-zero means (:attr:`RunSpec.centred`)
    would refuse later: order 2 (the centred theory is first order), the fit and posterior
    cutoffs against the inputs and the vertex box of the limit covariance, the draws in
    memory, and the exact noise model where the oracle does not reach it."""
    whose = f"run {run.key!r}"
    if run.order != 1:
        raise NNGPInputError(f"{where}: order = {run.order}: a run with non-zero means "
                             "(mu_w, mu_b) is fitted centred, at order 1 only (physics.md "
                             "§6d)")
    X = run.inputs()
    prop = propagator_net(net)
    for key, values in (("fit_cutoffs", preset.fit_cutoffs),
                        ("infer_cutoffs", preset.infer_cutoffs)):
        cut = _checks.cutoffs(_where(source, key=key), values, _checks.extent(X),
                              inputs_of=whose)
        _check_box(prop, X, float(np.max(cut)), _where(source, key=key), whose)
    # The centred posterior conditions on every centred order whose raw moments 1..n the
    # run holds (even ones only for an even basis: nngp_ppl.inference.couplings).
    odd = any(not operator(c).even for c in run.basis)
    data = tuple(n for n in CENTRED_ORDERS if (odd or n % 2 == 0)
                 and all(m in run.orders for m in range(1, n + 1)))
    _check_posterior(preset, run, net, data,
                     sum(len(distinct_tuples(len(X), n)) for n in data), source, whose)


def _check_box(net, X, cutoff: float, name: str, whose: str) -> None:
    """Refuse a cutoff whose vertex box the fits cannot integrate: too many quadrature
    points (:func:`nngp_ppl.theory.lattice.check_box`), or a kernel so large on the box's
    corner that the products of six propagators (the 6-pt and κ designs) overflow."""

    try:
        check_box(net, X, cutoff)
    except NNGPInputError as err:
        raise NNGPInputError(f"{name} ({whose}): {str(err).split(': ', 1)[-1]}") from None
    corner = np.full((1, X.shape[1]), cutoff)
    with np.errstate(over="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        k = np.abs(np.asarray(net.kernel(np.vstack([X, corner])), dtype=np.float64))
        size = np.power(2 * cutoff, X.shape[1]) * np.power(np.max(k), 6)
    if not np.isfinite(size) or size > 1e300:
        raise NNGPInputError(
            f"{name} ({whose}): at cutoff {cutoff:g} the kernel reaches {float(np.max(k)):.3g} "
            "on the box's corner, so the vertex integrals of six propagators overflow "
            "float64; use smaller cutoffs")


def load_study(path):
    """A :class:`~nngp_ppl.study.spec` from the TOML study at ``path`` (see the module
    docstring for the schema)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise NNGPInputError(f"config: cannot read {path} ({err.strerror})") from None
    return study_from_text(text, path)


def study_from_text(text: str, source="study"):
    """:func:`load_study` on TOML text (``source`` names it in errors)."""

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise NNGPInputError(f"{source}: not valid TOML ({err})") from None
    _check_keys(data, STUDY_KEYS, str(source))
    v = {k: _value(STUDY_KEYS[k][1], data[k], _where(source, key=k))
         for k in data if k not in ("run", "train")}
    if not isinstance(data["run"], list) or not data["run"]:
        raise NNGPInputError(f"{source}: run must be one or more [[run]] tables")
    runs = tuple(_run(t, i, source, v) for i, t in enumerate(data["run"], 1))
    keys = [r.key for r in runs]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise NNGPInputError(f"{source}: run key {dup[0]!r} is used twice; keys name files")
    unknown = sorted(set(v.get("infer_widths", {})) - set(keys))
    if unknown:
        raise NNGPInputError(f"{_where(source, key='infer_widths')}: no run {unknown[0]!r} "
                             f"(runs: {', '.join(keys)})")
    n_nets = v["n_nets"]
    if n_nets < 2 or n_nets > 2**32:
        raise NNGPInputError(f"{_where(source, key='n_nets')} must be in 2..2**32, got "
                             f"{n_nets}")
    infer_cutoffs = v["infer_cutoffs"]
    train = train_spec(data["train"], source, runs) if "train" in data else None
    preset = Preset(
        name=v["name"], n_nets=n_nets, chunk=v.get("chunk", min(100_000, n_nets)),
        widths=v["widths"], fit_cutoffs=v["fit_cutoffs"], infer_cutoffs=infer_cutoffs,
        six_point_cutoff=v.get("six_point_cutoff", infer_cutoffs[0]),
        num_chains=v.get("num_chains", 4), num_samples=v.get("num_samples", 1000),
        num_warmup=v.get("num_warmup", 500), infer_widths=v.get("infer_widths", {}),
        seed=v.get("seed", 0), covariance=v.get("covariance", "auto"), run_table=runs,
        source=str(source), train=train,
    )
    check_study(preset)
    return preset


def shipped_study(name: str):
    """The study shipped with the package as ``nngp_ppl/studies/<name>.toml``."""
    if name not in SHIPPED:
        raise NNGPInputError(f"preset must be one of {list(SHIPPED)}, got {name!r}")
    ref = resources.files("nngp_ppl").joinpath("studies", f"{name}.toml")
    return study_from_text(ref.read_text(), f"nngp_ppl/studies/{name}.toml")


def check_preset_overrides(preset: Preset, *, n_nets=None, seed=None, chunk=None,
                           only=None) -> Preset:
    """``preset`` with validated overrides (the CLI's ``--n-nets``, ``--seed``, ``--only``)."""
    changes = {}
    if only is not None:
        if isinstance(only, str):
            only = [only]
        names = [str(k).strip() for k in only]
        if not any(names):
            # An empty selection is a mistake (e.g. an unset shell variable), not "all".
            raise NNGPInputError(
                "only must name at least one run of this preset "
                f"({', '.join(r.key for r in preset.runs())}); omit it to run them all")
        changes["only"] = tuple(dict.fromkeys(k for k in names if k))
    if n_nets is not None:
        changes["n_nets"] = _checks.positive_int("n_nets", n_nets)
        if changes["n_nets"] < 2:
            raise NNGPInputError(f"n_nets must be at least 2: standard errors and the "
                                 f"estimator covariance need two networks, got {n_nets}")
        if changes["n_nets"] > 2**32:
            # Refused here, not by the sampler at the first part that crosses the limit
            # after hours of sampling the parts before it.
            raise NNGPInputError(
                f"n_nets must be at most 2**32 = {2**32:,} (network indices are uint32), "
                f"got {changes['n_nets']:,}")
    if seed is not None:
        changes["seed"] = _checks.seed("seed", seed)
    if chunk is not None:
        changes["chunk"] = _checks.positive_int("chunk", chunk)
    new = dataclasses.replace(preset, **changes)
    if "chunk" not in changes and "n_nets" in changes:
        new = dataclasses.replace(new, chunk=min(preset.chunk, new.n_nets))
    new.runs()  # validates ``only``
    return new
