r"""The trained ensemble against the infinite-width oracle, step by step.

At step t the trained networks f_t form an ensemble with connected correlators
:math:`\kappa_n^{(t)}` (joint cumulants). As N -> infinity, gradient descent in the NTK
parametrisation makes it the Gaussian process of
:func:`nngp_ppl.theory.ntk.training_oracle`: :math:`\kappa_1 = \mu_t`,
:math:`\kappa_2 = \Sigma_t` and every :math:`\kappa_{n \ge 3} = 0`. At finite width the
differences are O(1/N); the 3-pt function starts at zero (the initial ensemble is
symmetric under f -> -f) and training, which breaks that symmetry through the data, can
make it grow. :func:`oracle_comparison` gives the sampled connected 1-, 2- and 3-pt
functions of a :class:`~nngp_ppl.training.trainer.TrainedCorrelators` with their delta-method
standard errors (:meth:`nngp_ppl.CorrelatorStats.connected`) against those targets; the
``[train]`` stage of a study stores it (:mod:`nngp_ppl.study.training_stages`) and the report
draws it (:mod:`nngp_ppl.study.report.training`).
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from ..sampling.stats import cumulants_with_jacobian, square_index
from ..theory.ntk import training_oracle
from ..tuples import distinct_tuples

__all__ = [
    "COMPARISON_FORMAT", "COMPARISON_VERSION", "CURVE_POINTS", "FLOW_FORMAT",
    "FLOW_IMPLEMENTATION", "FLOW_VERSION", "TRAIN_ORDERS", "nanmax", "oracle_comparison",
    "oracle_reason", "rounding_floor",
]

#: Orders the train stage records: all of 1..6, so that every connected function up to
#: the 6-pt one (odd ones included) and the f -> -f test have their data.
TRAIN_ORDERS = (1, 2, 3, 4, 5, 6)
#: Format of ``training_<run>.nc`` (:func:`oracle_comparison`).
COMPARISON_FORMAT, COMPARISON_VERSION = "nngp_ppl.TrainingComparison", 1
#: Format of ``training_flow_<run>.nc`` (couplings and f -> -f per step).
FLOW_FORMAT, FLOW_VERSION = "nngp_ppl.TrainingFlow", 1
#: Which implementation fills ``training_flow_<run>.nc`` (part of its stage's key, so
#: wiring another one reruns the stage; the report draws figures d, e unless "none"):
#: "none" until the effective action along training (issue 20, part 3) is wired into
#: :func:`nngp_ppl.study.training_stages.effective_action_along_training`.
FLOW_IMPLEMENTATION = "nngp_ppl.inference.training_flow"
#: Points of the oracle's curves between the recorded steps (the figures' lines).
CURVE_POINTS = 80


def _curve_steps(steps) -> np.ndarray:
    top = max(steps)
    grid = np.geomspace(1, max(top, 1), CURVE_POINTS) if top > 0 else np.zeros(1)
    return np.unique(np.concatenate([[0], np.round(grid), steps]).astype(np.int64))


def rounding_floor(stats, c, width: int) -> np.ndarray:
    r"""Per tuple, a bound on the rounding error of the delta-method variance of a
    connected function ``c`` (:meth:`~nngp_ppl.CorrelatorStats.connected`).

    The accumulation multiplies float32 numbers in float32 (the outputs shifted by the
    step's reference, :math:`g = \mathrm{fl}_{32}(f - r)`; r = 0 in sampled runs and
    version-1 trained files) and adds the products in float64: a product of m factors is
    off by at most :math:`2m\,2^{-24}` of itself. With independent rounding errors over
    the n networks, an estimator covariance entry :math:`\mathrm{Cov}(\hat G_s, \hat G_t)`
    is off by about :math:`\epsilon\,U_{st}/n^{3/2}`, :math:`\epsilon = 4n_{max}\,2^{-24}`,
    :math:`U_{st} = (Q_s Q_t)^{1/2} \ge E|\prod_s g\prod_t g|` with
    :math:`Q_s = \overline{(\prod_s g)^2}` (Cauchy–Schwarz), and the variance
    :math:`J\Sigma J^T` by :math:`\epsilon\,|J|\,U\,|J|^T/n^{3/2}` (J with respect to
    the moments of g, from which :meth:`~nngp_ppl.CorrelatorStats.connected` computes it).
    Untrained ensembles are centred and this is negligible. Unshifted sums of trained
    networks whose spread at an input is far below their mean (near the data, late in
    training) cancelled many digits, and there the error bar was not computable (measured
    on such sums, example 08's setting, N = 16, 1000 networks, step 300, 165 triples: 85
    stored-sum errors off by more than 10 %, every one flagged by ``variance <= 10 floor``);
    the shifted sums keep the variances to ~1e-7 (docs/training_flow.md).
    """
    count = stats.n_nets(width)
    sums = stats.shifted_moment_sums(width)  # the products the kernel rounded: of f - r
    used = c.orders
    moments = {m: sums[m] / count for m in used}
    jac = np.abs(cumulants_with_jacobian(moments, stats.k, c.order)[1])
    Q = np.concatenate([sums[2 * m][square_index(stats.k, m)] / count for m in used])
    U = np.sqrt(np.outer(Q, Q))
    eps = 4 * max(used) * 2.0**-24
    return eps * np.einsum("ti,ij,tj->t", jac, U, jac) / count**1.5


def _connected(stats, n: int, width: int):
    """(values, stderr) of the connected n-pt function; stderr NaN where the rounding
    floor (:func:`rounding_floor`) is over a tenth of the variance."""
    c = stats.connected(n, width)
    usable = c.stderr**2 > 10.0 * rounding_floor(stats, c, width)
    return c.values, np.where(usable, c.stderr, np.nan)


def _oracle(trained, reason):
    """(mu (S, k), Sigma (S, k, k), curve steps, mu curve, variance curve) or Nones."""
    if reason is not None:
        return None
    s, first = trained.setup, trained.at_step(trained.steps[0])
    args = (first.net, first.X, np.asarray(s.x_train), np.asarray(s.y_train))
    mu, cov = training_oracle(*args, trained.steps, s.learning_rate)
    curve = _curve_steps(trained.steps)
    mu_c, cov_c = training_oracle(*args, curve, s.learning_rate)
    return mu, cov, curve, mu_c, np.diagonal(cov_c, axis1=1, axis2=2)


def oracle_reason(trained) -> str | None:
    """Why the infinite-width oracle does not describe ``trained``, or None."""
    s, net = trained.setup, trained.at_step(trained.steps[0]).net
    if s.optimizer != "gd" or s.parametrisation != "ntk":
        return (f"the infinite-width oracle covers gradient descent in the NTK "
                f"parametrisation; this run used {s.optimizer} in the {s.parametrisation} "
                f"parametrisation")
    if not getattr(net, "zero_mean", True):
        return "the infinite-width oracle covers zero-mean ensembles only"
    return None


def oracle_comparison(trained):
    r"""The sampled connected 1-, 2- and 3-pt functions of ``trained``
    (:class:`~nngp_ppl.training.trainer.TrainedCorrelators` with orders 1..6 and covariance) at
    every step and width, against the infinite-width oracle, as an xarray Dataset.

    Variables (``tuple_n``: the distinct n-tuples of inputs, :func:`nngp_ppl.tuples.
    distinct_tuples`; ``inputs_n`` names their inputs): ``kappa{n}``, ``kappa{n}_stderr``
    (step, width, tuple_n), the sampled cumulants and their delta-method errors;
    ``oracle{n}`` (step, tuple_n): :math:`\mu_t`, :math:`\Sigma_t`, 0; ``z{n}`` = (kappa -
    oracle) / stderr, ``max_abs_z{n}`` (step, width) over the tuples with a usable error
    and ``unusable{n}`` (step, width) the count of those without (the stderr is NaN where
    the stored sums cannot resolve it, :func:`rounding_floor`); the oracle's curves
    ``mu_curve``, ``var_curve`` (curve_step, input) between the recorded steps. Without an
    oracle (another optimiser or parametrisation, non-zero means) the ``oracle*``, ``z*``
    and curve variables are absent and the ``oracle`` attribute says why.
    """
    steps = list(trained.steps)
    first = trained.at_step(steps[0])
    widths, k = list(first.widths), first.k
    reason = oracle_reason(trained)
    oracle = _oracle(trained, reason)
    data, coords = {}, {"step": np.asarray(steps, np.int64),
                        "width": np.asarray(widths, np.int64), "input": np.arange(k)}
    for n in (1, 2, 3):
        tup = f"tuple_{n}"
        rows = np.asarray(distinct_tuples(k, n))
        vals = np.empty((len(steps), len(widths), len(rows)))
        errs = np.empty_like(vals)
        for i, step in enumerate(steps):
            st = trained.at_step(step)
            for j, w in enumerate(widths):
                vals[i, j], errs[i, j] = _connected(st, n, w)
        dims = ("step", "width", tup)
        data[f"kappa{n}"] = (dims, vals, {"long_name": f"sampled connected {n}-pt function"})
        data[f"kappa{n}_stderr"] = (dims, errs, {"long_name": "delta-method standard error"})
        data[f"inputs_{n}"] = ((tup, f"leg_{n}"), rows)
        if oracle is None:
            continue
        mu, cov = oracle[0], oracle[1]
        if n == 1:
            ref = mu
        elif n == 2:
            ref = cov[:, rows[:, 0], rows[:, 1]]
        else:
            ref = np.zeros((len(steps), len(rows)))
        z = (vals - ref[:, None, :]) / errs
        data[f"oracle{n}"] = (("step", tup), ref, {"long_name": (
            "mu_t", "Sigma_t", "0 (a Gaussian process has no connected 3-pt function)")[n - 1]})
        data[f"z{n}"] = (dims, z)
        data[f"max_abs_z{n}"] = (("step", "width"), nanmax(np.abs(z)))
        data[f"unusable{n}"] = (("step", "width"), np.sum(~np.isfinite(z), axis=2),
                                {"long_name": "tuples whose error is below the rounding "
                                              "floor of the stored sums (z not computed)"})
    data.update(_standardised_three_point(data, k))
    if oracle is not None:
        coords["curve_step"] = oracle[2]
        data["mu_curve"] = (("curve_step", "input"), oracle[3])
        data["var_curve"] = (("curve_step", "input"), oracle[4])
    data["n_nets"] = (("width",), np.asarray([first.n_nets(w) for w in widths], np.int64))
    s = trained.setup
    attrs = {"training": json.dumps(s.describe()), "ensemble": first.net.describe(),
             "inputs": json.dumps(first.X.tolist()), "seed": int(first.seed),
             "oracle": "training_oracle: linearised gradient descent at N -> infinity "
                       "(Lee et al. 2019), NTK and NNGP kernels of the ensemble"
             if oracle is not None else f"none: {reason}"}
    return xr.Dataset(data, coords=coords, attrs=attrs)


def nanmax(a) -> np.ndarray:
    """Max over the last axis ignoring NaN (NaN where every entry is NaN), no warning."""
    finite = np.isfinite(a)
    out = np.max(np.where(finite, a, -np.inf), axis=-1)
    return np.where(np.any(finite, axis=-1), out, np.nan)


def _standardised_three_point(data: dict, k: int) -> dict:
    r""":math:`\kappa_3(x,x,x) / \kappa_2(x,x)^{3/2}` per input (the skewness of f_t(x)), and
    its standard error :math:`\delta\kappa_3 / \kappa_2^{3/2}`: the error of
    :math:`\kappa_2` is left out (relative :math:`\approx\sqrt{2/n_{nets}}`, a few per cent
    of the ratio's own error at the sizes the stage runs). Scale-free, so a 3-pt function
    that shrinks only because training shrinks the variance does not look like zero."""
    def diagonal(n):
        rows = np.asarray(distinct_tuples(k, n))
        return [int(np.flatnonzero(np.all(rows == a, axis=1))[0]) for a in range(k)]

    var = data["kappa2"][1][..., diagonal(2)]
    scale = np.where(var > 0, var, np.nan) ** 1.5
    dims = ("step", "width", "input")
    return {"skewness": (dims, data["kappa3"][1][..., diagonal(3)] / scale,
                         {"long_name": "kappa3(x,x,x) / kappa2(x,x)^(3/2)"}),
            "skewness_stderr": (dims, data["kappa3_stderr"][1][..., diagonal(3)] / scale,
                                {"long_name": "stderr(kappa3) / kappa2^(3/2)"})}
