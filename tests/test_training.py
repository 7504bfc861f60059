"""Trained ensembles (nngp_ppl.training.trainer): the sampler's networks at step 0, bit for bit;
one gradient step by hand; the optimisers; the stepped file; resume; the infinite-width
oracle at large width (slow)."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_same_trained_bits, kill_training_at_shard

import nngp_ppl
from nngp_ppl import ErfNet, GaussNet, ReLUNet, sample_correlators
from nngp_ppl._checks import NNGPInputError
from nngp_ppl.ensembles.networks import MLP
from nngp_ppl.theory.ntk import training_oracle
from nngp_ppl.training.trainer import (
    TrainedCorrelators,
    _Sums,
    draw_parameters,
    train_correlators,
    trained_outputs,
)
from nngp_ppl.tuples import distinct_tuples

NET = ErfNet(sigma_w=1.0, sigma_b=0.5)
X = np.array([-1.0, -0.2, 0.6])
X_TRAIN = np.array([-0.8, 0.0, 0.9])
Y_TRAIN = np.array([0.3, -0.2, 0.5])
KW = {"orders": (2, 4), "seed": 3, "batch_size": 64, "shard_size": 128, "progress": False}


def _same(a, b):
    for w in a.widths:
        for m in a.accumulated_orders:
            if not np.array_equal(a.moment_sums(w)[m], b.moment_sums(w)[m]):
                return False
    return True


@pytest.mark.parametrize("kernel", ["c", "xla"])
def test_step_zero_is_the_sampler_bit_for_bit(kernel, monkeypatch):
    monkeypatch.setenv("NNGP_PPL_KERNEL", kernel)
    net = GaussNet(sigma_w=0.6, sigma_b=0.3)
    sampled = sample_correlators(net, X, [3, 20], 320, **KW)
    trained = train_correlators(net, X, [3, 20], 320, X_TRAIN, Y_TRAIN, [0, 4], 0.5, **KW)
    assert _same(sampled, trained.at_step(0))
    assert not _same(sampled, trained.at_step(4))  # training moved them


def test_one_gradient_step_by_hand():
    # Standard parametrisation, L = 1/(2n) sum (f - y)^2: dL/da_i = (1/n) sum_j r_j h_ij,
    # dL/db1 = mean r, dL/dw_i = (1/n) sum_j r_j a_i σ'(z_ij) x_j, dL/dβ_i likewise without
    # x_j; the network is then evaluated at X, in float64 here.
    width, eta = 5, 0.3
    key = nngp_ppl.ensembles.core.network_keys(7, width, 0, 1)[0]
    w, b, a, b1 = (np.asarray(p, np.float64) for p in draw_parameters(NET, key, width,
                                                                       "standard"))
    w = w[:, 0]
    z = np.outer(w, X_TRAIN) + b[:, None]
    h = np.asarray(jax.scipy.special.erf(z))
    r = (a @ h + b1 - Y_TRAIN) / len(Y_TRAIN)
    dh = 2 / np.sqrt(np.pi) * np.exp(-z * z)
    w2 = w - eta * (a[:, None] * dh * r[None, :]) @ X_TRAIN
    b2 = b - eta * (a[:, None] * dh * r[None, :]).sum(1)
    a2, b12 = a - eta * h @ r, b1 - eta * r.sum()
    want = a2 @ np.asarray(jax.scipy.special.erf(np.outer(w2, X) + b2[:, None])) + b12
    got = trained_outputs(NET, X, width, 1, X_TRAIN, Y_TRAIN, [1], eta, seed=7,
                          parametrisation="standard")[0, 0]
    assert np.allclose(got, want, rtol=1e-5, atol=1e-6)


def test_parametrisations_agree_at_step_zero_and_differ_after():
    kw = {"seed": 1}
    ntk = trained_outputs(NET, X, 8, 16, X_TRAIN, Y_TRAIN, [0, 3], 0.4, **kw)
    std = trained_outputs(NET, X, 8, 16, X_TRAIN, Y_TRAIN, [0, 3], 0.4,
                          parametrisation="standard", **kw)
    assert np.array_equal(ntk[0], std[0])
    assert not np.allclose(ntk[1], std[1], atol=1e-4)


def test_optax_sgd_is_plain_gradient_descent_and_momentum_adam_lower_the_loss():
    pytest.importorskip("optax")
    both = np.concatenate([X, X_TRAIN])
    args = (NET, both, 32, 64, X_TRAIN, Y_TRAIN, [0, 50], 0.2)
    gd = trained_outputs(*args)
    assert np.allclose(trained_outputs(*args, optimizer="sgd"), gd, atol=1e-5)

    def loss(out):
        return np.mean((out[:, :, len(X):] - Y_TRAIN) ** 2, axis=(1, 2))

    for opt in ("momentum", "adam"):
        out = trained_outputs(*args, optimizer=opt)
        assert np.array_equal(out[0], gd[0])
        assert loss(out)[1] < 0.2 * loss(out)[0], opt


def test_stepped_file_round_trip(tmp_path):
    tr = train_correlators(NET, X, 5, 128, X_TRAIN, Y_TRAIN, [0, 2, 9], 0.5, **KW)
    path = tr.to_netcdf(tmp_path / "trained.nc")
    import xarray as xr

    ds = xr.load_dataset(path, engine="h5netcdf")
    assert list(ds["step"].values) == [0, 2, 9]
    assert json.loads(ds.attrs["training"])["learning_rate"] == 0.5
    back = TrainedCorrelators.from_netcdf(path)
    assert back.steps == (0, 2, 9) and back.setup == tr.setup
    for s in back.steps:
        assert _same(back.at_step(s), tr.at_step(s))
        assert np.allclose(back.at_step(s).covariance(5), tr.at_step(s).covariance(5))
    with pytest.raises(NNGPInputError, match="recorded steps"):
        back.at_step(3)


def test_a_killed_run_resumes_to_the_same_bits(tmp_path, monkeypatch):
    args = (NET, X, [4, 6], 384, X_TRAIN, Y_TRAIN, [0, 5], 0.5)
    whole = train_correlators(*args, **KW)
    folder = tmp_path / "ckpt"
    kill_training_at_shard(
        monkeypatch, 3, lambda: train_correlators(*args, checkpoint=folder, **KW))
    with pytest.raises(NNGPInputError, match="resume"):
        train_correlators(*args, checkpoint=folder, **KW)
    with pytest.raises(NNGPInputError, match="different training run"):
        train_correlators(*args[:-1], 0.6, checkpoint=folder, resume=True, **KW)
    resumed = train_correlators(*args, checkpoint=folder, resume=True, **KW)
    for s in whole.steps:
        assert _same(whole.at_step(s), resumed.at_step(s))


def _capture(monkeypatch):
    """The outputs each step's accumulation receives, per step: {step: [(n, k) arrays]}."""
    seen, real = {}, _Sums.add

    def add(self, f, n_valid):
        if f is not None:
            seen.setdefault(self._stepno, []).append(np.asarray(f)[:n_valid].copy())
        return real(self, f, n_valid)

    monkeypatch.setattr(_Sums, "add", add)
    return seen


@pytest.mark.filterwarnings("ignore::nngp_ppl.sampling.stats.HeavyTailWarning")
@pytest.mark.parametrize("kernel", ["c", "xla"])
def test_shifted_sums_are_the_float64_products_of_the_same_outputs(kernel, monkeypatch):
    # Orders 1..4 with covariance: the trained steps' outputs are shifted by the pilot
    # block's float32 mean before their products are summed (docs/training_flow.md).
    monkeypatch.setenv("NNGP_PPL_KERNEL", kernel)
    kw = {**KW, "orders": (1, 2, 3, 4)}
    seen = _capture(monkeypatch)
    # 250 networks: the last batch of 64 has padding rows, which must stay out of the sums
    run = train_correlators(NET, X, [5], 250, X_TRAIN, Y_TRAIN, [0, 9], 0.5, **kw)
    # step 0: reference 0, the sampler's sums bit for bit
    assert not run.at_step(0).is_shifted
    assert _same(sample_correlators(NET, X, [5], 250, **kw), run.at_step(0))
    # the reference: networks 0..63 trained alone, their mean rounded to float32
    pilot = trained_outputs(NET, X, 5, 64, X_TRAIN, Y_TRAIN, [9], 0.5, seed=3)[0]
    r = run.at_step(9).shift(5)
    assert np.array_equal(r, np.mean(pilot.astype(np.float64), 0).astype(np.float32))
    assert np.all(r != 0)
    st = run.at_step(9)
    F = np.concatenate(seen[9]).astype(np.float64)
    assert F.shape == (250, 3)
    # The stored sums are those of prod (f - r): each product of m float32 factors is off
    # by at most 2m 2^-24 of itself (m roundings of f - r, m - 1 of the products), so the
    # sums by at most that times sum |prod| (float64 addition adds ~250 2^-53).
    for m, got in st.shifted_moment_sums(5).items():
        prods = np.prod((F - r)[:, distinct_tuples(3, m)], axis=2)
        assert np.all(np.abs(got - prods.sum(0)) <= 2 * m * 2.0**-24 * np.abs(prods).sum(0)
                      + 1e-13), m
    # Correlators and connected functions against float64 products of the same outputs:
    # the rounding above moves them by ~1e-6 of their scale, their standard errors are
    # ~1/16 of it (250 networks), so 1e-4 standard errors holds by a margin of ~10.
    exact = {n: np.prod(F[:, distinct_tuples(3, n)], axis=2).mean(0) for n in (1, 2, 3, 4)}
    C = F - F.mean(0)
    centred = {n: np.prod(C[:, distinct_tuples(3, n)], axis=2).mean(0) for n in (2, 3)}
    for n in (1, 2, 3, 4):
        assert np.all(np.abs(st.correlator_tuples(n, 5) - exact[n])
                      <= 1e-4 * st.stderr_tuples(n, 5)), n
    for n, want in ((1, exact[1]), (2, centred[2]), (3, centred[3])):
        c = st.connected(n, 5)
        assert np.all(np.abs(c.values - want) <= 1e-4 * c.stderr), n


def test_a_killed_shifted_run_resumes_with_its_stored_reference(tmp_path, monkeypatch):
    kw = {**KW, "orders": (1, 2)}
    args = (NET, X, [4], 384, X_TRAIN, Y_TRAIN, [0, 5], 0.5)
    whole = train_correlators(*args, **kw)
    folder = tmp_path / "ckpt"
    kill_training_at_shard(
        monkeypatch, 2, lambda: train_correlators(*args, checkpoint=folder, **kw))
    stored = folder / "reference.json"
    saved = stored.read_text()
    stored.unlink()  # as an older version's checkpoint: unshifted sums, refused
    with pytest.raises(NNGPInputError, match="older nngp_ppl"):
        train_correlators(*args, checkpoint=folder, resume=True, **kw)
    stored.write_text(saved)
    resumed = train_correlators(*args, checkpoint=folder, resume=True, **kw)
    assert np.any(whole.at_step(5).shift(4) != 0)
    assert_same_trained_bits(whole, resumed, 4)


def test_shifted_file_round_trip_and_version_one_files(tmp_path):
    from nngp_ppl._io import write_netcdf
    from nngp_ppl.training.trainer import TRAINED_FORMAT

    tr = train_correlators(NET, X, 5, 128, X_TRAIN, Y_TRAIN, [0, 3], 0.5,
                           **{**KW, "orders": (1, 2)})
    back = TrainedCorrelators.from_netcdf(tr.to_netcdf(tmp_path / "trained.nc"))
    for s in (0, 3):
        a, b = tr.at_step(s), back.at_step(s)
        assert np.array_equal(a.shift(5), b.shift(5)) and a.is_shifted == (s == 3)
        assert _same(a, b) and np.array_equal(a.connected(2, 5).stderr,
                                              b.connected(2, 5).stderr)
    # A version-1 file (unshifted sums, no reference) reads with reference 0.
    old = train_correlators(NET, X, 5, 128, X_TRAIN, Y_TRAIN, [0, 3], 0.5, **KW)
    ds = old.to_dataset().drop_vars("reference")
    path = write_netcdf(ds, tmp_path / "v1.nc", file_format=TRAINED_FORMAT, version=1)
    v1 = TrainedCorrelators.from_netcdf(path)
    assert all(_same(old.at_step(s), v1.at_step(s)) and not v1.at_step(s).is_shifted
               for s in (0, 3))
    ds.attrs["correlators_format_version"] = 2
    path = write_netcdf(ds, tmp_path / "v9.nc", file_format=TRAINED_FORMAT, version=9)
    with pytest.raises(NNGPInputError, match="version 9"):
        TrainedCorrelators.from_netcdf(path)


CHILD = """
import json, sys
import numpy as np
import jax, nngp_ppl
from nngp_ppl.training.trainer import train_correlators
spec = json.loads(sys.argv[1])
net = nngp_ppl.ErfNet(sigma_w=1.0, sigma_b=0.5)
same = True
for orders in ([2, 4], [1, 2]):  # [1, 2]: step 5's outputs are shifted by the reference
    runs = [train_correlators(net, spec["X"], [4], 384, spec["xt"], spec["yt"], [0, 5], 0.5,
                              devices=d, orders=orders, seed=3, batch_size=64,
                              shard_size=128, progress=False) for d in (1, 2)]
    a, b = runs[0].at_step(5), runs[1].at_step(5)
    same = same and (np.any(a.shift(4) != 0) == (orders == [1, 2])) and np.array_equal(
        a.shift(4), b.shift(4))
    same = same and all(np.array_equal(runs[0].at_step(s).shifted_moment_sums(4)[m],
                                       runs[1].at_step(s).shifted_moment_sums(4)[m])
                        for s in (0, 5) for m in runs[0].at_step(s).accumulated_orders)
print(json.dumps({"devices": len(jax.local_devices()), "same": same}))
"""


def test_two_devices_give_the_one_device_bits(two_cpu_devices_env):
    # One width (the child compiles every program twice, once per device count): its three
    # shards of 128 networks go unevenly to the two devices.
    env = two_cpu_devices_env
    spec = {"X": X.tolist(), "xt": X_TRAIN.tolist(), "yt": Y_TRAIN.tolist()}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"devices": 2, "same": True}


def test_bad_training_input_is_refused():
    base = (NET, X, 4, 16, X_TRAIN, Y_TRAIN, [0, 1], 0.5)
    with pytest.raises(NNGPInputError, match="optimizer"):
        train_correlators(*base, optimizer="lbfgs", progress=False)
    with pytest.raises(NNGPInputError, match="y_train"):
        train_correlators(*base[:5], Y_TRAIN[:2], *base[6:], progress=False)
    with pytest.raises(NNGPInputError, match="y_train"):
        train_correlators(*base[:5], [0.1, np.nan, 0.2], *base[6:], progress=False)
    with pytest.raises(NNGPInputError, match="learning_rate"):
        train_correlators(*base[:7], -1.0, progress=False)
    with pytest.raises(NNGPInputError, match="steps"):
        train_correlators(*base[:6], [1.5], 0.5, progress=False)
    with pytest.raises(NNGPInputError, match="draws its own way"):
        train_correlators(MLP(2), *base[1:], progress=False)
    with pytest.raises(NNGPInputError, match="x_train"):
        train_correlators(NET, X, 4, 16, np.ones((3, 2)), Y_TRAIN, [0], 0.5, progress=False)


def _z_scores(out, mu, cov):
    """Max |z| of the sampled mean and covariance against (mu, cov), per step: standard
    errors from the sample (mean: sd/sqrt(n); covariance entry: sd of the centred products
    / sqrt(n))."""
    n = out.shape[1]
    m = out.mean(1)
    zm = (m - mu) / (out.std(1) / np.sqrt(n))
    d = out - m[:, None]
    prod = d[..., :, None] * d[..., None, :]
    zc = (prod.mean(1) - cov) / (prod.std(1) / np.sqrt(n))
    return np.abs(zm).max(), np.abs(zc).max()


@pytest.mark.slow
@pytest.mark.parametrize("net", [ErfNet(sigma_w=1.0, sigma_b=0.5),
                                 ReLUNet(sigma_w=1.0, sigma_b=0.5)], ids=lambda n: n.name)
def test_wide_trained_ensemble_is_the_oracle_gp(net):
    # N = 2048, 1000 networks, NTK parametrisation, GD at η = 1: at every recorded step the
    # sampled mean and covariance at the test inputs are within 4.5 standard errors of
    # (μ_t, Σ_t) (the 1/N bias is ~1e-3 of the spread here; fixed seed). The recorded G2
    # of train_correlators is E[f f'] = Σ_t + μ_t μ_t^T, judged with its own standard errors.
    steps = [0, 5, 40]
    mu, cov = training_oracle(net, X, X_TRAIN, Y_TRAIN, steps, 1.0)
    out = trained_outputs(net, X, 2048, 1000, X_TRAIN, Y_TRAIN, steps, 1.0, seed=11)
    zm, zc = _z_scores(out.astype(np.float64), mu, cov)
    assert zm <= 4.5 and zc <= 4.5, (zm, zc)
    tr = train_correlators(net, X, 2048, 512, X_TRAIN, Y_TRAIN, steps, 1.0, orders=(2,),
                           seed=12, progress=False)
    for i, s in enumerate(steps):
        st = tr.at_step(s)
        g2 = cov[i] + np.outer(mu[i], mu[i])
        z = (st.correlator(2, 2048) - g2) / st.stderr(2, 2048)
        assert np.max(np.abs(z)) <= 4.5, (s, z)


def test_trained_mean_moves_towards_the_targets():
    both = np.concatenate([X_TRAIN, X])
    out = trained_outputs(NET, both, 64, 200, X_TRAIN, Y_TRAIN, [0, 200], 1.0, seed=2)
    err = np.abs(out[:, :, :3] - Y_TRAIN).mean(axis=(1, 2))
    assert err[1] < 0.05 * err[0]
    assert jnp.asarray(out).dtype == jnp.float32


@pytest.mark.parametrize("net", [NET, GaussNet(sigma_w=0.6, sigma_b=0.3)], ids=lambda n: n.name)
def test_training_forward_pass_is_the_samplers_network(net):
    # The same networks: the training's own forward pass at step 0 against the sampler's
    # outputs, to float32 round-off (the two XLA programs may add the neurons in another
    # order: measured 1 ulp at width 3).
    for width in (3, 20):
        mine = trained_outputs(net, X, width, 64, X_TRAIN, Y_TRAIN, [0], 0.5, seed=3)[0]
        theirs = net.sample_outputs(3, X, width, 64)
        assert np.allclose(mine, theirs, rtol=4e-7, atol=4e-7)


def test_cli_train_writes_the_stepped_file(tmp_path, capsys):
    from nngp_ppl.cli.main import main

    data = tmp_path / "points.csv"
    data.write_text("x,y\n" + "".join(f"{x},{y}\n" for x, y in zip(X_TRAIN, Y_TRAIN,
                                                                      strict=True)))
    out = tmp_path / "trained.nc"
    argv = ["train", "--ensemble", "erf", "--sigma-b", "0.5", "--inputs=-1,-0.2,0.6",
            "--widths", "5", "--n-nets", "128", "--data", str(data), "--steps", "0,3",
            "--learning-rate", "0.5", "--orders", "2,4", "--seed", "3", "--batch-size", "64",
            "--shard-size", "128", "--no-progress", "-o", str(out)]
    assert main(argv) == 0
    got = TrainedCorrelators.from_netcdf(out)
    want = train_correlators(NET, X, 5, 128, X_TRAIN, Y_TRAIN, [0, 3], 0.5, **KW)
    assert got.steps == (0, 3) and all(_same(got.at_step(s), want.at_step(s)) for s in (0, 3))
    assert not (tmp_path / "trained.nc.partial").exists()
    capsys.readouterr()
    assert main(["show", str(out)]) == 0  # per step: deviation from the oracle's GP
    shown = capsys.readouterr().out
    assert "oracle" in shown and "m_4" in shown
    assert [line.split()[:2] for line in shown.splitlines()[-2:]] == [["0", "5"], ["3", "5"]]
    np.savez(tmp_path / "bad.npz", x=X_TRAIN, y=Y_TRAIN)
    capsys.readouterr()
    assert main(argv[:11] + [str(tmp_path / "bad.npz")] + argv[12:]) == 2
    assert "x_train and y_train" in capsys.readouterr().err
    assert main(argv[:15] + ["-0.5"] + argv[16:]) == 2
    assert "--learning-rate" in capsys.readouterr().err


def test_odd_orders_record_the_learned_one_point_function():
    """Odd orders pass through training (the sampler measures 1..6): the recorded 1-pt
    function is 0 within errors at step 0 and equals the infinite-width oracle's mean mu_t
    after 20 steps (|z| <= 4.5 with the naive standard error; at N = 200 the O(1/N)
    deviation is ~10x below the error of 4000 networks)."""
    from nngp_ppl.theory.ntk import training_oracle
    from nngp_ppl.training.trainer import train_correlators

    net = ErfNet(d_in=1, sigma_w=1.0, sigma_b=0.5)
    X = np.array([[-0.5], [0.3], [0.8]])
    xt, yt = np.array([[-0.6], [0.5]]), np.array([0.4, -0.3])
    tc = train_correlators(net, X, [200], 4000, xt, yt, [0, 20], 0.5, orders=(1, 2, 3, 4),
                           progress=False)
    mu, _ = training_oracle(net, X, xt, yt, [0, 20], 0.5)
    for i, step in enumerate((0, 20)):
        stats = tc.at_step(step)
        z = (stats.correlator_tuples(1, 200) - mu[i]) / stats.stderr_tuples(1, 200)
        assert np.max(np.abs(z)) <= 4.5, (step, z)
    assert np.min(np.abs(mu[1])) > 10 * np.max(tc.at_step(20).stderr_tuples(1, 200))


@pytest.mark.parametrize("kernel", ["c", "xla"])
def test_diverging_training_is_refused_not_summed(kernel, monkeypatch):
    """A learning rate far past the stable 2n / max eig(Theta) makes the outputs overflow;
    both accumulation kernels refuse the batch with one message instead of summing NaN."""
    from nngp_ppl._checks import NNGPInputError
    from nngp_ppl.training.trainer import train_correlators

    monkeypatch.setenv("NNGP_PPL_KERNEL", kernel)
    net = ErfNet(d_in=1)
    X = np.array([[0.2], [0.7]])
    xt, yt = np.array([[-0.6], [0.5]]), np.array([0.4, -0.3])
    with pytest.raises(NNGPInputError, match="training diverged.*learning_rate"):
        train_correlators(net, X, [4], 64, xt, yt, [0, 200], 1e4, progress=False)
