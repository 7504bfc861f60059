"""Shared fixtures and the slow tier.

Session-scoped sampled runs: one per ensemble recipe, sampled once per test session and
written to a file, for every module that only needs *a* run of that ensemble (same
arguments as the module-level fixtures they replace, so the modules' fixed-seed
tolerances are unchanged).

The slow tier (``@pytest.mark.slow``; ``make test-fast`` leaves it out, ``make test``
runs it): tests of more than ~20 s on a quiet 2-core machine, and every test that needs one
of the full pipelines in :data:`PIPELINE_FIXTURES` (each runs ``reproduce`` end to end).
"""

from __future__ import annotations

import numpy as np
import pytest

import nngp_ppl as nn

#: Three inputs keep the exact Erf 6-pt oracle quick.
ERF3 = np.array([[-1.0], [0.2], [1.0]])

#: name -> (ensemble, inputs, widths, n_nets, seed); orders 2, 4, 6 with the covariance.
RUNS = {
    "erf": (lambda: nn.ErfNet(d_in=1), ERF3, (5, 50), 20_000, 0),
}

#: (module, fixture) pairs that run a whole ``reproduce`` pipeline: tests using them are slow.
PIPELINE_FIXTURES = {("test_reproduce", "study"), ("test_report_no_oracle", "study"),
                     ("test_second_order_study", "study"),
                     ("test_estimators", "second_order_posterior")}


@pytest.fixture(scope="session")
def sampled_runs(tmp_path_factory):
    """``sampled_runs(name) -> (CorrelatorStats, path of its run file)``, sampled once."""
    done = {}

    def get(name: str):
        if name not in done:
            make, X, widths, n_nets, seed = RUNS[name]
            stats = nn.sample_correlators(make(), X, list(widths), n_nets, orders=(2, 4, 6),
                                          seed=seed, progress=False)
            path = tmp_path_factory.mktemp(f"run_{name}") / f"{name}.nc"
            stats.to_netcdf(path)
            done[name] = (stats, path)
        return done[name]

    return get


@pytest.fixture(scope="session")
def erf_run(sampled_runs):
    """20 000 Erf-nets (d_in = 1) at N = 5 and 50 on ERF3, seed 0, with the covariance."""
    return sampled_runs("erf")


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1]
        if any((module, f) in PIPELINE_FIXTURES for f in getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
