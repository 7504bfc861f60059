"""The README's quickstarts run as written, at small sizes, so they cannot go stale.

The code blocks are read from README.md itself (the Python quickstart, the command-line
quickstart and the user-ensemble example), and run after these documented substitutions,
each of which must match the text exactly once (so an edit to the README that the test no
longer covers fails it):

* Python: ``n_nets=100_000`` -> ``n_nets=2_000``; ``cutoffs=[10, 100, 1000])`` ->
  ``cutoffs=[10, 100, 1000], num_chains=2, num_samples=50, num_warmup=50)``;
* command line: ``--n-nets 100000`` -> ``--n-nets 2000``; ``infer ... -o posterior.nc``
  gets ``--widths 5,100 --chains 2 --samples 50 --warmup 50 --allow-failed-gate`` (so
  short a run may fail the diagnostics gate, exit 3 by design; the Python quickstart's
  widths and NUTS settings, so that both run one compiled NUTS batch, which jax's
  persistent cache shares); the two ``reproduce`` lines get
  ``--dry-run`` (whole pipelines: tests/test_reproduce.py runs a small one).

Every command must exit 0 (the commands run in-process through ``nngp_ppl.cli.main``).
"""

from __future__ import annotations

import re
import shlex
import warnings
from pathlib import Path

import numpy as np
import pytest

import nngp_ppl as nn
from nngp_ppl.cli.main import main

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def block(heading: str, lang: str, index: int = 0) -> str:
    """The ``index``-th ``lang`` code block after the line ``heading``."""
    after = README[README.index(f"\n{heading}\n"):]
    return re.findall(rf"```{lang}\n(.*?)```", after, flags=re.S)[index]


def substitute(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"README changed: {old!r} occurs {text.count(old)} times"
    return text.replace(old, new)


@pytest.mark.slow  # one NUTS run of 2 x 100 steps per width and 2 000 networks per width
def test_python_quickstart_runs():
    code = block("## Quickstart (Python)", "python")
    code = substitute(code, "n_nets=100_000", "n_nets=2_000")
    code = substitute(code, "cutoffs=[10, 100, 1000])",
                      "cutoffs=[10, 100, 1000], num_chains=2, num_samples=50, num_warmup=50)")
    scope: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short runs: heavy tails, the diagnostics gate
        exec(compile(code, "README.md (Python quickstart)", "exec"), scope)
    assert scope["G4"].shape == scope["G4_exact"].shape == (6, 6, 6, 6)
    assert np.all(np.isfinite(scope["lam_bar"]))
    assert "beta" in scope["beta"]["posterior"]


@pytest.mark.slow  # sample, fit, infer and flow through the CLI at 2 000 networks
def test_command_line_quickstart_runs(tmp_path, monkeypatch):
    text = block("## Quickstart (command line)", "bash")
    text = substitute(text, "--n-nets 100000", "--n-nets 2000")
    text = substitute(text, "-o posterior.nc", "-o posterior.nc --widths 5,100 --chains 2 "
                                               "--samples 50 --warmup 50 --allow-failed-gate")
    text = substitute(text, "--out demo_out", "--out demo_out --dry-run")
    text = substitute(text, "--out paper_out", "--out paper_out --dry-run")
    monkeypatch.chdir(tmp_path)
    lines = [shlex.split(line, comments=True) for line in text.splitlines() if line.strip()]
    assert all(argv[0] == "nngp-ppl" for argv in lines)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for argv in lines:
            assert main(argv[1:]) == 0, argv
    assert all((tmp_path / f).is_file() for f in ("run.nc", "fit.nc", "posterior.nc",
                                                  "beta.nc"))


def test_the_user_ensemble_example_samples_its_own_kernel():
    """The CosNet of the README: its sampled 2-pt function is its kernel (one hidden layer,
    two_point_exact), within 5 standard errors on 4 000 networks (fixed seed)."""
    code = block("## Bring your own ensemble", "python")
    scope: dict = {}
    exec(compile(code, "README.md (CosNet)", "exec"), scope)
    net = scope["CosNet"]()
    X = np.array([[-0.7], [0.4], [1.3]])
    stats = nn.sample_correlators(net, X, [3], 4_000, orders=(2,), seed=1, progress=False)
    from nngp_ppl.tuples import distinct_tuples

    K = np.asarray(net.kernel(X))
    pairs = distinct_tuples(3, 2)
    G2, se = stats.correlator_tuples(2, width=3), stats.stderr_tuples(2, width=3)
    z = (G2 - K[pairs[:, 0], pairs[:, 1]]) / se
    assert np.all(np.abs(z) < 5), z
