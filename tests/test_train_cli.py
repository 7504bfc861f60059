"""`show`, `fit` and `infer` on the stepped file of `nngp-ppl train` (--step).

show without --step summarises every step; show --step S details one; fit and infer need
--step, take 0 (the untrained networks: the sampler's run bit for bit, so the same fit)
and refuse a trained step with the reason; every bad --step is one message, exit 2.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from nngp_ppl import ErfNet, sample_correlators
from nngp_ppl.cli.main import main
from nngp_ppl.inference import eft
from nngp_ppl.sampling.stats import HeavyTailWarning
from nngp_ppl.training.trainer import train_correlators

NET = ErfNet(sigma_w=1.0, sigma_b=0.5)
X = np.array([-1.0, -0.2, 0.6])
XT, YT = np.array([-0.8, 0.0, 0.9]), np.array([0.3, -0.2, 0.5])
KW = {"orders": (1, 2, 3, 4, 5, 6), "seed": 3, "batch_size": 64, "shard_size": 128,
      "progress": False}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("stepped")
    with warnings.catch_warnings():  # 256 networks: heavy tails of G6 expected
        warnings.simplefilter("ignore", HeavyTailWarning)
        trained = train_correlators(NET, X, [5, 40], 256, XT, YT, [0, 3, 12], 0.5, **KW)
        sampled = sample_correlators(NET, X, [5, 40], 256, **KW)
    return trained.to_netcdf(d / "trained.nc"), sampled.to_netcdf(d / "sampled.nc")


def test_show_summarises_every_step(files, capsys):
    trained, _ = files
    assert main(["show", str(trained)]) == 0
    out = capsys.readouterr().out
    assert "steps 0,3,12" in out and "m_4" in out and "m_1" not in out
    table = out[out.index("connected functions"):].splitlines()[2:]
    assert [row.split()[:2] for row in table] == [[str(s), str(w)] for s in (0, 3, 12)
                                                  for w in (5, 40)]


def test_show_one_step_in_detail(files, capsys):
    trained, _ = files
    assert main(["show", str(trained), "--step", "12"]) == 0
    out = capsys.readouterr().out
    assert "step 12 of [0, 3, 12]" in out
    assert out.count("symmetry: f -> -f") == 2  # one parity test per width
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(("-1,", "-1 "))]
    assert len(rows) == 2  # the input x = -1 at each width
    # kappa_1 against mu_t: the printed z is (kappa_1 - mu_t) / s.e. of those numbers.
    k1, se, mu, z = (float(v) for v in rows[0][1:5])
    assert abs((k1 - mu) / se - z) < 0.05 * max(1.0, abs(z))


@pytest.mark.parametrize("argv, match", [
    (["show", "{t}", "--step", "4"], "--step must be one of the recorded steps [0, 3, 12]"),
    (["show", "{t}", "--step", "-1"], "--step must be a non-negative integer"),
    (["show", "{t}", "--step", "x"], "--step must be a non-negative integer"),
    (["show", "{s}", "--step", "0"], "is a sampled run (leave --step out)"),
    (["fit", "{t}", "--cutoffs", "10", "-o", "{d}/f.nc"], "pass --step S to fit"),
    (["fit", "{t}", "--cutoffs", "10", "-o", "{d}/f.nc", "--step", "3"],
     "describes the untrained networks (step 0) only"),
    (["fit", "{s}", "--cutoffs", "10", "-o", "{d}/f.nc", "--step", "0"], "is a sampled run"),
    (["infer", "{t}", "--cutoffs", "10", "-o", "{d}/p.nc"], "pass --step S to infer"),
    (["infer", "{t}", "--cutoffs", "10", "-o", "{d}/p.nc", "--step", "12"],
     "infer expands around the zero-mean Gaussian process"),
    (["infer", "{t}", "--cutoffs", "10", "-o", "{d}/p.nc", "--step", "7"],
     "recorded steps [0, 3, 12]"),
])
def test_bad_steps_are_one_message_and_exit_2(files, tmp_path, capsys, argv, match):
    trained, sampled = files
    argv = [a.format(t=trained, s=sampled, d=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())  # nothing written


def test_fit_at_step_zero_is_the_fit_of_the_sampled_run(files, tmp_path, capsys):
    trained, sampled = files
    a, b = tmp_path / "a.nc", tmp_path / "b.nc"
    assert main(["fit", str(trained), "--step", "0", "--cutoffs", "10", "-o", str(a)]) == 0
    assert main(["fit", str(sampled), "--cutoffs", "10", "-o", str(b)]) == 0
    fa, fb = eft.load_fit(a), eft.load_fit(b)
    for v in ("lambda_mean", "fit", "fit_stderr", "m6_eft"):
        np.testing.assert_array_equal(fa[v].values, fb[v].values)
    # The fit records the file it was made from: --verify accepts the trained file.
    assert main(["fit", str(trained), "--verify", str(a)]) == 0


@pytest.mark.slow  # one short NUTS run (compilation dominates)
def test_infer_at_step_zero_runs(files, tmp_path, capsys):
    trained, _ = files
    out = tmp_path / "p.nc"
    argv = ["infer", str(trained), "--step", "0", "--cutoffs", "10", "--widths", "40",
            "--chains", "2", "--samples", "60", "--warmup", "60", "--no-progress",
            "--allow-failed-gate", "-o", str(out)]
    assert main(argv) == 0
    assert out.stat().st_size > 0
