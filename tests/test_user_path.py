"""The user's path (issue 19 §3): progress bars on a terminal only, the diagnostics gate's
false-alarm rate, `show` without an exact oracle, labels, `--ensemble` from the working
directory, `paper_inputs` for other activations, `calibrate` with its diagnostics."""

from __future__ import annotations

import io
import sys
import textwrap
import uuid
import warnings

import numpy as np
import pytest

import nngp_ppl as nn
from nngp_ppl import _progress
from nngp_ppl.cli.main import main
from nngp_ppl.inference.diagnostics import (
    RHAT_MAX,
    diagnostics_gate,
    rhat_components,
    rhat_limit,
)


# --- progress bars: on a terminal, never in a log ----------------------------------------
class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_bars_only_on_a_terminal(monkeypatch):
    for var in ("CI", "NNGP_PPL_PROGRESS", "TERM"):
        monkeypatch.delenv(var, raising=False)
    assert _progress.on_terminal(True, _Terminal())
    assert not _progress.on_terminal(True, io.StringIO())  # a log file or a pipe
    assert not _progress.on_terminal(False, _Terminal())  # --no-progress
    monkeypatch.setenv("CI", "true")
    assert not _progress.on_terminal(True, _Terminal())  # a CI job's terminal-like log
    monkeypatch.setenv("NNGP_PPL_PROGRESS", "1")
    assert _progress.on_terminal(True, io.StringIO())  # forced on
    monkeypatch.setenv("NNGP_PPL_PROGRESS", "0")
    assert not _progress.on_terminal(True, _Terminal())


def test_pieces_cover_the_run_with_one_length_where_possible():
    # Without a bar, warm-up and draws share one scan length (one compiled program) where the
    # greatest common divisor leaves few pieces; coprime counts fall back to one scan each.
    assert _progress.pieces(500, 1000, False) == ([500], [500, 500])
    assert _progress.pieces(50, 50, False) == ([50], [50])
    assert _progress.pieces(150, 200, False) == ([50] * 3, [50] * 4)
    assert _progress.pieces(997, 1000, False) == ([997], [1000])
    assert _progress.pieces(0, 200, False) == ([], [200])
    warm, draw = _progress.pieces(500, 1000, True)
    assert sum(warm) == 500 and sum(draw) == 1000 and set(warm + draw) == {50}
    warm, draw = _progress.pieces(300, 999, True)  # no common divisor near 1/30 of the run
    assert sum(warm) == 300 and sum(draw) == 999 and len(set(warm + draw)) <= 3


@pytest.mark.slow
def test_nuts_in_pieces_gives_the_same_draws_and_a_bar(monkeypatch, capsys):
    """The bar's pieces are the same chain as one scan, bit for bit; off a terminal (pytest's
    captured stderr) nothing is drawn, forced on the bar names NUTS. The size and settings of
    the posteriors in tests/test_arviz_file.py (43 correlators, 2 chains, 150 + 200 steps):
    the run without a bar reuses their compiled program (pieces of 50 steps), the bar's
    pieces (10 steps) compile anew."""
    import jax

    from nngp_ppl.inference import sample_latent
    from nngp_ppl.inference.models.couplings import latent_arrays

    rng = np.random.default_rng(0)
    arrays = latent_arrays(rng.normal(size=43), np.eye(43))
    assert _progress.pieces(150, 200, True) == ([10] * 15, [10] * 20)
    run = {}
    for mode in ("0", "1"):
        monkeypatch.setenv("NNGP_PPL_PROGRESS", mode)
        run[mode] = sample_latent(arrays, np.eye(43), jax.random.PRNGKey(1), num_chains=2,
                                  num_samples=200, num_warmup=150, progress=True)
        err = capsys.readouterr().err
        assert ("NUTS" in err) == (mode == "1")
    np.testing.assert_array_equal(run["0"][0], run["1"][0])
    for name in run["0"][1]:
        np.testing.assert_array_equal(run["0"][1][name], run["1"][1][name])


def test_a_problem_draws_the_same_in_a_batch_as_alone():
    """Problems and chains run as one vectorised batch (couplings._over_chains): problem p of
    a batch gets, bit for bit, the draws it gets alone under its id, so each chain reads its
    own problem's data and key, whatever its companions."""
    import jax

    from nngp_ppl.inference import sample_latent
    from nngp_ppl.inference.models.couplings import LatentArrays, latent_arrays

    rng = np.random.default_rng(3)
    # Different data and prior scales: a chain given its neighbour's problem draws elsewhere.
    probs = [latent_arrays(rng.normal(scale=s, size=5), np.eye(5)) for s in (0.5, 3.0, 20.0)]
    batch = LatentArrays(*(np.stack(f) for f in zip(*probs, strict=True)))
    key = jax.random.PRNGKey(4)
    r, stats = sample_latent(batch, np.stack([np.eye(5)] * 3), key, num_chains=2,
                             num_samples=20, num_warmup=20, problem_ids=[7, 8, 9])
    for p, arrays in enumerate(probs):
        r1, stats1 = sample_latent(arrays, np.eye(5), key, num_chains=2, num_samples=20,
                                   num_warmup=20, problem_ids=[7 + p])
        np.testing.assert_array_equal(r[p], r1)
        for name, value in stats1.items():
            np.testing.assert_array_equal(stats[name][p], value)


# --- the diagnostics gate: R-hat against its Monte Carlo error ----------------------------
def _ar1(rng, n_sets, rho, chains=4, draws=1000, shift=0.0):
    """Stationary unit-variance AR(1) chains: one distribution, so every alarm is false."""
    eps = rng.normal(size=(n_sets, chains, draws))
    x = np.empty_like(eps)
    x[..., 0] = eps[..., 0]
    for t in range(1, draws):
        x[..., t] = rho * x[..., t - 1] + np.sqrt(1 - rho**2) * eps[..., t]
    x[:, 0] += shift
    return x


def test_rhat_limit_is_the_fixed_rule_at_large_ess_and_bounded_at_small():
    lim = rhat_limit([100, 400, 1000, 2000, 10_000, np.nan], 8, 500)
    assert lim[0] == lim[1]  # an ESS below 400 counts as 400 (the ESS check fails it)
    assert 1.03 < lim[1] < 1.04 and 1.01 < lim[2] < 1.02
    assert lim[3] == lim[4] == RHAT_MAX and np.isnan(lim[5])


def test_gate_false_alarms_on_well_mixed_chains():
    """4 chains x 1000 draws at bulk ESS ~ 450-700 (rho 0.8, 0.7), 600 independent sets: the
    fixed R-hat <= 1.01 fails several percent of correct posteriors, the ESS-aware limit at
    most its design rate (2 x 1e-3 per set; 5 of 600 is 4 binomial s.e. above it)."""
    rng = np.random.default_rng(20261206)
    x = np.concatenate([_ar1(rng, 300, 0.8), _ar1(rng, 300, 0.7)])
    c = rhat_components(x)
    fixed = c["r_hat"] > RHAT_MAX
    assert fixed.mean() > 0.05  # the trap of issue 19 (about 1 in 40 at real posteriors)
    assert (~c["rhat_ok"]).sum() <= 5


def test_gate_still_fails_chains_that_have_not_met():
    rng = np.random.default_rng(3)
    c = rhat_components(_ar1(rng, 50, 0.5, shift=1.0))  # one chain 1 s.d. away
    assert not c["rhat_ok"].any()


def test_gate_table_reports_the_limit_and_passes_mc_noise():
    import arviz_base

    rng = np.random.default_rng(11)
    lam = np.moveaxis(_ar1(rng, 2, 0.8), 0, -1)[..., None]  # (chain, draw, width, cutoff)
    dt = arviz_base.from_dict({"posterior": {"lambda": lam}},
                              dims={"lambda": ["width", "cutoff"]},
                              coords={"width": [5, 20], "cutoff": [10.0]})
    gate = diagnostics_gate(dt, warn=False)
    t = gate.table
    assert {"r_hat", "r_hat_limit", "ess_bulk"} <= set(t.columns)
    assert np.all(t["r_hat_limit"] >= RHAT_MAX)
    ok = (t["r_hat"] <= t["r_hat_limit"]) & (t["ess_bulk"] >= 400)
    assert list(t["ok"]) == list(ok)
    fixed = diagnostics_gate(dt, warn=False, alpha=0.0).table
    assert np.all(fixed["r_hat_limit"] == RHAT_MAX)


# --- labels, show, paper inputs -----------------------------------------------------------
def test_labels_do_not_double_net():
    from nngp_ppl.ensembles.core import net_label

    assert net_label("erf") == "erf-net" and net_label("sin_net") == "sin_net"
    assert net_label("mymod:CosNet") == "CosNet" and net_label("tanh") == "tanh-net"
    assert nn.ErfNet().describe().startswith("erf-net (")


def test_show_without_an_exact_oracle_degrades(tmp_path, capsys):
    net = nn.MLP(d_in=1, depth=2)
    X = np.array([[0.3], [-0.5], [1.0]])
    stats = nn.sample_correlators(net, X, [4], 200, orders=(2, 4), seed=0, progress=False)
    path = stats.to_netcdf(tmp_path / "mlp.nc")
    assert main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "exact comparison unavailable" in out and "MLP declares no exact-moment oracle" in out
    assert "m_4 sampled" in out and "m_4 exact" not in out


def test_paper_inputs_for_another_activation_point_to_the_erf_inputs():
    with pytest.raises(nn.NNGPInputError, match=r"erf, gauss, relu.*paper_inputs\('erf', d_in=1\)"
                       r".*--inputs \"-1,-0.6,-0.2,0.2,0.6,1\""):
        nn.paper_inputs("tanh")
    with pytest.raises(nn.NNGPInputError, match=r"d_in=4; pass your own inputs"):
        nn.paper_inputs("tanh", 4)


def test_cli_sample_paper_preset_for_tanh_is_one_line(capsys):
    rc = main(["sample", "--ensemble", "tanh", "--preset", "paper", "--widths", "3",
               "--n-nets", "10", "--no-progress", "-o", "never.nc"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--preset" in err and "--inputs" in err


# --- --ensemble module:Class from the working directory -----------------------------------
_MODULE = """
from dataclasses import dataclass
from typing import ClassVar
import jax, jax.numpy as jnp, numpy as np
import nngp_ppl as nn

@dataclass(frozen=True)
class SinNet(nn.Ensemble):
    sigma_w: float = 1.0
    sigma_b: float = 0.5
    name: ClassVar[str] = "sin_{tag}_net"
    two_point_exact: ClassVar[bool] = True

    def network_outputs(self, keys, X, width, dtype=jnp.float32):
        def one(key):
            kw, ka, kb = jax.random.split(key, 3)
            w = self.sigma_w / np.sqrt(self.d_in) * jax.random.normal(kw, (width, self.d_in), dtype)
            a = jax.random.normal(ka, (width,), dtype) / np.sqrt(width)
            b = self.sigma_b * jax.random.normal(kb, (), dtype)
            return a @ jnp.sin(w @ X.T.astype(dtype)) + b
        return jax.vmap(one)(keys)

    def traced_kernel(self, X, Y):
        s = self.sigma_w**2 / self.d_in
        p, q = s * jnp.sum(X * X, 1), s * jnp.sum(Y * Y, 1)
        return self.sigma_b**2 + jnp.exp(-(p[:, None] + q[None, :]) / 2) * jnp.sinh(s * X @ Y.T)

    def kernel_constant(self):
        return self.sigma_b**2
"""


def test_ensemble_module_in_the_working_directory(tmp_path, monkeypatch, capsys):
    tag = uuid.uuid4().hex[:8]
    module = f"usermod_{tag}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(_MODULE.replace("{tag}", tag)))
    monkeypatch.chdir(tmp_path)
    before = list(sys.path)
    out = tmp_path / "run.nc"
    rc = main(["sample", "--ensemble", f"{module}:SinNet", "--inputs", "0.3,0.8",
               "--widths", "3", "--n-nets", "32", "--orders", "2,4", "--no-progress",
               "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert sys.path == before  # the working directory was on the path for that import only
    stats = nn.CorrelatorStats.from_netcdf(out)
    assert type(stats.net).__name__ == "SinNet"
    assert stats.net.describe().startswith(f"sin_{tag}_net (")  # not "sin_..._net-net"
    sys.modules.pop(module, None)


def test_missing_ensemble_module_names_the_working_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc = main(["sample", "--ensemble", "no_such_mod_h5:Net", "--inputs", "0.3",
               "--widths", "3", "--n-nets", "8", "--no-progress", "-o", "x.nc"])
    err = capsys.readouterr().err
    assert rc == 2 and "working directory" in err and str(tmp_path) in err
    assert err.count("\n") == 1


# --- calibrate: exported, with its diagnostics and its tail warnings ----------------------
@pytest.mark.slow
def test_calibrate_reports_diagnostics_timing_and_tails():
    X = np.array([[-1.0], [0.2], [1.0]])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # One seed per NUTS call at tests/test_inference.py's RUN settings: the program of
        # its γ, β and heavy-tail tests (one width of the 4-pt function on three inputs).
        rows = nn.calibrate(nn.ErfNet(), X, 3, ("lambda",), (10.0,), seeds=range(2),
                            n_nets=300, num_samples=500, num_warmup=300, batch=1)
    keys = {"r_hat_max", "ess_bulk_min", "divergences", "gate_failures", "seconds",
            "seconds_nuts", "tails", "tail_seeds"}
    assert rows and all(keys <= set(r) for r in rows)
    for r in rows:
        assert 0.9 < r["r_hat_max"] < 1.2 and r["ess_bulk_min"] > 0
        assert 0 <= r["gate_failures"] <= 2 and r["divergences"] >= 0
        assert 0 < r["seconds_nuts"] <= r["seconds"]
        assert r["tails"] == (r["tail_seeds"] > 0)
    tails = [w for w in caught if issubclass(w.category, nn.HeavyTailWarning)]
    # One gathered warning naming the count, never one per seed and never hidden.
    assert len(tails) == int(rows[0]["tail_seeds"] > 0)
    if tails:
        assert f"at {rows[0]['tail_seeds']} of 2 seeds" in str(tails[0].message)
