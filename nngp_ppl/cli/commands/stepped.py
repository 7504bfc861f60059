r"""``--step``: how ``show``, ``fit`` and ``infer`` read a file of ``nngp-ppl train``.

A trained-correlators file (:class:`nngp_ppl.training.trainer.TrainedCorrelators`) holds one
ensemble per recorded training step along a ``step`` coordinate. What each command does
with it:

* ``show FILE``: a summary of every step (the trained ensemble against the
  infinite-width oracle per step and width); ``show FILE --step S``: that step in detail
  (the connected 1-, 2-, 3-pt functions per input against μ_t, Σ_t and zero, and the
  f -> -f test).
* ``fit FILE --step S`` and ``infer FILE --step S``: the couplings of step S. Without
  ``--step`` they refuse and list the steps: each step is a different ensemble, and no
  default would be right for every reader. The couplings of ``fit`` and ``infer`` expand
  around the zero-mean Gaussian process of the kernel K, which is the untrained ensemble's
  (step 0, the sampler's networks bit for bit); a trained step has a learned 1-pt function
  μ_t and a 2-pt function Σ_t ≠ K, which that expansion does not describe (G4 − Wick(K)
  would be O(1), not a coupling). So ``--step`` other than 0 is refused with that reason;
  the couplings along training come from the expansion around the learned 1-pt function
  (the ``[train]`` stage of ``nngp-ppl reproduce``).

``--step`` is checked where it enters: a non-negative integer, one of the file's recorded
steps, and only for a trained file.
"""

from __future__ import annotations

import numpy as np

from ..._checks import NNGPInputError
from ...inference.symmetry import parity_test
from ...sampling.stats import CorrelatorStats
from ...training.comparison import nanmax, oracle_comparison
from ...training.trainer import TrainedCorrelators
from .train import is_trained_file, show_trained

__all__ = ["COUPLING_STEP", "add_step_argument", "parse_step", "read_run", "recorded_step",
           "show", "show_step"]

#: ``--step`` of ``fit`` and ``infer``.
COUPLING_STEP = ("whose couplings to compute (required for such a file; only 0, the "
                 "untrained networks: see nngp_ppl.cli.commands.stepped)")


def add_step_argument(p, *, what: str) -> None:
    p.add_argument("--step", default=None, metavar="S",
                   help=f"for a file of `nngp-ppl train`: the recorded training step {what}")


def parse_step(text) -> int | None:
    """``--step``: None, or a non-negative integer."""
    if text is None:
        return None
    try:
        value = int(str(text).strip())
    except ValueError:
        raise NNGPInputError(f"--step must be a non-negative integer (a recorded training "
                             f"step), got {text!r}") from None
    if value < 0:
        raise NNGPInputError(f"--step must be a non-negative integer (a recorded training "
                             f"step), got {text!r}")
    return value


def recorded_step(run, step: int, path) -> int:
    """``step`` if ``run`` (TrainedCorrelators) recorded it, else a message listing them."""
    if step not in run.steps:
        raise NNGPInputError(f"--step must be one of the recorded steps "
                             f"{list(run.steps)} of {path}, got {step}")
    return step


def read_run(path, step_text, command: str):
    """The :class:`~nngp_ppl.CorrelatorStats` ``fit``/``infer`` (``command``) work on:
    a sampled run as it is, or step 0 of a trained file (module docstring)."""
    step = parse_step(step_text)
    if not is_trained_file(path):
        if step is not None:
            raise NNGPInputError(f"--step applies to files written by `nngp-ppl train`; "
                                 f"{path} is a sampled run (leave --step out)")
        return CorrelatorStats.from_netcdf(path)
    run = TrainedCorrelators.from_netcdf(path)
    if step is None:
        raise NNGPInputError(
            f"{path} holds a trained ensemble at steps {list(run.steps)}: pass --step S to "
            f"{command} one of them (--step 0: the untrained networks)")
    recorded_step(run, step, path)
    if step != 0:
        s = run.setup
        raise NNGPInputError(
            f"--step {step}: {command} expands around the zero-mean Gaussian process of the "
            f"kernel K, which describes the untrained networks (step 0) only; after {step} "
            f"steps of {s.optimizer} the ensemble has a learned 1-pt function and a 2-pt "
            f"function other than K, so its couplings need the expansion around the learned "
            f"1-pt function (the [train] stage of `nngp-ppl reproduce`). Use --step 0, or "
            f"`nngp-ppl show {path} --step {step}` for that step's correlators")
    return run.at_step(step)


def show(path, step_text, out) -> int | None:
    """``nngp-ppl show`` of a trained file (module docstring); None for a sampled run."""
    step = parse_step(step_text)
    if not is_trained_file(path):
        if step is not None:
            raise NNGPInputError(f"--step applies to files written by `nngp-ppl train`; "
                                 f"{path} is a sampled run (leave --step out)")
        return None
    if step is None:
        show_trained(path, out)
        _comparison_summary(path, out)
        return 0
    return show_step(path, step, out)


def _comparison(run):
    """The stage's comparison (:func:`nngp_ppl.training.comparison.oracle_comparison`), or
    None when the file lacks what it needs (orders 1..3 with covariance)."""
    first = run.at_step(run.steps[0])
    if not ({1, 2, 3} <= set(first.orders) and first.has_covariance):
        return None
    return oracle_comparison(run)


def _comparison_summary(path, out) -> None:
    """Per step and width: the largest |z| of κ1 against μ_t and κ2 against Σ_t, and of κ3
    against zero (for a file with orders 1..3 and the covariance)."""
    comp = _comparison(TrainedCorrelators.from_netcdf(path))
    if comp is None:  # orders without 1..3 or no covariance: the m_n table alone
        return
    has_oracle = "oracle1" in comp
    print("connected functions: largest |z| over the tuples with a usable error of "
          "kappa_1 - mu_t, kappa_2 - Sigma_t"
          + ("" if has_oracle else " (no oracle: " + comp.attrs["oracle"] + ")")
          + " and kappa_3 - 0 (z = difference / delta-method standard error)", file=out)
    print(f"{'step':>7} {'width':>7} {'z1 max':>9} {'z2 max':>9} {'z3 max':>9}", file=out)
    for i, step in enumerate(comp["step"].values):
        for j, w in enumerate(comp["width"].values):
            z3 = float(nanmax(np.abs(comp["kappa3"].values[i, j]
                                      / comp["kappa3_stderr"].values[i, j])))
            cells = (f"{float(comp['max_abs_z1'].values[i, j]):>9.2f} "
                     f"{float(comp['max_abs_z2'].values[i, j]):>9.2f}" if has_oracle
                     else f"{'-':>9} {'-':>9}")
            print(f"{int(step):>7} {int(w):>7} {cells} {z3:>9.2f}", file=out)


def show_step(path, step: int, out) -> int:
    """One recorded step in detail: per width and input, κ1 ± s.e. against μ_t, κ2(x, x)
    against Σ_t(x, x), κ3(x, x, x) / κ2^(3/2); the f -> -f test on the odd correlators."""
    run = TrainedCorrelators.from_netcdf(path)
    recorded_step(run, step, path)
    st = run.at_step(step)
    s = run.setup
    print(f"{path}: {st.net.describe()}, step {step} of {list(run.steps)} ({s.optimizer}, "
          f"learning rate {s.learning_rate:g}, {s.parametrisation} parametrisation, "
          f"{s.n_train} training points)", file=out)
    comp = _comparison(run)
    if comp is None:
        print("connected 1-, 2-, 3-pt functions: not shown (the file lacks orders 1..3 with "
              "covariance)", file=out)
        return 0
    c = comp.sel(step=step)
    has_oracle = "oracle1" in comp
    if not has_oracle:
        print(f"oracle: {comp.attrs['oracle']}", file=out)
    idx2 = _diagonal_rows(c["inputs_2"].values)
    for j, w in enumerate(comp["width"].values):
        print(f"N = {int(w)}, {int(comp['n_nets'].values[j]):,} networks:", file=out)
        print(f"{'input':>10} {'kappa_1':>10} {'s.e.':>9} {'mu_t':>10} {'z':>7} "
              f"{'kappa_2':>10} {'Sigma_t':>10} {'z':>7} {'skewness':>9} {'s.e.':>8}",
              file=out)
        for a, x in enumerate(st.X):
            k1, se1 = float(c["kappa1"].values[j, a]), float(c["kappa1_stderr"].values[j, a])
            t = idx2[a]
            k2 = float(c["kappa2"].values[j, t])
            ref = (f"{float(c['oracle1'].values[a]):>10.4g} {float(c['z1'].values[j, a]):>7.2f} "
                   f"{k2:>10.4g} {float(c['oracle2'].values[t]):>10.4g} "
                   f"{float(c['z2'].values[j, t]):>7.2f}" if has_oracle else
                   f"{'-':>10} {'-':>7} {k2:>10.4g} {'-':>10} {'-':>7}")
            print(f"{', '.join(f'{v:g}' for v in x):>10} {k1:>10.4g} {se1:>9.2g} {ref} "
                  f"{float(c['skewness'].values[j, a]):>9.3f} "
                  f"{float(c['skewness_stderr'].values[j, a]):>8.2g}", file=out)
        print(f"  symmetry: {parity_test(st, int(w)).verdict}", file=out)
    return 0


def _diagonal_rows(rows) -> list[int]:
    rows = np.asarray(rows)
    return [int(np.flatnonzero(np.all(rows == a, axis=1))[0]) for a in range(rows.max() + 1)]
