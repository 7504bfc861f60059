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

import os
from pathlib import Path

# XLA compilation is over half the suite's time, and many tests (and the CLI subprocesses
# they start, which inherit the environment) compile the same programs from fresh closures,
# which jax's in-memory cache, keyed by function object, cannot reuse: its persistent cache,
# keyed by the program and jax's version and flags, can. It must be configured before jax
# is imported. Kept in .pytest_cache (``make clean`` removes it; a run may point
# JAX_COMPILATION_CACHE_DIR elsewhere: a fresh directory gives a cold run's timing).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      str(Path(__file__).resolve().parent.parent / ".pytest_cache" / "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

# The tests check what the programs compute, not how fast XLA's optimised code runs them:
# at backend optimisation level 0 the LLVM passes that dominate compiling NUTS and the
# samplers are skipped (a NUTS test: 25 s -> 13 s; a sampling-heavy pair: 94 s -> 70 s).
# Users' runs keep XLA's default. A run that sets the level itself keeps its own.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()

import gc  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

# A test process holds about a million objects (jax's traces and compiled programs), and the
# cyclic collector's default thresholds (2000, 10, 10) walk them over and over: 3.0 s of a
# 96 s run of three modules went to it, 0.8 s at these thresholds (measured with gc.callbacks;
# the same tests pass, and no memory is at stake: the garbage is freed a little later).
gc.set_threshold(20_000, 20, 20)

# nngp_ppl (and with it jax) is imported by the fixtures that use it, not here: under
# pytest-xdist the controller process loads this file too, runs no test, and would spend
# ~3 s importing jax before it starts the workers.

#: Three inputs keep the exact Erf 6-pt oracle quick.
ERF3 = np.array([[-1.0], [0.2], [1.0]])

#: name -> (ensemble class name, its keywords, inputs, widths, n_nets, seed); orders 2, 4, 6
#: with the covariance.
RUNS = {
    "erf": ("ErfNet", {"d_in": 1}, ERF3, (5, 50), 20_000, 0),
}

#: (module, fixture) pairs that run a whole ``reproduce`` pipeline or NUTS on a fresh run:
#: tests using them are slow. Module "*": a session fixture, whichever module uses it.
PIPELINE_FIXTURES = {("*", "tiny_study"), ("test_estimators", "second_order_posterior"),
                     ("*", "basis_study"), ("*", "centred_study")}

#: Tests that are slow by measurement (the module's own @pytest.mark.slow does the same; this
#: list keeps the marks out of modules that others are editing): those that took 28 s or more
#: in a loaded run of the whole suite, and those of the fast tier that took 1.5 s or more in the
#: --durations run of the whole suite at 354988a (cold compilation cache, two workers, quiet
#: 2-core machine: 105 tests, 330 s of the fast tier's 532 s), so that ``make test-fast`` stays
#: the loop for an edit. Node ids relative to tests/.
SLOW_BY_DURATION = {
    "test_arviz_file.py::test_az_loo_on_the_stored_file_gives_the_stored_elpd_of_every_eft_model[5.0]",
    "test_basis.py::test_full_dimension_six_basis_recovers_its_couplings",
    "test_basis.py::test_odd_design_is_the_diagrams_and_block_diagonal",
    "test_centred_cli.py::test_fit_prints_the_centred_fit_it_writes",
    "test_centred_cli.py::test_sample_takes_the_means_and_fit_goes_centred",
    "test_centred_fit.py::test_centred_three_point_design_is_the_contact_diagram",
    "test_centred_fit.py::test_delta_method_matches_the_explicit_covariance_formula",
    "test_cli.py::test_console_entry_point_reports_errors_without_traceback",
    "test_cli.py::test_flow_writes_beta_and_gamma_of_the_posteriors_own_draws",
    "test_cli.py::test_sample_then_show",
    "test_cli.py::test_the_command_gives_jax_one_cpu_device_per_core_unless_told[env0]",
    "test_cli.py::test_the_command_gives_jax_one_cpu_device_per_core_unless_told[env1]",
    "test_cli.py::test_the_command_gives_jax_one_cpu_device_per_core_unless_told[env2]",
    "test_cli_ensembles.py::test_sample_builds_the_ensemble_and_the_run_file_reads_it_back[argv0-expected0]",
    "test_cli_ensembles.py::test_sample_builds_the_ensemble_and_the_run_file_reads_it_back[argv1-expected1]",
    "test_cli_ensembles.py::test_sample_builds_the_ensemble_and_the_run_file_reads_it_back[argv2-expected2]",
    "test_derivative_operator.py::test_on_a_uniform_lattice_the_error_falls_as_h_squared",
    "test_distributed.py::test_dask_local_cluster_matches_the_local_run",
    "test_distributed.py::test_unreachable_scheduler_and_missing_dask_are_clear_errors",
    "test_eft.py::test_cli_fit_writes_verifies_and_refuses",
    "test_eft.py::test_estimators_recover_couplings_of_synthetic_eft_data",
    "test_eft.py::test_gauss_net_full_kernel_runs_with_exponent_d_in[3]",
    "test_ensembles.py::test_activation_forward_pass_stays_in_the_requested_precision",
    "test_ensembles.py::test_activation_kernel_growth_and_beta_exponent",
    "test_ensembles.py::test_callable_activation_works_in_memory_but_is_refused_on_save",
    "test_ensembles.py::test_jax_network_kernel_and_correlators_match_erf_net",
    "test_ensembles.py::test_kernel_matches_monte_carlo_at_width_two[erf-d1]",
    "test_estimators.py::test_consistent_to_second_order_on_a_second_order_deviation[lk]",
    "test_estimators.py::test_fit_cli_order_two",
    "test_exact.py::test_activation_net_correlators_match_sampled_networks[gelu]",
    "test_exact.py::test_activation_net_correlators_match_sampled_networks[tanh]",
    "test_exact.py::test_activation_net_with_erf_reproduces_price_theorem_correlators[3]",
    "test_exact.py::test_erf_order_eight_correlators_match_sampled_networks",
    "test_exact.py::test_relu_moments_match_direct_gaussian_integrals",
    "test_examples.py::test_08_training_flow",
    "test_faults_input.py::test_the_sigma_bound_is_where_the_sums_stay_finite",
    "test_faults_io.py::test_a_full_disk_is_one_oserror_and_leaves_no_temporary[run]",
    "test_faults_io.py::test_a_full_disk_while_writing_a_fit_is_one_line_on_a_real_tmpfs",
    "test_faults_io.py::test_a_nonfinite_later_batch_names_that_batch[c]",
    "test_faults_io.py::test_ctrl_c_while_the_command_starts_is_one_line",
    "test_faults_io.py::test_the_cli_refuses_nonfinite_outputs_in_one_line",
    "test_faults_io.py::test_the_cli_reports_a_full_disk_in_one_line",
    "test_inference.py::test_beta_is_the_running_of_the_exact_lambda_bar",
    "test_inference.py::test_estimand_is_the_papers_lambda_bar_and_a_fixed_weight_least_squares_fit",
    "test_lattice.py::test_gauss_net_matches_closed_form[bias_subtracted-2]",
    "test_lattice.py::test_gauss_net_matches_closed_form[bias_subtracted-3]",
    "test_lattice.py::test_gauss_net_matches_closed_form[full-1]",
    "test_lattice.py::test_gauss_net_matches_closed_form[full-2]",
    "test_lattice.py::test_gauss_net_matches_closed_form[full-3]",
    "test_lattice.py::test_one_dimension_matches_scipy_quad[bias_subtracted-erf-1.0]",
    "test_lattice.py::test_one_dimension_matches_scipy_quad[bias_subtracted-relu-0.0]",
    "test_lattice.py::test_one_dimension_matches_scipy_quad[full-erf-1.0]",
    "test_lattice.py::test_one_dimension_matches_scipy_quad[full-relu-0.0]",
    "test_mlp.py::test_capabilities_and_warning",
    "test_mlp.py::test_serialisation_and_bad_input",
    "test_mlp.py::test_two_point_corrected_lambda_is_the_connected_one",
    "test_models.py::test_field_divergences_come_from_the_step_size_on_the_sextic_wall",
    "test_models.py::test_field_model_matches_first_order_at_small_couplings",
    "test_models.py::test_field_model_parts_from_first_order_at_large_couplings",
    "test_models.py::test_field_model_without_couplings_reproduces_wick",
    "test_native.py::test_c_and_xla_kernels_sample_the_same_sums",
    "test_native_robust.py::test_a_compiler_that_builds_the_wrong_thing_falls_back_to_xla",
    "test_native_robust.py::test_truncated_cache_is_rebuilt_not_a_sigbus",
    "test_nonzero_mean.py::test_depth_one_mlp_with_non_zero_means_is_the_single_layer_ensemble",
    "test_nonzero_mean.py::test_exact_oracle_matches_sampling_for_odd_and_even_orders[erf]",
    "test_nonzero_mean.py::test_exact_oracle_matches_sampling_for_odd_and_even_orders[gauss]",
    "test_ntk.py::test_erf_derivative_pair_matches_quadrature",
    "test_ntk.py::test_mlp_depth_one_is_the_single_layer_ntk_and_deep_recursion_matches_quadrature",
    "test_ntk.py::test_ntk_is_the_mean_empirical_ntk[erf]",
    "test_odd_correlators.py::test_c_and_xla_kernels_sample_the_same_odd_order_sums",
    "test_odd_correlators.py::test_odd_order_statistics_round_trip_through_files_and_merge",
    "test_odd_correlators.py::test_xla_kernel_odd_orders_against_brute_force[3-orders1]",
    "test_odd_correlators.py::test_xla_kernel_odd_orders_against_brute_force[6-orders0]",
    "test_odd_diagrams.py::test_box_integrals_two_tadpoles_are_the_square_of_the_one_point_function",
    "test_odd_diagrams.py::test_designs_equal_brute_force_with_odd_vertices[full-5-False]",
    "test_odd_diagrams.py::test_designs_equal_brute_force_with_odd_vertices[full-6-False]",
    "test_odd_diagrams.py::test_rule_4_5_with_odd_vertices_equals_a_model_with_exact_covariance[ops1-bias_subtracted]",
    "test_odd_diagrams.py::test_rule_4_5_with_odd_vertices_equals_a_model_with_exact_covariance[ops2-full]",
    "test_properties.py::test_effective_networks_equal_the_brute_force_participation_number",
    "test_properties.py::test_float32_batches_agree_with_float64_within_the_statistical_error[1000-net0-X0]",
    "test_properties.py::test_float32_batches_agree_with_float64_within_the_statistical_error[1000-net1-X1]",
    "test_properties.py::test_float32_batches_agree_with_float64_within_the_statistical_error[3-net0-X0]",
    "test_properties.py::test_float32_batches_agree_with_float64_within_the_statistical_error[3-net2-X2]",
    "test_properties.py::test_heavy_tail_warning_fires_where_naive_errors_fail_and_not_where_they_hold",
    "test_resume.py::test_cli_refuses_to_overwrite_a_checkpoint_without_resume",
    "test_resume.py::test_ledger_folds_in_shard_order_whatever_the_completion_order",
    "test_resume.py::test_resume_refuses_a_different_run_and_damaged_checkpoints",
    "test_resume.py::test_sigkill_mid_run_then_resume_gives_the_identical_file",
    "test_robustness.py::test_a_checkpoint_with_a_damaged_header_prints_one_line_only",
    "test_robustness.py::test_a_closed_pipe_on_stdout_still_writes_the_file",
    "test_robustness_run.py::test_the_memory_estimate_bounds_what_xla_allocates[erf-1-6]",
    "test_robustness_run.py::test_the_memory_estimate_bounds_what_xla_allocates[gauss-3-1]",
    "test_sampling.py::test_heavy_tailed_gauss_net_naive_errors_understate_the_spread",
    "test_sampling.py::test_sums_equal_brute_force_over_the_same_networks",
    "test_second_order.py::test_blocks_of_the_propagator_matrix_give_the_same_integrals",
    "test_second_order.py::test_topology_selection_adds_up",
    "test_stats.py::test_bad_files_raise_one_clear_error",
    "test_symmetry.py::test_declared_symmetry_rejected_by_the_data_warns_loudly",
    "test_symmetry.py::test_statistic_equals_the_hand_computed_wald_form",
    "test_train_cli.py::test_fit_at_step_zero_is_the_fit_of_the_sampled_run",
    "test_train_cli.py::test_show_summarises_every_step",
    "test_train_study.py::test_an_interrupted_train_stage_resumes_to_the_same_bits",
    "test_train_study.py::test_the_report_section_and_figures",
    "test_train_study.py::test_the_stage_matches_the_oracle_at_large_width",
    "test_training.py::test_a_killed_run_resumes_to_the_same_bits",
    "test_training.py::test_diverging_training_is_refused_not_summed[c]",
    "test_training.py::test_diverging_training_is_refused_not_summed[xla]",
    "test_training.py::test_odd_orders_record_the_learned_one_point_function",
    "test_training.py::test_one_gradient_step_by_hand",
    "test_training.py::test_optax_sgd_is_plain_gradient_descent_and_momentum_adam_lower_the_loss",
    "test_training.py::test_parametrisations_agree_at_step_zero_and_differ_after",
    "test_training.py::test_step_zero_is_the_sampler_bit_for_bit[c]",
    "test_training.py::test_step_zero_is_the_sampler_bit_for_bit[xla]",
    "test_training.py::test_training_forward_pass_is_the_samplers_network[erf]",
    "test_training.py::test_two_devices_give_the_one_device_bits",
    "test_training_flow.py::test_centred_test_ignores_a_mean_that_the_raw_test_sees",
    "test_training_flow.py::test_connected_blocks_equal_the_centred_deviations_of_the_centred_theory",
    "test_training_flow.py::test_exact_gaussian_trained_ensemble_matches_mu_t",
    "test_training_flow.py::test_sigma_t_is_traced_and_differentiable_at_any_point",
    "test_training_flow.py::test_symmetry_holds_at_step_zero_and_breaks_with_training",
    "test_training_flow.py::test_training_flow_dataset",
    "test_two_point.py::test_kernel_error_propagation_matches_the_spread_over_kernel_seeds",
    "test_two_point.py::test_kernel_error_widens_the_fit_and_vanishes_with_many_networks",
    "test_two_point.py::test_posterior_carries_the_kernel_error",
    "test_user_path.py::test_ensemble_module_in_the_working_directory",
    "test_user_path.py::test_gate_false_alarms_on_well_mixed_chains",
    "test_user_path.py::test_show_without_an_exact_oracle_degrades",
}

#: Session fixtures whose users form one xdist group each (so each is built once).
SHARED_SESSION_FIXTURES = ("tiny_study", "basis_study", "centred_study")

#: The schedule's weight of a slow test, in fast tests (measured: a slow test takes about
#: 20 times the average fast one).
SLOW_WEIGHT = 20


@pytest.fixture(scope="session")
def sampled_runs(tmp_path_factory):
    """``sampled_runs(name) -> (CorrelatorStats, path of its run file)``, sampled once."""
    done = {}

    def get(name: str):
        if name not in done:
            import nngp_ppl as nn

            cls, kwargs, X, widths, n_nets, seed = RUNS[name]
            stats = nn.sample_correlators(getattr(nn, cls)(**kwargs), X, list(widths), n_nets,
                                          orders=(2, 4, 6), seed=seed, progress=False)
            path = tmp_path_factory.mktemp(f"run_{name}") / f"{name}.nc"
            stats.to_netcdf(path)
            done[name] = (stats, path)
        return done[name]

    return get


@pytest.fixture(scope="session")
def erf_run(sampled_runs):
    """20 000 Erf-nets (d_in = 1) at N = 5 and 50 on ERF3, seed 0, with the covariance."""
    return sampled_runs("erf")


def _study_once(tmp_path_factory, preset, name: str, quiet: bool = False):
    """``(preset, out, result)``: ``preset`` run by ``reproduce`` into a fresh directory
    that no test may change (tests copy it first); ``quiet`` silences its warnings."""
    import warnings

    from nngp_ppl.study.stages import reproduce

    out = tmp_path_factory.mktemp(name)
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore")
        result = reproduce(preset, out, progress=False, log=lambda _line: None)
    return preset, out, result


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory):
    """The tiny multi-run study of tests/tiny_study.py, run once per session
    (:func:`_study_once`)."""
    from tiny_study import TINY

    return _study_once(tmp_path_factory, TINY, "tiny_study")


@pytest.fixture(scope="session")
def centred_study(tmp_path_factory):
    """The study with non-zero means of tests/centred_study.py, run once per session
    (:func:`_study_once`)."""
    from centred_study import STUDY

    from nngp_ppl.study.spec import study_from_text

    return _study_once(tmp_path_factory, study_from_text(STUDY), "centred_study")


def assert_same_trained_bits(first, second, width: int) -> None:
    """Two trained runs agree bit for bit at every recorded step: the per-step reference
    the recorder shifts by, and every shifted moment sum at ``width``."""
    for s in first.steps:
        a, b = first.at_step(s), second.at_step(s)
        assert np.array_equal(a.shift(width), b.shift(width)), s
        assert all(np.array_equal(a.shifted_moment_sums(width)[m],
                                  b.shifted_moment_sums(width)[m])
                   for m in a.accumulated_orders), s


def kill_training_at_shard(monkeypatch, shard: int, run) -> None:
    """``run()`` (a training run or stage) interrupted by a KeyboardInterrupt as its
    ``shard``-th shard hands over its sums, as a kill would; the trainer is whole again
    afterwards, so the test can resume the run."""
    from nngp_ppl.training.trainer import _TrainShard

    real, calls = _TrainShard.result, []

    def dying(self):
        calls.append(1)
        if len(calls) == shard:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(_TrainShard, "result", dying)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(_TrainShard, "result", real)


@pytest.fixture
def two_cpu_devices_env():
    """The environment of a child process with two forced CPU devices. It keeps the suite's
    XLA flags (the backend optimisation level above): the tests compare the child's bits
    with this process's, so both must compile the same way."""
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    return {**os.environ, "XLA_FLAGS": flags.strip(), "JAX_PLATFORMS": "cpu"}


def _group(item, slow: bool) -> str | None:
    """The pytest-xdist group of a test under ``--dist loadgroup`` (``make test``): a
    group runs on one worker, so a fixture wider than a test is built once. The users of
    ``tiny_study`` form one group; a module's tests form one, except a slow test that shares
    no module- or class-scoped fixture, which goes alone (None) to whichever worker is free,
    so that no long module keeps one worker busy after the other has finished."""
    module = item.module.__name__.rsplit(".", 1)[-1]
    scopes = {name: defs[-1].scope
              for name, defs in item._fixtureinfo.name2fixturedefs.items() if defs}
    for shared in SHARED_SESSION_FIXTURES:
        if shared in scopes:
            return shared
    if not slow or any(s in ("module", "class", "package") for s in scopes.values()):
        return module
    return None


def _schedule(items, by_duration) -> None:
    """Groups for xdist, and the most expensive groups first (longest processing time
    first: the schedule that ends both workers nearest together). xdist hands the groups out
    in collection order (``--no-loadscope-reorder``), so the order is set here; every worker
    computes the same one."""
    cost, key = {}, {}
    for item in items:
        slow = item.get_closest_marker("slow") is not None
        # Slow by measurement only (SLOW_BY_DURATION): kept with its module, whose compiled
        # programs it mostly shares (whole suite, quiet machine: 13 min 49 s with the 105
        # such tests split off alone, 12 min 53 s kept with their modules).
        group = _group(item, slow and item not in by_duration)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
        key[item] = group or item.nodeid
        cost[key[item]] = cost.get(key[item], 0) + (SLOW_WEIGHT if slow else 1)
    first = {}
    for i, item in enumerate(items):
        first.setdefault(key[item], i)
    items.sort(key=lambda it: (-cost[key[it]], first[key[it]]))


@pytest.hookimpl(tryfirst=True)  # before xdist turns the groups into node ids
def pytest_collection_modifyitems(config, items):
    by_duration = set()
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1]
        names = getattr(item, "fixturenames", ())
        if any((module, f) in PIPELINE_FIXTURES or ("*", f) in PIPELINE_FIXTURES
               for f in names):
            item.add_marker(pytest.mark.slow)
        if item.nodeid.removeprefix("tests/") in SLOW_BY_DURATION:
            item.add_marker(pytest.mark.slow)
            by_duration.add(item)
    # On an xdist worker, where the collection that counts happens, xdist has set
    # option.dist to "no" and left option.loadgroup to say whether --dist loadgroup is on.
    if getattr(config.option, "loadgroup", False):
        _schedule(items, by_duration)


@pytest.hookimpl(optionalhook=True)  # an xdist hook: pytest -p no:xdist must still run
def pytest_xdist_node_collection_finished(node, ids):
    """Stop a ``--dist loadgroup`` run whose groups xdist did not apply (every test gets one
    here but the slow ones that go alone): such a run works, but builds each shared fixture
    once per worker, as pytest 9.2 with pytest-xdist 3.8 did (pytest-xdist issue 1386),
    which costs minutes. Runs on the controller, with the test ids a worker collected."""
    if node.config.getoption("dist") == "loadgroup" and ids and not any("@" in i for i in ids):
        pytest.exit(f"pytest-xdist did not group the {len(ids)} tests: this pytest "
                    f"({pytest.__version__}) and pytest-xdist do not work together under "
                    "--dist loadgroup; install the versions pyproject.toml's test extra allows",
                    returncode=4)


#: The study of tests/test_basis_report.py's pipeline test, sized for the posterior that
#: tests/test_basis_evidence.py reads as physics: 20 000 symmetric Erf-nets (σ_b = 1, zero
#: means) at N = 5 on ERF3, every operator up to dimension 4 (g3, lambda), 2 chains × 300
#: NUTS draws after 200 warm-up steps.
BASIS_STUDY = """
name = "basis_tiny"
n_nets = 20000
widths = [5]
fit_cutoffs = [10]
infer_cutoffs = [10]
num_chains = 2
num_samples = 300
num_warmup = 200

[infer]
max_dimension = 4

[[run]]
key = "sym"
ensemble = "erf"
sigma_b = 1.0
inputs = [-1.0, 0.2, 1.0]
"""


@pytest.fixture(scope="session")
def basis_study(tmp_path_factory):
    """BASIS_STUDY run once per session (:func:`_study_once`)."""
    from nngp_ppl.study.spec import study_from_text

    return _study_once(tmp_path_factory, study_from_text(BASIS_STUDY), "basis_study",
                       quiet=True)


@pytest.fixture(scope="session")
def symmetric_erf_posterior(basis_study):
    """``(run path, posterior)`` of the basis study's run: one posterior (one NUTS run)
    serves tests/test_basis_evidence.py,
    tests/test_basis_report.py and tests/test_basis.py's CLI test, which built one each."""
    import xarray as xr

    from nngp_ppl.study.spec import run_file

    out = basis_study[1]
    return out / run_file("sym"), xr.open_datatree(out / "posterior_sym.nc",
                                                  engine="h5netcdf").load()
