"""``nngp-ppl sample`` and ``nngp-ppl show``: a small run end to end, and every error path."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

import nngp_ppl
from nngp_ppl import CorrelatorStats, sample_correlators
from nngp_ppl.cli import main
from nngp_ppl.stats import normalised_deviation
from nngp_ppl.theory.exact import exact_correlator_tuples
from nngp_ppl.theory.wick import gp_correlator_tuples

SAMPLE = ["sample", "--ensemble", "erf", "--preset", "paper", "--widths", "2,10",
          "--n-nets", "4e3", "--seed", "3", "--no-progress"]


def test_sample_then_show(tmp_path, capsys):
    out = tmp_path / "run.nc"
    assert main(SAMPLE + ["-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    stats = CorrelatorStats.from_netcdf(out)
    net, X = nngp_ppl.ErfNet(), nngp_ppl.paper_inputs("erf")
    assert stats.net == net and stats.widths == (2, 10) and stats.seed == 3
    np.testing.assert_array_equal(stats.X, X)
    direct = sample_correlators(net, X, [2, 10], 4000, seed=3, progress=False)
    for w in (2, 10):
        for m, s in direct.moment_sums(w).items():
            np.testing.assert_allclose(stats.moment_sums(w)[m], s, rtol=1e-12)

    assert main(["show", str(out)]) == 0
    text = capsys.readouterr().out
    lines = [ln for ln in text.splitlines() if re.match(r"\s+\d+\s+\d+\s", ln)]
    assert len(lines) == 2
    gp = {n: gp_correlator_tuples(np.asarray(net.kernel(X)), n) for n in (4, 6)}
    for line, w in zip(lines, (2, 10), strict=True):
        values = [float(v) for v in line.split()]
        assert values[:2] == [w, 4000]
        expect = []
        for n in (4, 6):
            expect += [
                normalised_deviation(stats.correlator_tuples(n, w), gp[n]),
                normalised_deviation(exact_correlator_tuples(net, X, w, n), gp[n]),
                normalised_deviation(gp[n] + stats.stderr_tuples(n, w), gp[n]),
            ]
        np.testing.assert_allclose(values[2:], expect, rtol=1e-3)  # printed to 4 digits
    # The exact finite-width deviation falls with N (connected 4-pt ~ 1/N).
    exact4 = [float(ln.split()[3]) for ln in lines]
    assert exact4[1] < exact4[0] / 3

    assert main(["show", "--no-exact", str(out)]) == 0
    assert "exact" not in capsys.readouterr().out


def test_custom_inputs_in_two_dimensions(tmp_path, capsys):
    out = tmp_path / "relu.nc"
    argv = ["sample", "--ensemble", "relu", "--d-in", "2", "--sigma-b", "0.5",
            "--inputs", "0.5,0.5; 1,0.5; 1 1", "--widths", "3", "--n-nets", "500",
            "--orders", "2,4", "--no-covariance", "--no-progress", "-o", str(out)]
    assert main(argv) == 0
    stats = CorrelatorStats.from_netcdf(out)
    np.testing.assert_array_equal(stats.X, [[0.5, 0.5], [1.0, 0.5], [1.0, 1.0]])
    assert stats.net == nngp_ppl.ReLUNet(d_in=2, sigma_b=0.5)
    assert stats.orders == (2, 4) and not stats.has_covariance
    assert main(["show", "--no-exact", str(out)]) == 0
    assert "m_4 sampled" in capsys.readouterr().out


BAD = [
    (["--ensemble", "nonesuch"], "--ensemble"),
    (["--ensemble", "tanh"], "--preset"),  # a valid ensemble without paper inputs
    (["--widths", "2,0"], "--widths"),
    (["--widths", "two"], "--widths"),
    (["--n-nets", "0"], "--n-nets"),
    (["--n-nets", "1.5"], "--n-nets"),
    (["--orders", "2,3"], "--orders"),
    (["--orders", "8"], "--orders"),
    (["--sigma-w", "-1"], "--sigma-w"),
    (["--sigma-b", "abc"], "--sigma-b"),
    (["--seed", "-1"], "--seed"),
    (["--batch-size", "0"], "--batch-size"),
    (["--d-in", "0"], "--d-in"),
    (["--preset", "nope"], "--preset"),
    (["--d-in", "5"], "preset"),
    (["--preset", None, "--inputs", ""], "--inputs"),
    (["--preset", None, "--inputs", "1,nan"], "--inputs"),
    (["--preset", None, "--inputs", "1,2; 3", "--d-in", "2"], "--inputs"),
    (["--preset", None, "--inputs", "0.5,0.5", "--d-in", "2"], "--inputs"),
    (["--preset", None, "--inputs", "0.5,0.5; 1,1"], "--inputs"),
]


def _argv(change, out):
    argv = ["sample", "--ensemble", "erf", "--preset", "paper", "--widths", "2",
            "--n-nets", "10", "--no-progress", "-o", str(out)]
    for i in range(0, len(change), 2):
        opt, value = change[i], change[i + 1]
        if opt in argv:
            j = argv.index(opt)
            del argv[j:j + 2]
        if value is not None:
            argv += [opt, value]
    return argv


@pytest.mark.parametrize("change, option", BAD)
def test_bad_sample_arguments_exit_2_with_one_line(change, option, tmp_path, capsys):
    out = tmp_path / "run.nc"
    assert main(_argv(change, out)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.count("\n") == 1 and option in err, err
    assert not out.exists()


def test_usage_errors_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["sample", "--widths", "2", "--n-nets", "10", "--preset", "paper", "-o", "x.nc"])
    assert exc.value.code == 2 and "--ensemble" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(_argv(["--inputs", "1,2"], tmp_path / "run.nc"))  # both --preset and --inputs
    assert exc.value.code == 2 and "not allowed with" in capsys.readouterr().err
    assert main(_argv([], tmp_path)) == 2  # output is a directory
    assert "--output" in capsys.readouterr().err


def test_show_bad_files(tmp_path, capsys):
    junk = tmp_path / "junk.nc"
    junk.write_text("not netCDF")
    for path, words in [(tmp_path / "missing.nc", "no such file"),
                        (junk, "not a readable netCDF"), (tmp_path, "directory")]:
        assert main(["show", str(path)]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1 and "Traceback" not in err


def test_interrupted_run_leaves_no_file(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(nngp_ppl, "sample_correlators", interrupted)
    out = tmp_path / "run.nc"
    assert main(_argv([], out)) == 130
    assert "interrupted" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_console_entry_point_reports_errors_without_traceback(tmp_path):
    junk = tmp_path / "junk.nc"
    junk.write_text("not netCDF")
    proc = subprocess.run([sys.executable, "-m", "nngp_ppl.cli", "show", str(junk)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "not a readable netCDF" in proc.stderr
