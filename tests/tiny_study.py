"""The tiny multi-run study that the pipeline tests share (``tiny_study`` in conftest.py).

One ``reproduce`` run, sized to exercise every stage and the report, serves three test
modules instead of a pipeline each:

* ``relu`` -- ReLU-net with σ_b = 0 on the authors' (positive) inputs, widths 2 and 20,
  posteriors at N = 20 (tests/test_reproduce.py: stages, resume, the degenerate net whose
  λ runs exactly as Λ^-5 and whose connected 4-pt function falls exactly as 1/N);
* ``mlp`` -- a two-hidden-layer erf MLP without an exact oracle, on its own inputs,
  widths 4 and 16, a posterior at N = 4 only (tests/test_report_no_oracle.py; the 2 × 50
  draws of N = 16 did not mix, R-hat 2.2, and cost about 10 s of the study's ~90 s);
* ``erf`` -- Erf-net with σ_b = 1 at second order, width 5 (tests/test_second_order_study.py).

So the report mixes runs with and without an exact oracle, on the authors' inputs and on a
study's own. 2,000 networks per width in parts of 1,000; three fit cutoffs, two posterior
cutoffs; 2 chains × 50 NUTS draws after 50 warm-up steps: far too short for the
diagnostics gate, and no test reads these posteriors as physics. Compilation, not the draws, is
most of a posterior stage here (2 × 50 + 50 against 2 × 100 + 100: 107 against 112 CPU s
for the whole study); 25 + 25 leaves PSIS too few distinct draws.
"""

from __future__ import annotations

from nngp_ppl.study.spec import study_from_text

#: The MLP run's settings, which test_report_no_oracle's independent GP recomputes.
MLP_SIGMA_W, MLP_SIGMA_B, MLP_DEPTH = 1.0, 0.5, 2
MLP_INPUTS = [-1.0, -0.3, 0.4, 1.0]

TEXT = f"""
name = "tiny"
n_nets = 2000
chunk = 1000
widths = [2, 20]
fit_cutoffs = [10, 100, 1000]
infer_cutoffs = [10, 1000]
six_point_cutoff = 10.0
num_chains = 2
num_samples = 50
num_warmup = 50

[[run]]
key = "relu"
ensemble = "relu"
title = "ReLU-net"
sigma_b = 0.0
infer_widths = [20]

[[run]]
key = "mlp"
ensemble = "mlp"
sigma_b = {MLP_SIGMA_B}
inputs = {MLP_INPUTS}
widths = [4, 16]
infer_widths = [4]

[run.params]
depth = {MLP_DEPTH}
activation = "erf"
sigma_w = {MLP_SIGMA_W}

[[run]]
key = "erf"
ensemble = "erf"
title = "Erf-net"
sigma_b = 1.0
widths = [5]
order = 2
"""

TINY = study_from_text(TEXT)
