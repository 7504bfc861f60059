"""Input faults of issue 19 §4 (studies, CLI options, the Python API), one test per defect.

Each test reproduces a reported failure -- a study that failed after two or three stages, a
crash, a silently accepted input that produced NaN or inf -- and checks the fixed
behaviour: one ``NNGPInputError`` naming the argument (or the study file and key) and what
is allowed, before any work; on the command line exit status 2 with one line and no
traceback. Statistics are built from synthetic sums (brute force over stand-in outputs),
so no test here samples many networks or runs NUTS.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import xarray as xr
from patching import patch_everywhere
from test_robustness import cli_error

import nngp_ppl
from nngp_ppl import CorrelatorStats, NNGPInputError, _checks
from nngp_ppl.cli.main import main
from nngp_ppl.inference import eft
from nngp_ppl.inference.problem import coupling_names
from nngp_ppl.sampling.stats import accumulated_orders
from nngp_ppl.study.spec import MAX_KEY_LENGTH, MAX_TEXT_LENGTH, study_from_text
from nngp_ppl.tuples import distinct_tuples

NET = nngp_ppl.ErfNet(sigma_w=1.2, sigma_b=0.4)
X = np.array([[-1.0], [0.3], [0.8]])  # extent max|x| = 1


def synthetic_stats(orders=(2, 4, 6), *, n=60, width=3, seed=0, net=NET, inputs=X):
    """Statistics of stand-in network outputs (random numbers), exact sums by brute force."""
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, len(inputs)))
    sums = {m: np.prod(f[:, distinct_tuples(len(inputs), m)], axis=2).sum(axis=0)
            for m in accumulated_orders(orders, True)}
    return CorrelatorStats(net, inputs, orders, 0, {width: sums}, {width: [(0, n)]},
                           covariance=True)


@pytest.fixture
def nothing_runs(monkeypatch):
    """Sampling and NUTS fail the test: the error must come before any work."""
    import nngp_ppl.inference.couplings as couplings
    import nngp_ppl.sampling.sampler as sampling

    def forbidden(*args, **kwargs):
        raise AssertionError("work started although the input was bad")

    patch_everywhere(monkeypatch, sampling, "sample_correlators", forbidden)
    patch_everywhere(monkeypatch, couplings, "sample_latent", forbidden)


# ---------------------------------------------------------------------------------------------
# 1. studies that failed late: every key checked before the first stage
# ---------------------------------------------------------------------------------------------
STUDY = """
name = "t"
n_nets = 200
widths = [5]
fit_cutoffs = [10, 100]
infer_cutoffs = [10]
num_chains = 2
num_samples = 50
num_warmup = 50

[[run]]
key = "erf"
ensemble = "erf"
inputs = [-1.0, 0.5, 1.0]
"""


def _study(tmp_path, *changes) -> object:
    text = STUDY
    for old, new in changes:
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


LATE = {
    # the six studies of the issue: (changes to the file, words of the one-line error)
    "infer cutoff 0.1": (
        [("infer_cutoffs = [10]", "infer_cutoffs = [0.1]")],
        "study.toml: infer_cutoffs must be at least the inputs' extent max|x_i| = 1 of run "
        "'erf'"),
    "one chain": (
        [("num_chains = 2", "num_chains = 1")],
        "study.toml: num_chains must be an integer >= 2 (R-hat compares chains), got 1"),
    "exact noise for an MLP": (
        [('ensemble = "erf"', 'ensemble = "mlp"'),
         ("num_warmup = 50", 'num_warmup = 50\ncovariance = "exact"')],
        'study.toml: covariance: "exact" needs the exact finite-width moments up to order '
        "12, which run 'erf' (mlp-net"),
    "fit cutoff 1e300": (
        [("fit_cutoffs = [10, 100]", "fit_cutoffs = [10, 1e300]")],
        "study.toml: fit_cutoffs must be at most 1e+50"),
    "300-character key": (
        [('key = "erf"', 'key = "' + "k" * 300 + '"')],
        f"key must be at most {MAX_KEY_LENGTH} characters (it names the run's files), got 300"),
    # §2: a 2 MB title kept the report busy for 4.5 min
    "2 MB title": (
        [('ensemble = "erf"', 'ensemble = "erf"\ntitle = "' + "T" * 2_000_000 + '"')],
        f"study.toml: [[run]] 1 (erf): title must be at most {MAX_TEXT_LENGTH} characters, "
        "got 2,000,000"),
    # the same class: the 6-pt cutoff was checked by the last stage only
    "six-point cutoff 0.5": (
        [("infer_cutoffs = [10]", "infer_cutoffs = [10]\nsix_point_cutoff = 0.5")],
        "study.toml: six_point_cutoff must be at least the inputs' extent"),
}


@pytest.mark.parametrize("case", list(LATE))
def test_a_study_is_refused_before_any_stage_naming_the_file_and_key(
        tmp_path, capsys, nothing_runs, case):
    changes, words = LATE[case]
    out = tmp_path / "out"
    err = cli_error(["reproduce", "--config", str(_study(tmp_path, *changes)), "--out",
                     str(out), "--no-progress"], capsys)
    assert words in err, err
    assert not out.exists()  # refused before the output directory, let alone a stage
    assert len(err) < 600  # the 2 MB title and the 300-character key are not repeated


def test_n_nets_1_from_the_command_line_is_refused_up_front(tmp_path, capsys, nothing_runs):
    out = tmp_path / "out"
    err = cli_error(["reproduce", "--config", str(_study(tmp_path)), "--n-nets", "1",
                     "--out", str(out)], capsys)
    assert "--n-nets must be at least 2" in err
    assert not out.exists()


READ = {
    # the rest of the class: what a stage refused late (or never), now refused at the file
    "zero kernel at an input": (
        [('ensemble = "erf"', 'ensemble = "relu"\nsigma_b = 0.0'),
         ("[-1.0, 0.5, 1.0]", "[0.0, 0.5, 1.0]")],
        "study.toml: [[run]] 1 (erf): inputs: the relu-net (d_in=1, sigma_w=1.0, "
        "sigma_b=0.0) kernel K(x, x) is 0 at input 0"),
    "sigma_w 1e30": (
        [("inputs = [-1.0, 0.5, 1.0]", "inputs = [-1.0, 0.5, 1.0]\n[run.params]\nsigma_w = 1e30")],
        "ensemble 'erf': sigma_w must be at most 1e+10"),
    "all sigmas 0": (
        [('ensemble = "erf"', 'ensemble = "erf"\nsigma_b = 0.0'),
         ("inputs = [-1.0, 0.5, 1.0]", "inputs = [-1.0, 0.5, 1.0]\n[run.params]\nsigma_w = 0.0")],
        "zero kernel"),
    "kernel overflowing the box": (  # ReLU: K ~ Λ² on the box's corner
        [('ensemble = "erf"', 'ensemble = "relu"'), ("[10, 100]", "[10, 1e40]")],
        "study.toml: fit_cutoffs (run 'erf'): at cutoff 1e+40 the kernel reaches"),
    "inputs beyond the shared bound": (
        [("[-1.0, 0.5, 1.0]", "[-1.0, 0.5, 1e60]")],
        "inputs must have coordinates of size at most 1e+50"),
    "300-character name": (
        [('name = "t"', 'name = "' + "n" * 300 + '"')],
        "study.toml: name must be at most 200 characters"),
    "posterior draws beyond memory": (
        [("num_samples = 50", "num_samples = 1000000000000")],
        "study.toml: num_chains/num_samples: 2 chains x 1000000000000 draws for run 'erf' "
        "would need about"),
    "width beyond the PRNG's uint32": (
        [("widths = [5]", "widths = [5, 4294967296]")],
        "study.toml: widths must be a list of distinct positive integers up to 4294967295"),
    "posterior widths not sampled": (
        [("num_warmup = 50", "num_warmup = 50\n[infer_widths]\nerf = [7]")],
        "study.toml: infer_widths: erf = [7] must be among the widths the run samples, [5]"),
    "negative seed": (
        [("num_chains = 2", "num_chains = 2\nseed = -1")],
        "study.toml: seed must be an integer >= 0"),
}


@pytest.mark.parametrize("case", list(READ))
def test_the_rest_of_the_class_is_refused_when_the_study_is_read(tmp_path, case):
    changes, words = READ[case]
    with pytest.raises(NNGPInputError) as err:
        study_from_text(_study(tmp_path, *changes).read_text(), "study.toml")
    assert words in str(err.value) and str(err.value).startswith("study.toml"), err.value


def test_a_preset_changed_in_python_is_checked_by_reproduce(tmp_path):
    """dataclasses.replace bypasses the file's schema; reproduce checks the whole study."""
    preset = study_from_text(STUDY, "study.toml")
    for change, words in (({"num_chains": 1}, "study.toml: num_chains must be an integer >= 2"),
                          ({"infer_cutoffs": (0.5,)}, "infer_cutoffs must be at least"),
                          ({"n_nets": 1}, "study.toml: n_nets must be an integer in 2..2**32"),
                          ({"covariance": "exakt"}, "covariance must be one of")):
        with pytest.raises(NNGPInputError, match=None) as err:
            nngp_ppl.study.stages.reproduce(dataclasses.replace(preset, **change),
                                         tmp_path / "out", dry_run=True, log=lambda _: None)
        assert words in str(err.value), err.value
    assert not (tmp_path / "out").exists()


def test_the_study_source_changes_no_stage_key():
    """Where a study was read from is named in errors but is not one of its settings."""
    a = study_from_text(STUDY, "a.toml")
    b = study_from_text(STUDY, "elsewhere/b.toml")
    assert a == b and a.to_dict() == b.to_dict() and "source" not in a.to_dict()


# ---------------------------------------------------------------------------------------------
# 3. input that crashed or read as nonsense
# ---------------------------------------------------------------------------------------------
SAMPLE = ["sample", "--ensemble", "erf", "--inputs", "-1,0.5,1", "--widths", "2",
          "--n-nets", "20", "--no-progress"]


@pytest.mark.parametrize(("options", "words"), [
    (["--sigma-w", "1e200"], "--sigma-w must be at most 1e+10"),  # was an OverflowError
    (["--sigma-w", "1e30"], "--sigma-w must be at most 1e+10"),  # was accepted, inf sums
    (["--sigma-b", "1e11"], "--sigma-b must be at most 1e+10"),
    (["--sigma-w", "0", "--sigma-b", "0"], "zero kernel: sigma_w = sigma_b = all 0"),
])
def test_sigma_out_of_range_is_refused(tmp_path, capsys, nothing_runs, options, words):
    out = tmp_path / "s.nc"
    err = cli_error([*SAMPLE, *options, "-o", str(out)], capsys)
    assert words in err, err
    assert not out.exists()


def test_the_sigma_bound_is_where_the_sums_stay_finite():
    """Outputs of the largest size allowed (ReLU-net without bias at σ_W = sqrt(MAX_SIGMA):
    f ∝ σ_W², so K(x, x) ~ MAX_SIGMA² at |x| = 1) give finite sums and tail checks without an
    overflow, and the moments scale exactly as σ_W^(2n): the bound is not below what works.
    (At σ_W = 1e15 on Erf-net the tail check overflowed; at 1e30 the sums were inf.)"""
    s = _checks.MAX_SIGMA**0.5
    big, ref = (nngp_ppl.ReLUNet(sigma_w=v, sigma_b=0.0) for v in (s, 1.0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a, b = (nngp_ppl.sample_correlators(net, X, [2], 16, seed=0, progress=False)
                for net in (big, ref))
    assert not [w for w in caught if "overflow" in str(w.message)]
    for n in (2, 4, 6):
        assert np.all(np.isfinite(a.stderr_tuples(n, 2)))
        np.testing.assert_allclose(a.correlator_tuples(n, 2) / s ** (2 * n),
                                   b.correlator_tuples(n, 2), rtol=1e-5, atol=1e-12)
    for cls in (nngp_ppl.ErfNet, nngp_ppl.GaussNet):
        with pytest.raises(NNGPInputError, match=r"^sigma_w must be at most 1e\+10"):
            cls(sigma_w=1e15)
    with pytest.raises(NNGPInputError, match="^zero kernel"):
        nngp_ppl.MLP(sigma_w=0.0, sigma_b=0.0)


def test_inputs_where_the_kernel_vanishes_are_refused(tmp_path, capsys, nothing_runs):
    """ReLU-net without bias at x = 0: every network outputs exactly 0 there."""
    err = cli_error(["sample", "--ensemble", "relu", "--sigma-b", "0", "--inputs", "0,0.5",
                     "--widths", "2", "--n-nets", "20", "-o", str(tmp_path / "r.nc")], capsys)
    assert "--inputs: the relu-net" in err and "K(x, x) is 0 at input 0" in err


def test_lattice_coupling_too_strong_to_sample_is_refused_naming_it(tmp_path, capsys):
    """λ = 1e300 gave R-hat inf and a warning about a κ f⁶ wall with κ = 0."""
    from nngp_ppl.inference.models.field import MAX_INTERACTION_SPREAD, FieldLattice, check_strength
    from nngp_ppl.theory.lattice import box_lattice

    err = cli_error(["lattice", "--ensemble", "gauss", "--sigma-w", "1", "--sigma-b", "0.5",
                     "--inputs", "0,0.5", "--cutoff", "1", "--sites", "4", "--lambda",
                     "1e300", "-o", str(tmp_path / "l.nc")], capsys)
    assert "--lambda = 1e+300 is too strong to sample on this lattice" in err, err
    assert "kappa" not in err and "κ" not in err
    net, x = nngp_ppl.GaussNet(sigma_w=1.0, sigma_b=0.5), np.array([[0.0], [0.5]])
    field = FieldLattice.build(net, x, box_lattice(1, 1.0, "uniform", split_points=x,
                                                   n_sites=4))
    check_strength(field, 1.0, 0.0)  # an ordinary coupling passes
    limit = float(str(err).rsplit("at most about ", 1)[1].split()[0])
    check_strength(field, limit / 10, 0.0)
    with pytest.raises(NNGPInputError, match="^kappa = "):
        check_strength(field, 0.0, 10 * limit * 1e3)
    assert MAX_INTERACTION_SPREAD == 1e12


def test_lattice_divergence_warning_names_the_wall_the_action_has(tmp_path, capsys,
                                                                  monkeypatch):
    import nngp_ppl.inference.models.field as field

    def fake(f, lam, kappa, **kw):
        return xr.Dataset(attrs={"lambda": lam, "kappa": kappa, "lattice": "L",
                                 "propagator": "full", "divergences": 3, "max_r_hat": 1.0,
                                 "min_ess_bulk": 500.0, "num_chains": 2, "num_samples": 10})

    patch_everywhere(monkeypatch, field, "field_correlators", fake)
    argv = ["lattice", "--ensemble", "gauss", "--inputs", "0,0.5", "--cutoff", "1",
            "--sites", "4", "-o", str(tmp_path / "l.nc")]
    assert main([*argv, "--lambda", "0.1"]) == 0
    assert "steep λ f⁴ wall" in capsys.readouterr().err
    assert main([*argv, "--lambda", "-0.1", "--kappa", "0.1"]) == 0
    assert "steep κ f⁶ wall" in capsys.readouterr().err


def test_one_cutoff_gives_the_exact_beta_and_says_why_gamma_is_not_fitted():
    """``fit --cutoffs 10`` stored β = NaN: β is a derivative at each cutoff, so it is the
    same number with one cutoff as with several; only the regression γ needs two."""
    stats = synthetic_stats()
    one = eft.fit_dataset(stats, [10.0], couplings=("lambda",))
    two = eft.fit_dataset(stats, [10.0, 100.0], couplings=("lambda",))
    assert np.all(np.isfinite(one["beta"].values))
    np.testing.assert_allclose(one["beta"].sel(cutoff=10.0), two["beta"].sel(cutoff=10.0),
                               rtol=1e-12)
    np.testing.assert_allclose(one["gamma_local"].sel(cutoff=10.0),
                               two["gamma_local"].sel(cutoff=10.0), rtol=1e-12)
    assert np.isnan(one["gamma_fit"]).all() and "one cutoff" in one["gamma_fit"].attrs["comment"]
    assert "comment" not in two["gamma_fit"].attrs


def test_kappa_alone_is_refused_by_fit_and_infer_with_one_message(tmp_path, capsys):
    run = tmp_path / "run.nc"
    synthetic_stats().to_netcdf(run)
    errors = [cli_error([cmd, str(run), "--cutoffs", "10", "--couplings", "kappa", "-o",
                         str(tmp_path / f"{cmd}.nc")], capsys).split(": error: ", 1)[1]
              for cmd in ("fit", "infer")]
    assert errors[0] == errors[1]
    assert errors[0].startswith("--couplings must be lambda or lambda,kappa or g3,lambda")
    assert ", got 'kappa': " in errors[0]
    stats = synthetic_stats()
    library = set()
    for call in (lambda: eft.fit_couplings(stats, [10.0], couplings=("kappa",)),
                 lambda: eft.fit_dataset(stats, [10.0], couplings="kappa"),
                 lambda: nngp_ppl.infer_couplings(stats, cutoffs=[10.0], couplings=("kappa",))):
        with pytest.raises(NNGPInputError) as err:
            call()
        library.add(str(err.value))
    assert library == {"couplings" + errors[0][len("--couplings"):].rstrip("\n")}
    # either order of the pair is the pair
    assert coupling_names("kappa,lambda") == ("lambda", "kappa")


@pytest.mark.parametrize(("orders", "command", "extra", "words"), [
    ((2,), "infer", [], "holds the correlator orders [2] only; inferring lambda needs the "
                        "4-pt function: sample with orders 2,4"),
    ((2, 4), "infer", ["--couplings", "lambda,kappa"],
     "holds the correlator orders [2, 4] only; inferring lambda and kappa needs the 6-pt "
     "function: sample with orders 2,4,6"),
    ((2,), "fit", [], "holds the correlator orders [2] only; fitting lambda and kappa and the "
                      "6-pt check needs the 4-pt and 6-pt functions"),
])
def test_a_run_without_the_orders_names_what_it_lacks(tmp_path, capsys, nothing_runs, orders,
                                                      command, extra, words):
    """``infer`` on an orders-2 run blamed ``--orders``, which was never given."""
    run = tmp_path / "run.nc"
    synthetic_stats(orders).to_netcdf(run)
    err = cli_error([command, str(run), "--cutoffs", "10", *extra, "-o",
                     str(tmp_path / "o.nc")], capsys)
    assert f"{run} {words}" in err, err
    assert "--orders" not in err
    with pytest.raises(NNGPInputError, match=r"^stats holds the correlator orders"):
        nngp_ppl.infer_couplings(synthetic_stats(orders), cutoffs=[10.0],
                                 couplings=("lambda", "kappa") if extra else ("lambda",))


# ---------------------------------------------------------------------------------------------
# 4. the Python API: cutoffs, inputs, kernels and statistics checked where they enter
# ---------------------------------------------------------------------------------------------
EXTENT = "cutoffs must be at least the inputs' extent max|x_i| = 1"


def _below_extent_calls():
    from nngp_ppl.inference.calibration import calibrate

    stats = synthetic_stats()
    return {
        "infer_couplings": lambda: nngp_ppl.infer_couplings(stats, cutoffs=[0.5, 10.0]),
        "calibrate": lambda: calibrate(NET, X, 3, cutoffs=(0.5, 10.0), seeds=range(2)),
        "mean_coupling": lambda: eft.mean_coupling(None, None, stats, [0.5], width=3),
        "fit_couplings": lambda: eft.fit_couplings(stats, [0.5], couplings=("lambda",)),
        "fit_dataset": lambda: eft.fit_dataset(stats, [0.5]),
        "first_order_correction": lambda: nngp_ppl.first_order_correction(
            NET, X, 4, {"lambda": 1e-3}, 0.5),
        "ngp_correlator": lambda: nngp_ppl.ngp_correlator(NET, X, 4, {"lambda": 1e-3}, 0.5),
        "first_order_design": lambda: nngp_ppl.first_order_design(NET, X, 4, [0.5]),
    }


@pytest.mark.parametrize("name", list(_below_extent_calls()))
def test_every_entry_point_refuses_cutoffs_below_the_inputs_extent(name, nothing_runs):
    with pytest.raises(NNGPInputError) as err:
        _below_extent_calls()[name]()
    assert EXTENT in str(err.value), err.value


def test_statistics_with_other_inputs_or_another_ensemble_are_refused():
    stats = synthetic_stats()
    other_x, other_net = X + 0.1, nngp_ppl.ErfNet(sigma_w=2.0)
    for call in (lambda: eft.mean_coupling(None, other_x, stats, [10.0], width=3),
                 lambda: eft.coupling_per_tuple(None, other_x, stats, [10.0], width=3),
                 lambda: eft.fit_couplings(stats, [10.0], X=other_x),
                 lambda: nngp_ppl.infer_couplings(stats, X=other_x, cutoffs=[10.0])):
        with pytest.raises(NNGPInputError, match=r"^X must be the inputs the correlators "
                                                 r"were sampled at"):
            call()
    # (the point fits take a net as the theory of the same network, e.g. a Monte Carlo
    # kernel of another size; the posterior, whose noise model is the ensemble's, does not)
    with pytest.raises(NNGPInputError, match=r"^net .* differs from the ensemble"):
        nngp_ppl.infer_couplings(stats, other_net, cutoffs=[10.0])
    # their own inputs and ensemble, given explicitly, are accepted
    mine = eft.mean_coupling(NET, X.copy(), stats, [10.0], width=3)
    np.testing.assert_array_equal(mine, eft.mean_coupling(None, None, stats, [10.0], width=3))


def test_an_asymmetric_kernel_is_refused_by_the_wick_sums():
    K = np.array([[1.0, 0.5], [0.4, 1.0]])
    for f in (nngp_ppl.gp_correlator, nngp_ppl.theory.wick.gp_correlator_tuples):
        with pytest.raises(NNGPInputError, match=r"^K must be symmetric .* K\[0,1\] = 0.5 but "
                                                 r"K\[1,0\] = 0.4"):
            f(K, 4)
    sym = (K + K.T) / 2
    assert nngp_ppl.gp_correlator(sym, 4)[0, 0, 0, 0] == pytest.approx(3.0)  # 3 K_00^2


def test_a_fit_of_other_inputs_or_another_ensemble_is_not_compared_with_a_posterior():
    """compare_point_estimates set a fit beside a posterior without asking whether both
    estimate the same couplings (the file records inputs and ensemble)."""
    import json

    from nngp_ppl.inference import compare_point_estimates

    rng = np.random.default_rng(0)
    post = xr.Dataset({"lambda": (("chain", "draw", "width", "cutoff"),
                                  rng.normal(size=(2, 50, 1, 1)))},
                      coords={"width": [3], "cutoff": [10.0]})
    const = xr.Dataset({"inputs": (("input", "input_dim"), X)})
    tree = xr.DataTree.from_dict({"posterior": post, "constant_data": const})
    tree.attrs["ensemble"] = json.dumps(NET.to_dict())

    def fit(inputs=X, net=NET):
        return xr.Dataset({"lambda_mean": (("width", "cutoff"), [[0.1]])},
                          coords={"width": [3], "cutoff": [10.0]},
                          attrs={"inputs": json.dumps(inputs.tolist()),
                                 "ensemble": json.dumps(net.to_dict())})

    same = compare_point_estimates(tree, fit(), plot=False).table
    assert len(same) == 1 and same["point"].iloc[0] == 0.1
    with pytest.raises(NNGPInputError, match=r"^fit was made at the inputs"):
        compare_point_estimates(tree, fit(inputs=X + 0.1), plot=False)
    with pytest.raises(NNGPInputError, match=r"^fit is of the ensemble"):
        compare_point_estimates(tree, fit(net=nngp_ppl.ErfNet()), plot=False)


def test_moments_of_the_wrong_shape_or_asymmetric_are_refused():
    """connected_correlator read a ragged 4-pt array with an IndexError and summed an
    asymmetric 2-pt one as if it were a moment."""
    K = NET.kernel(X)
    G4 = nngp_ppl.gp_correlator(K, 4)
    for moments, words in (({2: K, 4: np.ones((2, 2, 2, 2))}, r"^moments\[4\] must be a full "
                                                              r"\(3, 3, 3, 3\) array"),
                           ({2: K + np.triu(np.ones((3, 3)), 1), 4: G4},
                            r"^moments\[2\] must be symmetric"),
                           ({"2": K}, r"^moments must be keyed by orders 1..12"),
                           ({2: np.full((3, 3), np.nan)}, r"^moments\[2\] must be finite")):
        with pytest.raises(NNGPInputError, match=words):
            nngp_ppl.connected_correlator(moments, 4)
    # Gaussian moments have no connected 4-pt part: the checked path still computes
    np.testing.assert_allclose(nngp_ppl.connected_correlator({2: K, 4: G4}, 4), 0.0,
                               atol=1e-12)


def test_compare_refuses_what_is_not_a_posterior():
    from nngp_ppl.inference import compare_point_estimates

    with pytest.raises(NNGPInputError, match=r"^posterior must be the DataTree"):
        compare_point_estimates(3, None)
