"""Every script in examples/ runs at its --small size and gets the physics right.

The examples run in this process (as numpyro's test_examples does with subprocesses), so
their compiled samplers are shared. Statistical checks use the fixed seeds of the
examples and tolerances in units of the standard errors the examples print.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest

from nngp_ppl.inference.diagnostics import DiagnosticsWarning, diagnostics_gate

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *argv: str):
    path = EXAMPLES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with warnings.catch_warnings():
        # Short runs warn about heavy tails and print numpy's notices: expected. A failed
        # diagnostics gate is not: a posterior the package itself distrusts must fail the
        # test that reads numbers from it.
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", DiagnosticsWarning)
        result = module.main(["--small", *argv])
    # Examples print the gate rather than warn (a short run may fail it by design of the
    # full-size one); their --small runs must still pass it, or the numbers the tests read
    # come from a posterior the package itself does not trust.
    posterior = result.get("posterior") if isinstance(result, dict) else None
    if posterior is not None:
        gate = diagnostics_gate(posterior, warn=False)
        assert gate.passed, f"{name} --small fails the diagnostics gate:\n{gate}"
    return result


def test_every_example_is_tested():
    tested = {"01_kernels_vs_networks", "02_lambda_at_a_cutoff", "03_coupling_posterior",
              "04_beta_function", "05_lattice_vs_perturbation", "06_own_network",
              "07_own_ensemble_cli", "08_training_flow"}
    assert {p.stem for p in EXAMPLES.glob("*.py")} == tested


def test_01_kernels_vs_networks(tmp_path, capsys):
    rows = run_example("01_kernels_vs_networks", "--plot", str(tmp_path / "m.png"))
    assert (tmp_path / "m.png").stat().st_size > 0
    # K is the exact 2-pt function at every width: the sampled G2 deviates by noise only
    # (worst of 21 tuples within 4.5 standard errors).
    assert all(r["g2_z"] < 4.5 for r in rows)
    # kappa_4 = N kappa_4(neuron) * (sigma_W^2/N)^2: exactly 1/N (physics.md §4).
    np.testing.assert_allclose(rows[0]["c4"] / rows[1]["c4"], rows[1]["N"] / rows[0]["N"],
                               rtol=1e-9)
    for r in rows:  # sampled m_4 within 4 statistical backgrounds of the exact value
        assert abs(r["m4"] - r["m4x"]) < 4 * r["m4bg"]
    assert "expect -1" in capsys.readouterr().out


def test_02_lambda_at_a_cutoff():
    out = run_example("02_lambda_at_a_cutoff")
    # Finite-width nets: non-negative connected 4-pt function, so λ < 0 (physics.md §5).
    assert out["lambda_exact"] < 0
    # λ̄ from the exact G4 moves the exact 6-pt prediction towards the exact G6.
    assert out["improvement_exact"] > 1
    # ReLU-net: λ ∝ Λ^-γ with γ -> d_in + 4 = 5; over the paper's cutoffs 7..1e5 the
    # regression is already within 0.2 of it.
    assert out["gamma_analytic"] == 5
    assert abs(out["gamma_fit"] - 5) < 0.2


@pytest.mark.slow
def test_03_coupling_posterior(tmp_path):
    out = run_example("03_coupling_posterior", "--trace", str(tmp_path / "trace.png"))
    assert (tmp_path / "trace.png").stat().st_size > 0
    lam = out["posterior"]["posterior"]["lambda"].values
    assert lam.shape[:2] == (2, 500) and np.all(np.isfinite(lam))
    table = out["gate"].table
    assert set(table["variable"]) == {"lambda", "spread"}
    assert out["lambda_exact"] < 0
    # The estimand on the exact finite-width correlators (the target) inside the central
    # 99% interval of the posterior (a fixed seed; a calibrated posterior misses it with
    # probability 0.01; at --small size the interval still reaches λ = 0).
    lo, hi = np.quantile(lam, [0.005, 0.995])
    assert lo <= out["lambda_exact"] <= hi, (lo, out["lambda_exact"], hi)
    # The posterior of the estimand B r centres on its value at the observed correlators,
    # the paper's λ̄ (the prior on r is wide against the noise): within 4 Monte Carlo
    # standard errors of the mean, sd/√400 at the gate's bulk ESS >= 400. (Measured with
    # 2 x 500 draws after 300 warm-up steps, seed 0: mean -2.397e-4, λ̄ -2.393e-4, sd
    # 1.45e-4, bulk ESS 1981; the tolerance is 0.2 sd = 2.9e-5, and a λ̄ off by a factor
    # 1.2 misses by 4.8e-5, by 1.5 by 1.2e-4.)
    assert abs(lam.mean() - out["lambda_bar"]) < 4 * lam.std() / np.sqrt(400)
    # The printed 90% interval is the draws' own.
    np.testing.assert_allclose(out["interval"], np.quantile(lam, [0.05, 0.95]))


@pytest.mark.slow
def test_04_beta_function():
    out = run_example("04_beta_function")
    gamma = out["gamma"].ravel()
    # ReLU-net: γ = d_in + 4 = 5 (physics.md §8), from the flow of every posterior draw.
    assert out["gamma_analytic"] == 5
    assert abs(np.median(gamma) - 5) < 0.05
    # The uncertainty against the exact target: γ = 5 inside the central 99% interval of
    # the draws (the networks' spread plus the extrapolation's systematic error; a
    # calibrated interval misses with probability 0.01), and the interval is informative.
    lo, hi = np.quantile(gamma, [0.005, 0.995])
    assert lo <= 5 <= hi and hi - lo < 1, (lo, hi)


@pytest.mark.slow
def test_05_lattice_vs_perturbation():
    rows = run_example("05_lattice_vs_perturbation")
    small, large = rows
    assert small["divergences"] == 0 and large["divergences"] == 0
    # Small λ: lattice and first order agree within 3 Monte Carlo errors.
    assert abs(small["z"]) < 3
    # Large λ: they part by many Monte Carlo errors, the lattice |κ4| below first order
    # (the second order, +84 λ σ⁴ relative for one site, has the opposite sign).
    assert large["z"] > 5 and abs(large["lattice"]) < abs(large["first_order"])
    assert np.sign(small["first_order"]) == np.sign(large["first_order"]) == -1


@pytest.mark.parametrize("name", ["01_kernels_vs_networks"])
def test_examples_have_docstrings_and_small_flag(name):
    text = (EXAMPLES / f"{name}.py").read_text()
    assert text.startswith('"""') and "--small" in text


@pytest.mark.slow
def test_06_own_network():
    out = run_example("06_own_network")
    # The Monte Carlo kernel of the user's network agrees with MLP(2, "tanh")'s recursion
    # within 4.5 of its own standard errors (worst of 15 entries).
    assert out["kernel_z"] < 4.5
    small, large = out["rows"]
    # The connected 4-pt coupling is negative (κ4 > 0) and falls like 1/N: the ratio at
    # N = 4 and 8 is 2 up to O(1/N) corrections and noise (measured 1.71 with this seed).
    assert small["lambda_connected"] < 0 and large["lambda_connected"] < 0
    assert 1.3 < small["lambda_connected"] / large["lambda_connected"] < 3.0
    # The same network's study ran through `reproduce --config` (no exact stage): every
    # figure drawn, and the report says the exact comparison is unavailable for it.
    from nngp_ppl.study.report import FIGURES

    study = out["study"]
    assert not list(study.glob("exact_*.nc"))
    assert all((study / "figures" / f).stat().st_size > 0 for f in FIGURES)
    assert "*own deep tanh: exact comparison unavailable" in (study / "report.md").read_text()
    run = out["summary"]["runs"]["deep_tanh"]
    assert run["exact_curve"]["available"] is False
    assert run["posterior"]["two_point"] == "measured"  # K is not its 2-pt function


@pytest.mark.slow
def test_07_own_ensemble_cli(tmp_path):
    out = run_example("07_own_ensemble_cli", "--out", str(tmp_path))
    # The user's class reloads as itself from the run file, by its import path.
    assert type(out["net"]).__name__ == "CosNet"
    assert out["net"].to_dict()["ensemble"] == "own_nets.cos_net:CosNet"
    for r in out["rows"]:
        # One hidden layer: K is the exact 2-pt function, so the sampled G2 differs from
        # the user's closed-form kernel by noise only; the sampled G4 from the package's
        # exact oracle likewise (worst of 10 and 35 tuples within 4.5 standard errors).
        assert r["g2_z"] < 4.5 and r["g4_z"] < 4.5
    # K - sigma_b^2 decays like a Gaussian: the coupling stops running (gamma = 0 exactly
    # once the box holds the whole integrand, here from the first cutoff 5 on).
    assert float(out["fit"].attrs["gamma_analytic"]) == 0.0
    assert np.all(np.abs(out["fit"]["gamma_fit"].values) < 1e-6)
    # Every stage wrote its file; the study has the full report with its figures.
    from nngp_ppl.study.report import FIGURES

    assert out["posterior_file"].stat().st_size > 0 and out["beta_file"].stat().st_size > 0
    study = out["study"]
    assert (study / "report.md").stat().st_size > 0
    assert all((study / "figures" / f).stat().st_size > 0 for f in FIGURES)
    assert out["summary"]["runs"]["cos"]["label"] == "cos-net (σ_b=0.5)"


def test_08_training_flow(tmp_path):
    out = run_example("08_training_flow", "--plot", str(tmp_path / "f.png"))
    assert (tmp_path / "f.png").stat().st_size > 0
    rows = {(r["step"], r["N"]): r for r in out["rows"]}
    small, large = out["widths"]
    for step in out["steps"]:
        # N = 512: the trained ensemble is the oracle's GP within 4.5 delta-method errors
        # (worst of 9 inputs and 45 pairs; fixed seed).
        assert rows[step, large]["z1"] <= 4.5 and rows[step, large]["z2"] <= 4.5, step
    for w in out["widths"]:  # step 0: f -> -f makes the connected 3-pt function 0 exactly
        assert rows[0, w]["z3"] <= 4.5 and rows[0, w]["unusable"] == 0
    # N = 16: training resolves the finite-width deviation of the learned mean from mu_t
    # (measured |z| 6.5 at step 10), larger than at N = 512.
    assert max(rows[s, small]["z1"] for s in out["steps"]) > 4.5
    assert rows[10, small]["dev1"] > 2 * rows[10, large]["dev1"]
