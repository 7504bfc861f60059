"""The study with non-zero means that two test modules share (``centred_study`` in
conftest.py): a zero-mean Erf-net ("sym") and the same net with μ_W = 0.8, μ_b = 0.3
("mean"), run once per session. tests/test_centred_study.py reads it as it is;
tests/test_means_only_study.py drops the zero-mean run (:data:`MEANS_ONLY`), which reruns
only the report, since a run's stages do not depend on the runs beside it.
"""

INPUTS = [-1.0, 0.2, 1.0]
MEANS = {"mu_w": 0.8, "mu_b": 0.3}
STUDY = f"""
name = "centred_study"
n_nets = 20000
widths = [5]
fit_cutoffs = [10]
infer_cutoffs = [10]
num_chains = 2
num_samples = 100
num_warmup = 100

[[run]]
key = "sym"
ensemble = "erf"
sigma_b = 1.0
inputs = {INPUTS}

[[run]]
key = "mean"
ensemble = "erf"
sigma_b = 1.0
inputs = {INPUTS}
[run.params]
mu_w = {MEANS["mu_w"]}
mu_b = {MEANS["mu_b"]}
"""

#: The same study without its zero-mean run: the "mean" run alone, under another name.
MEANS_ONLY = STUDY.replace(STUDY[STUDY.index('[[run]]\nkey = "sym"'):
                                 STUDY.index('[[run]]\nkey = "mean"')], "").replace(
    'name = "centred_study"', 'name = "means_only"')
