"""``nngp-ppl sample --ensemble``: built-in names, MLPs, import paths and factories; every
later stage reads the ensemble back from the run file."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import nngp_ppl
from nngp_ppl import CorrelatorStats
from nngp_ppl.cli.main import main


def init(key, width):
    """A single-layer erf network of the paper's parametrisation (σ_W = σ_b = 1, d_in = 1)."""
    k = jax.random.split(key, 4)
    return {"w": jax.random.normal(k[0], (width, 1)), "b": jax.random.normal(k[1], (width,)),
            "a": jax.random.normal(k[2], (width,)) / jnp.sqrt(width),
            "c": jax.random.normal(k[3], ())}


def apply(params, X):
    return params["a"] @ jax.lax.erf(params["w"] @ X.T + params["b"][:, None]) + params["c"]


def factory(d_in=1):
    """What a user passes as --ensemble test_cli_ensembles:factory."""
    return nngp_ppl.JaxNetwork(f"{__name__}:init", f"{__name__}:apply", d_in=d_in,
                               name="cli_erf", kernel=nngp_ppl.ErfNet(d_in=d_in),
                               sigma_b=1.0, two_point_exact=True)


def closure_factory(d_in=1):
    return nngp_ppl.JaxNetwork(lambda k, w: init(k, w), apply, d_in=d_in, name="closure")


def _sample(tmp_path, *argv):
    out = tmp_path / "run.nc"
    code = main(["sample", *argv, "--inputs", "0.2,0.7,1.0", "--widths", "3",
                 "--n-nets", "64", "--no-progress", "-o", str(out)])
    return code, out


@pytest.mark.parametrize(("argv", "expected"), [
    (["--ensemble", "mlp", "--depth", "2", "--activation", "tanh"],
     nngp_ppl.MLP(2, "tanh", d_in=1)),
    (["--ensemble", "tanh", "--sigma-w", "1.5"], nngp_ppl.ActivationNet("tanh", sigma_w=1.5)),
    (["--ensemble", f"{__name__}:factory"], factory(1)),
])
def test_sample_builds_the_ensemble_and_the_run_file_reads_it_back(tmp_path, capsys, argv,
                                                                   expected):
    code, out = _sample(tmp_path, *argv)
    assert code == 0
    net = CorrelatorStats.from_netcdf(out).net
    assert type(net) is type(expected) and net == expected
    assert net.describe() in capsys.readouterr().out
    assert main(["show", str(out), "--no-exact"]) == 0
    assert net.describe() in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "words"), [
    (["--ensemble", "erf", "--depth", "2"], "--ensemble erf: "),
    (["--ensemble", "mlp", "--activation", "swish"], "--activation must be one of"),
    (["--ensemble", "mlp", "--depth", "0"], "--depth must be an integer >= 1"),
    (["--ensemble", "no_such_module_q:f"], "cannot be imported"),
    (["--ensemble", f"{__name__}:closure_factory"], "--ensemble: JaxNetwork 'closure' cannot "
                                                     "be saved"),
])
def test_bad_ensembles_are_refused_before_sampling(tmp_path, capsys, argv, words):
    code, out = _sample(tmp_path, *argv)
    err = capsys.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err, err
    assert not out.exists()
