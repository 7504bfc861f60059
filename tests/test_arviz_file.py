"""The posterior file as ArviZ reads it (issue 19 §2): ``az.loo`` and ``az.compare`` on the
stored file give the stored ELPD of every compared model, and ``az.plot_ppc_dist`` and
``az.plot_loo_pit`` run with their default arguments on one (width, cutoff).

Oracle for the GP model, which has no parameter: its ELPD is the sum over the conditioned
correlators of log N(Ĝ_t − G_free,t; 0, Σ_tt), written out here from the file's stored
observed correlators, free part and noise factor. For the EFT models the oracle is ArviZ
itself on the stored arrays (``az.loo`` with ``var_name`` = the model), which must give the
stored number exactly: the report's table is a copy of it.

Size: 4,000 Erf networks at one width, two cutoffs, 2 chains × 200 draws (a few seconds).
The chains are far too short for the diagnostics gate; nothing here reads them as physics.
"""

from __future__ import annotations

import json
import warnings

import arviz as az
import matplotlib
import numpy as np
import pytest
import xarray as xr

import nngp_ppl as nn
from nngp_ppl import _io
from nngp_ppl.inference import DiagnosticsWarning, infer_couplings
from nngp_ppl.inference.compare import model_loo, pointwise_elpd, select_problem, stored_choice
from nngp_ppl.inference.evidence import choose_nested_basis
from nngp_ppl.sampling.stats import HeavyTailWarning

matplotlib.use("Agg")

X = np.array([[-1.0], [0.2], [1.0]])
WIDTH, CUTOFFS = 5, (5.0, 10.0)


@pytest.fixture(scope="module")
def posterior_file(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HeavyTailWarning)
        stats = nn.sample_correlators(nn.ErfNet(d_in=1), X, widths=[WIDTH], n_nets=4000,
                                      orders=(2, 4, 6), seed=0, progress=False)
    with warnings.catch_warnings():
        # A short run on few networks: the gate and the heavy-tail warnings are expected.
        warnings.simplefilter("ignore", DiagnosticsWarning)
        warnings.simplefilter("ignore", HeavyTailWarning)
        dt = infer_couplings(stats, cutoffs=CUTOFFS, num_chains=2, num_samples=200,
                             num_warmup=150, seed=1, predictive_draws=50)
    path = tmp_path_factory.mktemp("arviz") / "posterior.nc"
    _io.write_netcdf(dt, path, file_format=_io.POSTERIOR_FORMAT,
                     version=_io.POSTERIOR_VERSION)
    return xr.open_datatree(path, engine="h5netcdf").load()


def _models(dt):
    return json.loads(dt.attrs["elpd_models"])


def _stored(dt, name, cutoff, model):
    return float(dt["constant_data"][name].sel(width=WIDTH, cutoff=cutoff, model=model))


@pytest.mark.parametrize("cutoff", CUTOFFS)
def test_az_loo_on_the_stored_file_gives_the_stored_elpd_of_every_eft_model(posterior_file,
                                                                            cutoff):
    dt = posterior_file
    one = select_problem(dt, width=WIDTH, cutoff=cutoff)
    eft = [m for m in _models(dt) if m != "gp"]
    assert eft == ["lambda", "lambda+kappa"]
    for model in eft:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pareto k of a short run
            res = az.loo(one, var_name=model)
        assert float(res.elpd) == _stored(dt, "elpd", cutoff, model)
        assert float(res.se) == _stored(dt, "elpd_se", cutoff, model)


def test_the_gp_elpd_is_its_log_density_and_model_loo_gives_it(posterior_file):
    dt = posterior_file
    const = dt["constant_data"].sel(width=WIDTH)
    orders = json.loads(dt.attrs["data_orders"])
    observed = np.concatenate([dt["observed_data"][f"G{n}"].sel(width=WIDTH).values
                               for n in orders])
    resid = observed - const["free_part"].values
    var = np.sum(const["scale_tril"].values ** 2, axis=1)
    ll = -0.5 * resid**2 / var - 0.5 * np.log(2 * np.pi * var)
    for cutoff in CUTOFFS:
        res = model_loo(dt, width=WIDTH, cutoff=cutoff, model="gp")
        assert float(res.elpd) == _stored(dt, "elpd", cutoff, "gp")
        # float32 storage of the pointwise densities: ~1e-7 relative per term.
        assert float(res.elpd) == pytest.approx(ll.sum(), rel=1e-6)
        # ArviZ's standard error: sqrt(n) times the sample sd (ddof = 1) of elpd_i.
        assert float(res.se) == pytest.approx(np.sqrt(ll.size * np.var(ll, ddof=1)), rel=1e-5)
        # No parameter, no effective parameters: p = lpd - elpd is 0 up to the float32
        # sums of ArviZ's lpd (43 terms of size ~5: 1e-4).
        assert float(res.p) == pytest.approx(0.0, abs=1e-4)


def test_az_compare_ranks_the_stored_models_with_the_stored_numbers(posterior_file):
    dt = posterior_file
    cutoff = CUTOFFS[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = az.compare({m: model_loo(dt, width=WIDTH, cutoff=cutoff, model=m)
                            for m in _models(dt)}, round_to="none")
    for model in _models(dt):
        assert float(table.loc[model, "elpd"]) == _stored(dt, "elpd", cutoff, model)
    best = json.loads(dt.attrs["elpd_best"])[f"{WIDTH}/{cutoff:g}"]
    assert table.index[0] == best


def test_the_stored_nested_choice_is_the_rule_on_the_files_own_loo(posterior_file):
    """``elpd_kept`` (what the report and ``nngp-ppl infer`` read instead of running PSIS
    again) is the nested rule on the pointwise ELPD that az.loo gives on the stored file; a
    file without the attribute (written before it existed) gets the same from its draws."""
    dt = posterior_file
    kept = json.loads(dt.attrs["elpd_kept"])
    models = _models(dt)
    older = dt.copy()
    del older.attrs["elpd_kept"]
    for cutoff in CUTOFFS:
        rule = choose_nested_basis(pointwise_elpd(dt, WIDTH, cutoff, models))[0]
        assert kept[f"{WIDTH}/{cutoff:g}"] == rule
        assert stored_choice(dt, WIDTH, cutoff, models) == rule
        assert stored_choice(older, WIDTH, cutoff, models) == rule


def test_the_whole_file_is_not_silently_pooled(posterior_file):
    """Several problems (and models) in one file: az.loo without a selection and a model
    refuses, naming the variables, instead of pooling widths, cutoffs and models."""
    with pytest.raises(TypeError, match="several log likelihood arrays"):
        az.loo(posterior_file)
    with pytest.raises(nn.NNGPInputError, match="cutoff must be one of"):
        select_problem(posterior_file, width=WIDTH, cutoff=7.0)


def test_the_loo_pit_pairs_are_the_posteriors_own_model(posterior_file):
    """log_likelihood/G4, G6 (paired with observed_data and posterior_predictive for the
    LOO-PIT) are the fitted model's density, split by order."""
    dt = posterior_file
    ll = dt["log_likelihood"]
    joined = np.concatenate([ll["G4"].values, ll["G6"].values], axis=-1)
    np.testing.assert_array_equal(joined, ll["lambda"].values)
    assert set(dt["observed_data"].data_vars) == {"G4", "G6"}
    assert {"G4_se", "G6_se"} <= set(dt["constant_data"].data_vars)


@pytest.mark.parametrize("select", ["sel", "select_problem"])
def test_ppc_and_loo_pit_plots_run_with_default_arguments(posterior_file, select):
    dt = posterior_file
    one = (dt.sel(width=WIDTH, cutoff=CUTOFFS[1]) if select == "sel"
           else select_problem(dt, width=WIDTH, cutoff=CUTOFFS[1]))
    pc = az.plot_ppc_dist(one)
    assert pc is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pareto k of a short run
        pc = az.plot_loo_pit(one)
    assert pc is not None
    import matplotlib.pyplot as plt

    plt.close("all")
