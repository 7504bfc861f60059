r"""Trained ensembles: every network of the sampler, trained on a data set, watched at steps.

Network j at width N is drawn with the sampler's key :func:`nngp_ppl.ensembles.core.network_keys`
``(seed, N, j)`` and the same draw as :meth:`nngp_ppl.ensembles.core.SingleLayerNet.network_outputs`
(one vector of standard normals split into w, β, a, b_1), so the networks at step 0 are
exactly the sampler's. Step 0 is recorded through the sampler's own compiled programs (its
forward pass, and its XLA accumulation step where that kernel runs), so its correlators are
the sampler's bit for bit; the training's forward pass (a different XLA program) agrees with
it to an ulp of float32 (``tests/test_training.py``).
Each network is then trained, independently of the others, on the user's data
:math:`(X_i, Y_i)_{i=1..n}` by full-batch minimisation of the mean squared error

.. math:: L(\theta) = \frac{1}{2n} \sum_{i=1}^{n} \big(f_\theta(X_i) - Y_i\big)^2,

by default with plain gradient descent :math:`\theta_{t+1} = \theta_t - \eta\,\nabla L`
(``optimizer="gd"``, no dependency); ``"sgd"``, ``"momentum"`` and ``"adam"`` use optax
(the ``train`` extra), still on the full batch. Two parametrisations
(:mod:`nngp_ppl.theory.ntk` has the formulas): ``"ntk"`` trains the standard normals
:math:`\omega, \eta` with the scales :math:`\sigma/\sqrt{\text{fan-in}}` in the forward
pass, ``"standard"`` trains :math:`w, \beta, a, b_1` themselves. At infinite width and in
the NTK parametrisation, GD training gives the Gaussian process of
:func:`nngp_ppl.theory.ntk.training_oracle`.

At the recorded ``steps`` the trained networks are evaluated at the test inputs and their
outputs go into the sampler's own accumulation (the C kernel of :mod:`nngp_ppl.sampling._native` on
CPU devices, the XLA kernel :func:`nngp_ppl.sampling._shard.monomial_sums` elsewhere), one
:class:`~nngp_ppl.sampling.checkpoint.ShardLedger` per step over the sampler's shard plan
(:func:`nngp_ppl.sampling.sampler.plan_run`), so each step's statistics are a
:class:`~nngp_ppl.CorrelatorStats` with everything the sampler gives (orders, covariance,
tails), added in shard order: the same bits whatever the device count, on Dask workers
(``dask=``, one task per shard as in :mod:`nngp_ppl.distributed`) and however often a
checkpointed run was resumed. The accumulation kernel's identity
(:func:`nngp_ppl._native.identity`) is recorded in each step's ledger and checkpoint, and a
resume, a device list or a Dask worker that would sum with another kernel is refused (two
kernels round differently). Networks are trained in batches, vmapped, ``batch`` at a time;
memory does not grow with ``n_nets``.

Trained outputs have a spread far below their mean, and float32 products of them would
cancel the digits the centred statistics need; so every step but 0 sums the products of the
outputs shifted by a reference :math:`r_t(x)` (:func:`reference_outputs`: the float32 mean
of a 64-network pilot block), stored beside the sums (the statistics' ``shift``; the file's
``reference``; the checkpoint's ``reference.json``). docs/training_flow.md, "Float32
rounding of the stored sums", has the measured effect.

Speed (``benchmarks/training.py``): the training step is bound by the activation and its
derivative at the batch's (batch, N, n) neuron-points, not by its matrix products, and XLA
already vectorises one network's N n points; docs/training.md has the measured ratios.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import uuid
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from .. import _checks
from .._checks import NNGPInputError
from .._io import (
    atomic_path,
    format_version,
    output_file,
    read_netcdf,
    version_error,
    write_netcdf,
)
from .._version import require_x64
from ..ensembles.core import Ensemble, SingleLayerNet, network_keys
from ..sampling import _native
from ..sampling._shard import (
    StepPlan,
    chunk_size,
    monomial_sums,
    refuse_nonfinite,
    xla_shard_sums,
    zero_totals,
)
from ..sampling._shard import compiled_outputs as _sampler_outputs
from ..sampling._shard import compiled_step as _sampler_step
from ..sampling.checkpoint import (
    RunPlan,
    ShardLedger,
    ShardSums,
    kernel_key,
    remove_stale_temporaries,
)
from ..sampling.distributed import DaskExecutor, collect, dask_client, worker_kernel
from ..sampling.sampler import (
    LocalExecutor,
    check_flag,
    check_widths,
    local_devices,
    plan_run,
    run_round_robin,
)
from ..sampling.stats import CorrelatorStats
from ..theory.ntk import check_parametrisation, check_steps

__all__ = [
    "check_trainable",
    "OPTIMIZERS",
    "TRAINED_FORMAT",
    "TRAINED_VERSION",
    "REFERENCE_NETWORKS",
    "reference_outputs",
    "TRAIN_BATCH_BYTES",
    "CPU_COMPILER_OPTIONS",
    "TrainingSetup",
    "training_setup",
    "draw_parameters",
    "forward",
    "compiled_outputs",
    "default_train_batch",
    "train_correlators",
    "TrainedCorrelators",
    "trained_outputs",
]

OPTIMIZERS = ("gd", "sgd", "momentum", "adam")

#: ``nngp_ppl_format`` of a trained-correlators file.
TRAINED_FORMAT = "nngp_ppl.trained_correlators"
#: Its layout version. 2: the sums are of the outputs shifted by the ``reference`` variable
#: (:func:`reference_outputs`); version-1 files (unshifted sums) are read with reference 0.
TRAINED_VERSION = 2

#: Networks of the pilot block whose mean output is the reference of the shifted sums
#: (:func:`reference_outputs`): its error, spread/8, keeps the shifted outputs of the size
#: of their spread, and training 64 more networks costs a few per cent of a run's thousands.
REFERENCE_NETWORKS = 64

#: Bytes of training working memory a default batch aims at: a batch whose (batch, N, n)
#: activations stay near the core's cache. Measured (2-core AVX-512 CPU, width 100, 16
#: points, 6 test inputs): 2.52 / 2.64 / 2.84 us per network-step at 192 / 384 / 808
#: networks per batch; 12 MiB gives 304 there (384 once rounded to accumulation chunks).
TRAIN_BATCH_BYTES = 12 * 2**20


@dataclass(frozen=True)
class TrainingSetup:
    """What every network is trained on and how (hashable: it keys the compiled steps).

    ``x_train``/``y_train`` as nested tuples (exact comparison and serialisation);
    ``steps``: the sorted recorded steps (0 = the untrained networks).
    """

    x_train: tuple
    y_train: tuple
    steps: tuple[int, ...]
    learning_rate: float
    optimizer: str = "gd"
    parametrisation: str = "ntk"
    momentum: float = 0.9

    @property
    def compiled(self) -> TrainingSetup:
        """This setup without the recorded steps, which no compiled program depends on: the
        key of the compiled-program caches (another list of steps compiles nothing new)."""
        return dataclasses.replace(self, steps=())

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    def describe(self) -> dict:
        return {"x_train": [list(p) for p in self.x_train], "y_train": list(self.y_train),
                "steps": list(self.steps), "learning_rate": self.learning_rate,
                "optimizer": self.optimizer, "parametrisation": self.parametrisation,
                "momentum": self.momentum,
                "loss": "L = 1/(2 n) sum_i (f(x_i) - y_i)^2, full batch"}


def training_setup(net, x_train, y_train, steps, learning_rate, *, optimizer="gd",
                   parametrisation="ntk", momentum=0.9) -> TrainingSetup:
    """Validate the training arguments (each refused with a message naming it)."""
    x = _checks.inputs("x_train", x_train, net.d_in)
    y = np.asarray(y_train, dtype=np.float64)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != len(x):
        raise NNGPInputError(
            f"y_train must hold one target per x_train row ({len(x)}), got shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise NNGPInputError("y_train must be finite numbers (found NaN or inf)")

    steps = check_steps(steps)
    lr = _checks.finite_float("learning_rate", learning_rate, minimum=0.0)
    if optimizer not in OPTIMIZERS:
        raise NNGPInputError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
    parametrisation = check_parametrisation(parametrisation)
    momentum = _checks.finite_float("momentum", momentum, minimum=0.0)
    return TrainingSetup(tuple(tuple(float(v) for v in p) for p in x),
                         tuple(float(v) for v in y), steps, lr, optimizer, parametrisation,
                         momentum)


def check_trainable(net) -> SingleLayerNet:
    """``net`` if training can draw its networks as the sampler does (a single-layer
    ensemble with the standard draw), else a message naming it."""
    return _trainable(net)


def _trainable(net) -> SingleLayerNet:
    if not isinstance(net, Ensemble):
        raise NNGPInputError(f"net must be an nngp_ppl ensemble, got {type(net).__name__}")
    if (not isinstance(net, SingleLayerNet)
            or type(net).network_outputs is not SingleLayerNet.network_outputs):
        raise NNGPInputError(
            f"training draws networks as the single-layer ensembles do (ErfNet, ReLUNet, "
            f"GaussNet, ActivationNet); {type(net).__name__} draws its own way")
    return net


# ---------------------------------------------------------------------------------------------
# one network: draw, forward pass, loss
# ---------------------------------------------------------------------------------------------
def _scales(net, width: int):
    """(means, scales) of (w, β, a, b_1) as Python floats (weakly typed: the batch stays in
    its dtype; see SingleLayerNet.network_outputs)."""
    return ((float(net.mu_w), float(net.mu_b), float(net.mu_w), float(net.mu_b)),
            (float(net.sigma_w / np.sqrt(net.d_in)), float(net.sigma_b),
             float(net.sigma_w / np.sqrt(width)), float(net.sigma_b)))


def draw_parameters(net, key, width: int, parametrisation: str, dtype=jnp.float32):
    """The trained parameters (w, β, a, b_1) of the network of ``key`` at initialisation:
    the sampler's draw, as standard normals (``"ntk"``) or scaled (``"standard"``)."""
    d = net.d_in
    eps = jax.random.normal(key, (width * (d + 2) + 1,), dtype)
    rest = eps[width * d:]
    raw = (eps[: width * d].reshape(width, d), rest[:width], rest[width:2 * width],
           rest[2 * width])
    if parametrisation == "ntk":
        return raw
    mus, scales = _scales(net, width)
    return tuple(m + s * p for m, s, p in zip(mus, scales, raw, strict=True))


def forward(net, params, X, width: int, parametrisation: str):
    """f(X) (n,) of one network; ``X`` in the batch dtype."""
    if parametrisation == "ntk":
        mus, scales = _scales(net, width)
        params = tuple(m + s * p for m, s, p in zip(mus, scales, params, strict=True))
    w0, b0, a, b1 = params
    var = net.preactivation_var(X).astype(X.dtype)
    z = w0 @ X.T + b0[:, None]
    return a @ net._activate(z, var[None, :]) + b1


def _loss(net, width, setup: TrainingSetup, params, x, y):
    r = forward(net, params, x, width, setup.parametrisation) - y
    return 0.5 * jnp.mean(r * r)


def _optimizer(setup: TrainingSetup):
    """(init, update) of the optimiser on one network's parameters."""
    lr = setup.learning_rate
    if setup.optimizer == "gd":
        return (lambda p: ()), (lambda g, s, p: (jax.tree.map(lambda v: -lr * v, g), s))
    try:
        import optax
    except ImportError:
        raise NNGPInputError(
            f"optimizer={setup.optimizer!r} needs optax (pip install 'nngp_ppl[train]'); "
            "optimizer='gd' needs nothing") from None
    tx = {"sgd": lambda: optax.sgd(lr),
          "momentum": lambda: optax.sgd(lr, momentum=setup.momentum),
          "adam": lambda: optax.adam(lr)}[setup.optimizer]()
    return tx.init, tx.update


# ---------------------------------------------------------------------------------------------
# compiled batch programs
# ---------------------------------------------------------------------------------------------
@lru_cache(maxsize=16)
def _compiled_init(net, width: int, batch: int, setup: TrainingSetup):
    """``(seed, start) -> (params, optimiser state)`` of networks start..start+batch-1."""
    init_state = _optimizer(setup)[0]

    def init(seed, start):
        keys = network_keys(seed, width, start, batch)
        params = jax.vmap(lambda k: draw_parameters(net, k, width, setup.parametrisation))(keys)
        return params, init_state(params)

    return jax.jit(init)


@lru_cache(maxsize=16)
def compiled_outputs(net, width: int, batch: int, parametrisation: str):
    """``(params, X, n_valid) -> (batch, k)`` float32 outputs, rows past n_valid zero."""

    def outputs(params, X, n_valid):
        X = jnp.asarray(X, jnp.float32)
        f = jax.vmap(lambda p: forward(net, p, X, width, parametrisation))(params)
        return jnp.where((jnp.arange(batch) < n_valid)[:, None], f, 0.0)

    return jax.jit(outputs)


@lru_cache(maxsize=16)
def _compiled_train(net, width: int, batch: int, setup: TrainingSetup, platform: str = "cpu"):
    """``(params, state, n_steps) -> (params, state)`` after ``n_steps`` optimiser steps,
    compiled for devices of ``platform``.

    The optimisers are elementwise (GD, optax's sgd, momentum, adam), so they update the
    whole batch's parameters at once, as if per network.
    """
    x = jnp.asarray(np.asarray(setup.x_train), jnp.float32)
    y = jnp.asarray(np.asarray(setup.y_train), jnp.float32)
    update = _optimizer(setup)[1]
    # Per-network gradients, vmapped: XLA makes them one erf pass, one pass computing
    # erf' and the back-propagated error, and four batched products. (Measured, 2-core
    # CPU, width 100, 16 points, XLA's default vectors: 2.85 us per network-step against
    # 4.0 us for the same gradients written out as batched einsums over (batch, N, n) and
    # 5.1 us in the (batch, n, N) layout; the erf + erf' evaluation alone costs 2.3 us, so
    # the step is within 1.25x of its transcendental floor; batch sizes: TRAIN_BATCH_BYTES.)
    grads = jax.vmap(jax.grad(lambda p: _loss(net, width, setup, p, x, y)))

    def one_step(_, carry):
        p, s = carry
        g = grads(p)
        u, s = update(g, s, p)
        return jax.tree.map(jnp.add, p, u), s

    def train(params, state, n_steps):
        return jax.lax.fori_loop(0, n_steps, one_step, (params, state))

    # The old parameters are dead once trained on: donated, they are updated in place.
    return _jit(train, platform, donate_argnums=(0, 1))


#: XLA options of the training programs on CPU devices: 512-bit vectors where the host has
#: them (XLA:CPU prefers 256 by default). The step is bound by the activation and its
#: derivative over (batch, N, n), and measured on the 2-core AVX-512 host the option took
#: the erf + erf' evaluation from 2.31 to 1.66 ns per neuron-point and the whole training
#: step from 3.05 to 2.56 us per network-step (width 100, 16 points; benchmarks/training.py).
#: The step runs thousands of times per network, so it is compiled at XLA's full backend
#: optimisation whatever ``XLA_FLAGS`` says: a setting that lowers the level for quick
#: compiles (the test suite's) would make the loop ~4x slower (measured on a scanned
#: tanh-matmul loop: 0.53 s at level 3, 2.24 s at level 0).
CPU_COMPILER_OPTIONS = {"xla_cpu_prefer_vector_width": 512, "xla_backend_optimization_level": 3}


def _jit(fn, platform: str, **kwargs):
    """``jax.jit`` with :data:`CPU_COMPILER_OPTIONS` on CPU devices (JAX >= 0.4.36 takes
    ``compiler_options``; older JAX compiles with XLA's defaults)."""
    if platform == "cpu":
        try:
            return jax.jit(fn, compiler_options=CPU_COMPILER_OPTIONS, **kwargs)
        except TypeError:
            pass
    return jax.jit(fn, **kwargs)


def shifted(f, reference):
    """The float32 outputs ``f`` (n, k) minus the float32-valued ``reference`` (k,), rounded
    to float32: the difference is exact in float64 and exact in float32 too wherever the two
    lie within a factor 2 (Sterbenz), otherwise rounded once, relative to the difference."""
    return (np.asarray(f, np.float64) - reference).astype(np.float32)


@lru_cache(maxsize=16)
def _compiled_add(plan: StepPlan, batch: int, chunk: int):
    """XLA accumulation of a batch of outputs shifted by the step's reference (rows past
    ``n_valid`` zero), as the sampler's step does after its forward pass
    (:func:`nngp_ppl.sampling._shard.compiled_step`); :func:`shifted` in XLA."""

    def add(totals, f, reference, n_valid):
        g = (f.astype(jnp.float64) - reference).astype(jnp.float32).astype(jnp.float64)
        g = jnp.where((jnp.arange(batch) < n_valid)[:, None], g, 0.0)
        chunks = g.reshape(batch // chunk, chunk, plan.k).transpose(0, 2, 1)

        def add_chunk(carry, F):
            return jax.tree.map(jnp.add, carry, monomial_sums(F, plan)), None

        return jax.lax.scan(add_chunk, totals, chunks)[0]

    return jax.jit(add)


class _Sums:
    """One step's running sums over one shard: the sampler's C kernel on a CPU device,
    else its XLA kernel (:func:`nngp_ppl.sampling._shard.shard_job` chooses the same way)."""

    def __init__(self, net, width: int, plan: StepPlan, batch: int, device, step: int,
                 reference):
        self._net, self._width, self._stepno = net, width, step
        self._reference = np.asarray(reference, np.float64)
        platform = getattr(device, "platform", "cpu")
        lib = _native.library() if platform == "cpu" else None
        self._plan = plan
        chunk = min(chunk_size(plan.k, plan.max_order), batch)
        if lib is not None:
            self._host = _native.HostSums(lib, plan.k, plan.orders, plan.split,
                                          plan.covariance)
            self._outputs = _sampler_outputs(net, width, batch)
        else:
            self._host = None
            self._add = _compiled_add(plan, batch, chunk)
            self._step = _sampler_step(net, width, batch, chunk, plan)
            self._totals = jax.device_put(zero_totals(plan), device)
            self._ref = jax.device_put(jnp.asarray(self._reference), device)

    def untrained(self, X, seed, first, valid):
        """Queue the untrained networks exactly as the sampler does (its own compiled
        programs): outputs to add on the host later, or None when already added."""
        if self._host is not None:
            return self._outputs(X, seed, first, valid)
        self._totals, bad = self._step(self._totals, X, seed, first, valid)
        self._untrained_bad = (bad, first)
        return None

    def add(self, f, n_valid: int) -> None:
        """Add one batch's outputs; NaN or infinite outputs are refused, never summed."""
        if f is None:  # the sampler's step added them; it counted the non-finite ones
            bad, first = self._untrained_bad
            if int(bad):
                refuse_nonfinite(self._net, self._width, int(first), n_valid, int(bad))
            return
        if self._host is not None:
            f = np.asarray(f)[:n_valid]
            bad = int(np.count_nonzero(~np.isfinite(f)))
        else:
            bad = int(jnp.sum(~jnp.isfinite(f[:n_valid])))
        if bad:
            raise NNGPInputError(
                f"training diverged: {bad} outputs of a batch of {n_valid} networks at width "
                f"{self._width} are NaN or infinite after step {self._stepno}; they are not "
                "summed into the statistics. Use a smaller learning_rate (gradient descent on "
                "the MSE is stable for learning_rate < 2 n / the largest eigenvalue of the "
                "NTK on x_train) or fewer steps")
        if self._host is not None:
            self._host.add(shifted(f, self._reference))
        else:
            self._totals = self._add(self._totals, f, self._ref, n_valid)

    def result(self) -> ShardSums:
        if self._host is not None:
            return self._host.result()
        return xla_shard_sums(self._plan, self._totals)


# ---------------------------------------------------------------------------------------------
# a shard: its batches drawn, trained and recorded on one device
# ---------------------------------------------------------------------------------------------
class _TrainShard:
    """Networks ``start .. start+count-1`` trained batch by batch on ``device``; the host
    adds batch i's recorded outputs while the device trains batch i + 1."""

    def __init__(self, net, setup: TrainingSetup, plan: RunPlan, width: int, start: int,
                 count: int, device, references):
        batch = plan.batch_size(width)
        self._batch, self._start, self._count = batch, start, count
        self._setup = setup
        self._put = lambda a: jax.device_put(a, device)
        self._X = self._put(jnp.asarray(plan.inputs, jnp.float32))
        self._X64 = self._put(jnp.asarray(plan.inputs))
        self._seed = self._put(jnp.asarray(plan.seed, jnp.int64))
        self._init = _compiled_init(net, width, batch, setup.compiled)
        self._train = _compiled_train(net, width, batch, setup.compiled,
                                      getattr(device, "platform", "cpu"))
        self._outputs = compiled_outputs(net, width, batch, setup.parametrisation)
        splan = StepPlan(plan.k, plan.orders, plan.covariance)
        self._sums = [_Sums(net, width, splan, batch, device, step, ref)
                      for step, ref in zip(setup.steps, references, strict=True)]
        self._offsets = iter(range(0, count, batch))
        self._inflight: deque = deque()

    def dispatch(self) -> bool:
        """Queue the next batch (draw, train through every recorded step); False at the end."""
        offset = next(self._offsets, None)
        if offset is None:
            return False
        n_valid = min(self._batch, self._count - offset)
        first = self._put(jnp.asarray(self._start + offset, jnp.uint32))
        params, state = self._init(self._seed, first)
        valid = self._put(jnp.asarray(n_valid, jnp.int32))
        outs, done = [], 0
        for step, sums in zip(self._setup.steps, self._sums, strict=True):
            if step == 0:  # the sampler's own programs: its sums, bit for bit
                outs.append(sums.untrained(self._X64, self._seed, first, valid))
                continue
            if step > done:
                params, state = self._train(params, state,
                                            self._put(jnp.asarray(step - done, jnp.int32)))
                done = step
            outs.append(self._outputs(params, self._X, valid))
        self._inflight.append((outs, n_valid))
        return True

    def retire(self, keep: int) -> int:
        done = 0
        while len(self._inflight) > keep:
            outs, n_valid = self._inflight.popleft()
            for sums, f in zip(self._sums, outs, strict=True):
                sums.add(f, n_valid)
            done += n_valid
        return done

    def result(self) -> list[ShardSums]:
        self.retire(0)
        return [s.result() for s in self._sums]


def _todo(ledgers: list[ShardLedger]) -> list[tuple[int, int]]:
    """``(width, shard index)`` of the shards some step's ledger still lacks, in plan order."""
    return [t for t in ledgers[0].plan.tasks() if not all(lg.done(*t) for lg in ledgers)]


def _adopt_kernel(ledgers: list[ShardLedger], identity: dict) -> None:
    """Record the accumulation kernel in every step's ledger (saved with its checkpoint);
    a resume whose finished shards another kernel summed is refused
    (:meth:`~nngp_ppl.checkpoint.ShardLedger.adopt_kernel`)."""
    for lg in ledgers:
        lg.adopt_kernel(identity)


def _run_local(net, setup: TrainingSetup, ledgers: list[ShardLedger], references, devices,
               on_networks, on_shard) -> None:
    """Every shard missing from some step's ledger, one shard per device at a time (the
    sampler's :class:`~nngp_ppl.sampling.sampler.LocalExecutor` schedule)."""
    _adopt_kernel(ledgers, LocalExecutor(devices).identity())
    plan = ledgers[0].plan
    todo = _todo(ledgers)

    def start_job(width, index, device):
        start, count = plan.shards(width)[index]
        return _TrainShard(net, setup, plan, width, start, count, device,
                           [ref[width] for ref in references])

    run_round_robin(todo, devices, start_job, on_networks, on_shard)


def _train_shard_task(net, setup: TrainingSetup, plan: RunPlan, width: int,
                      index: int, references=None) -> list[ShardSums]:
    """One shard of a training run on a Dask worker (all its recorded steps), a pure
    function of its arguments (``references``: the step's reference at this width, one per
    step, :func:`reference_outputs`; None: zeros). The worker refuses to sum with another
    accumulation kernel than the one the plan records (a worker that joined after the
    check, or one whose C kernel stopped building), so a run never mixes two roundings."""
    require_x64("a training shard (float64 running sums)")
    device = jax.local_devices()[0]
    mine = _native.identity(device.platform)
    if kernel_key(mine) != kernel_key(json.loads(plan.kernel)):
        raise NNGPInputError(
            f"dask: this worker would sum with the accumulation kernel {kernel_key(mine)}, "
            f"the run with {kernel_key(json.loads(plan.kernel))}; give every worker the "
            "same kernel (a C compiler everywhere, or NNGP_PPL_KERNEL=xla on all)")
    start, count = plan.shards(width)[index]
    if references is None:
        references = [np.zeros(plan.k) for _ in setup.steps]
    job = _TrainShard(net, setup, plan, width, start, count, device, references)
    while job.dispatch():
        job.retire(1)
    return job.result()


def _run_dask(net, setup: TrainingSetup, ledgers: list[ShardLedger], references, dask,
              on_networks, on_shard) -> None:
    """Every shard missing from some step's ledger as one Dask task (the sampler's
    :class:`~nngp_ppl.distributed.DaskExecutor`: the workers checked for one accumulation
    kernel, recorded in the ledgers; results folded in shard order whatever the order in
    which they finish, so the sums are the local run's)."""
    with dask_client(dask) as client:  # a missing Dask is refused here, with its message
        _adopt_kernel(ledgers, worker_kernel(client))
        plan = ledgers[0].plan
        tag = uuid.uuid4().hex[:8]
        futures = {}
        for width, index in _todo(ledgers):
            fut = client.submit(_train_shard_task, net, setup, plan, width, index,
                                [ref[width] for ref in references],
                                key=f"nngp-train-{tag}-N{width}-{index}", pure=False)
            futures[fut] = (width, index, plan.shards(width)[index][1])
        collect(client, futures, on_shard, on_networks)


def default_train_batch(net, width: int, k: int, n_train: int) -> int:
    """Networks per compiled training step: about :data:`TRAIN_BATCH_BYTES` of parameters,
    gradients, optimiser state (5 copies of the width·(d_in + 2) + 1 parameters) and
    activations (4 float32 (width, n_train + k) arrays), a multiple of 8 in 8..4096."""
    per_net = 4 * (5 * (width * (net.d_in + 2) + 1) + 4 * width * (n_train + k))
    return int(min(4096, max(8, TRAIN_BATCH_BYTES // per_net // 8 * 8)))


# ---------------------------------------------------------------------------------------------
# the public entry point
# ---------------------------------------------------------------------------------------------
def train_correlators(net, X, widths, n_nets: int, x_train, y_train, steps,
                      learning_rate: float, *, orders=(2, 4, 6), seed: int = 0,
                      optimizer: str = "gd", parametrisation: str = "ntk",
                      momentum: float = 0.9, covariance: bool = True,
                      batch_size: int | None = None, shard_size: int | None = None,
                      devices=None, checkpoint=None, resume: bool = False,
                      progress: bool = True, dask=None) -> TrainedCorrelators:
    r"""Train ``n_nets`` networks per width on (x_train, y_train) and record their
    correlators at the inputs ``X`` after each of ``steps`` (module docstring).

    The arguments shared with :func:`nngp_ppl.sample_correlators` mean the same there and
    here (with equal ``batch_size`` and ``shard_size``, step 0 is its result bit for bit).
    ``learning_rate`` η, ``optimizer`` (``"gd"``, or optax's ``"sgd"``, ``"momentum"``
    with ``momentum``, ``"adam"``) and ``parametrisation`` (``"ntk"`` or ``"standard"``)
    set the training; the loss is :math:`\frac{1}{2n}\sum_i (f(X_i) - Y_i)^2`.
    ``checkpoint``: a directory that holds each step's finished shards (one
    :class:`~nngp_ppl.sampling.checkpoint.ShardLedger` file per step, saved atomically after every
    shard); with ``resume`` a killed run continues where it stopped, recomputing only the
    shards some step lacks. Dask is not supported for training (yet).
    """

    require_x64("train_correlators (float64 running sums)")
    net = _trainable(net)
    setup = training_setup(net, x_train, y_train, steps, learning_rate, optimizer=optimizer,
                           parametrisation=parametrisation, momentum=momentum)
    _optimizer(setup)  # a missing optax is refused before any work
    X = _checks.inputs("X", X, net.d_in)
    if batch_size is None:

        batch_size = min(default_train_batch(net, w, len(X), setup.n_train)
                         for w in check_widths(widths))
    plan = plan_run(net, X, widths, n_nets, orders=orders, seed=seed, covariance=covariance,
                    batch_size=batch_size, shard_size=shard_size)
    progress, resume = check_flag("progress", progress), check_flag("resume", resume)
    if dask is not None and devices is not None:
        raise NNGPInputError("pass devices (local JAX devices) or dask (Dask workers), not "
                             "both")
    if dask is None:
        devs = local_devices(devices)
        _native.kernel_choice()  # a bad NNGP_PPL_KERNEL is refused before any work
    else:
        DaskExecutor(dask)  # a bad spec is refused before any work
    ledgers, references, folder = _open_ledgers(net, plan, setup, checkpoint, resume)

    def on_shard(key, results):
        for lg, sums in zip(ledgers, results, strict=True):
            if not lg.done(*key):
                lg.add(*key, sums)
        if folder is not None:
            for step, lg in zip(setup.steps, ledgers, strict=True):
                lg.save(folder / f"step_{step}.nc")

    first = ledgers[0]
    done = sum(c for w in plan.widths for i, (_, c) in enumerate(plan.shards(w))
               if all(lg.done(w, i) for lg in ledgers))
    with tqdm(total=plan.n_nets * len(plan.widths), initial=done, unit="net",
              unit_scale=True, disable=not progress, dynamic_ncols=True,
              desc=f"train {first.plan.net.name}-net") as bar:
        if dask is None:
            _run_local(net, setup, ledgers, references, devs, bar.update, on_shard)
        else:
            _run_dask(net, setup, ledgers, references, dask, bar.update, on_shard)
    return TrainedCorrelators(setup, [_shifted_stats(lg.stats(), ref)
                                      for lg, ref in zip(ledgers, references, strict=True)],
                              json.loads(ledgers[0].plan.kernel or "{}"))


def _shifted_stats(stats: CorrelatorStats, reference: dict) -> CorrelatorStats:
    """``stats`` (the ledger's sums of f - r) told the reference r they were shifted by."""
    if not any(np.any(r != 0) for r in reference.values()):
        return stats
    widths = stats.widths
    return CorrelatorStats(
        stats.net, stats.X, stats.orders, stats.seed,
        {w: stats.shifted_moment_sums(w) for w in widths},
        {w: stats.network_ranges(w) for w in widths}, covariance=stats.has_covariance,
        tails={w: stats.tail_sums(w) for w in widths} if stats.has_tails else None,
        shift=reference)


def reference_outputs(net, X, widths, n_nets: int, setup: TrainingSetup, orders, seed: int,
                      covariance: bool = True, start: int = 0) -> list[dict[int, np.ndarray]]:
    r"""The reference :math:`r_t(x)` per recorded step and width that the recorded outputs
    are shifted by before their products are summed (docs/training_flow.md, "Float32
    rounding of the stored sums"): ``[{width: (k,) float64}]``, one dict per step.

    :math:`r_t(x) = \mathrm{fl}_{32}\big(\frac1P\sum_{j<P} f_{j,t}(x)\big)`, the mean of
    the pilot block, networks j = start..start+P-1 (:data:`REFERENCE_NETWORKS`, at most
    ``n_nets``) drawn with the sampler's keys and trained as the run trains them, in one
    batch of P (rounded up to 8) on the host CPU (the default device where JAX was started
    without one), the mean summed in float64 and rounded to float32. It depends on the
    run's definition only (ensemble, inputs, width, seed, training), not
    on the batch or shard sizes, the devices, Dask or a resume, and it needs no oracle
    (every optimiser and parametrisation have it); it is stored with the sums. Step 0
    (the untrained, zero-mean networks: the sampler's sums bit for bit) and runs that do
    not record every order 1..max with the covariance (the shifted sums could not be
    undone, :class:`~nngp_ppl.CorrelatorStats`) have r = 0.
    """
    net = _trainable(net)
    X = _checks.inputs("X", X, net.d_in)
    widths = check_widths(widths)
    n_nets = _checks.positive_int("n_nets", n_nets)
    seed = _checks.seed("seed", seed)
    if not isinstance(setup, TrainingSetup):
        raise NNGPInputError(f"setup must be a TrainingSetup (training_setup(...)), got "
                             f"{type(setup).__name__}")
    k = len(X)
    zero = [{w: np.zeros(k) for w in widths} for _ in setup.steps]
    orders = _checks.orders("orders", orders, odd=True)
    if not covariance or orders != tuple(range(1, max(orders) + 1)) or setup.steps == (0,):
        return zero
    try:
        cpu = jax.devices("cpu")[0]
    except RuntimeError:  # JAX_PLATFORMS without cpu: the default device, as documented
        cpu = jax.devices()[0]
    pilot = min(REFERENCE_NETWORKS, n_nets)
    for w in widths:
        outs = _outputs_at_steps(net, X, w, pilot, setup, seed, start, cpu)
        for ref, step, f in zip(zero, setup.steps, outs, strict=True):
            if step:
                mean = np.mean(np.asarray(f, np.float64), axis=0)
                ref[w] = mean.astype(np.float32).astype(np.float64)
    return zero


def _open_ledgers(net, plan: RunPlan, setup: TrainingSetup, checkpoint, resume: bool):
    """(one ledger per step, the references of :func:`reference_outputs`, the checkpoint
    folder or None); a resumed run reads its references from the checkpoint."""
    def references():
        return reference_outputs(net, plan.inputs, plan.widths, plan.n_nets, setup,
                                 plan.orders, plan.seed, plan.covariance, plan.start)

    if checkpoint is None:
        if resume:
            raise NNGPInputError("resume=True needs a checkpoint directory to resume from")
        return [ShardLedger(plan) for _ in setup.steps], references(), None
    folder = Path(checkpoint)
    if folder.exists() and not folder.is_dir():
        raise NNGPInputError(f"checkpoint must be a directory, got the file {folder}")
    meta = folder / "training.json"
    described = json.dumps({"plan": plan.describe(), "training": setup.describe()},
                           sort_keys=True)
    if meta.exists():
        if not resume:
            raise NNGPInputError(
                f"checkpoint: {folder} holds an interrupted or unsaved run; pass resume=True "
                "(CLI: --resume) to continue it, or delete it to start over")
        if meta.read_text() != described:
            raise NNGPInputError(
                f"checkpoint: {folder} belongs to a different training run; rerun with the "
                "original arguments, or delete it to start over")
        refs = _load_references(folder / REFERENCE_FILE, setup, plan)
        ledgers = []
        for step in setup.steps:
            path = folder / f"step_{step}.nc"
            remove_stale_temporaries(path)
            ledgers.append(ShardLedger.load(path) if path.exists() else ShardLedger(plan))
        return ledgers, refs, folder

    folder.mkdir(parents=True, exist_ok=True)
    refs = references()
    # The references first: a folder with training.json always has them (one without is
    # an older version's, whose sums are unshifted, and is refused).
    with atomic_path(folder / REFERENCE_FILE) as tmp:
        Path(tmp).write_text(json.dumps(
            {"steps": list(setup.steps), "widths": list(plan.widths),
             "reference": [[ref[w].tolist() for w in plan.widths] for ref in refs]}))
    with atomic_path(meta) as tmp:
        Path(tmp).write_text(described)
    return [ShardLedger(plan) for _ in setup.steps], refs, folder


#: The checkpoint's file of the references (:func:`reference_outputs`), JSON: float64
#: values print and read back exactly.
REFERENCE_FILE = "reference.json"


def _load_references(path: Path, setup: TrainingSetup, plan: RunPlan):
    if not path.exists():
        raise NNGPInputError(
            f"checkpoint: {path.parent} was written by an older nngp_ppl, whose sums are not "
            "shifted by a reference (docs/training_flow.md); delete it to start over")
    try:
        got = json.loads(path.read_text())
        if got["steps"] != list(setup.steps) or got["widths"] != list(plan.widths):
            raise ValueError("steps or widths differ from the run's")
        k = len(plan.inputs)
        refs = [{w: np.asarray(r, np.float64).reshape(k) for w, r in zip(plan.widths, per,
                                                                           strict=True)}
                for per in got["reference"]]
        if len(refs) != len(setup.steps):
            raise ValueError("one reference per step")
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise NNGPInputError(f"checkpoint: {path} is damaged ({err}); delete the "
                             "checkpoint to start over") from None
    return refs


# ---------------------------------------------------------------------------------------------
# the result and its file
# ---------------------------------------------------------------------------------------------
class TrainedCorrelators:
    """Correlator statistics of a trained ensemble at each recorded step.

    ``steps``: the recorded steps; :meth:`at_step` gives that step's
    :class:`~nngp_ppl.CorrelatorStats` (everything the sampler's statistics offer:
    correlators, standard errors, covariance); ``setup``: the training
    (:class:`TrainingSetup`); ``kernel``: the identity of the accumulation kernel that summed
    the networks (:func:`nngp_ppl._native.identity`, a dict; empty when unknown). One netCDF
    file holds them all, the per-width sums stacked along a ``step`` coordinate
    (:meth:`to_netcdf`), with the ``reference`` (step, width, input) the summed outputs were
    shifted by (:func:`reference_outputs`; each step's statistics carry it as
    :meth:`~nngp_ppl.CorrelatorStats.shift`).
    """

    def __init__(self, setup: TrainingSetup, stats, kernel: dict | None = None):
        stats = list(stats)
        if len(stats) != len(setup.steps):
            raise ValueError("one CorrelatorStats per recorded step")
        self.setup = setup
        self._stats = dict(zip(setup.steps, stats, strict=True))
        self.kernel = dict(kernel or {})

    @property
    def steps(self) -> tuple[int, ...]:
        return self.setup.steps

    def at_step(self, step: int) -> CorrelatorStats:
        if step not in self._stats:
            raise NNGPInputError(f"step must be one of the recorded steps {list(self.steps)}, "
                                 f"got {step!r}")
        return self._stats[step]

    def __repr__(self) -> str:
        first = self._stats[self.steps[0]]
        return (f"TrainedCorrelators({first.net.describe()}, widths={list(first.widths)}, "
                f"steps={list(self.steps)}, {self.setup.optimizer}, "
                f"{self.setup.parametrisation} parametrisation)")

    def to_dataset(self):

        parts = [self._stats[s].to_dataset().drop_vars("moment_shift", errors="ignore")
                 for s in self.steps]
        per_step = [v for v in parts[0].data_vars if "width" in parts[0][v].dims]
        stacked = xr.concat([p[per_step] for p in parts], dim="step", coords="minimal",
                            compat="override")
        ds = parts[0].drop_vars(per_step).assign(stacked.data_vars)
        ds = ds.assign_coords(step=("step", np.asarray(self.steps, np.int64)))
        widths = self._stats[self.steps[0]].widths
        ds["reference"] = (("step", "width", "input"), np.stack(
            [[self._stats[s].shift(w) for w in widths] for s in self.steps]),
            {"long_name": "reference r_t(x_a) the recorded outputs were shifted by: "
                          "moment_sum_m and tail_sum_n are sums over networks of products "
                          "of f_t(x_a) - r_t(x_a) (nngp_ppl.training.trainer."
                          "reference_outputs)"})
        ds.attrs.pop("checksum", None)
        ds.attrs["correlators_format"] = ds.attrs.pop("nngp_ppl_format")
        ds.attrs["correlators_format_version"] = ds.attrs.pop("nngp_ppl_format_version")
        ds.attrs["training"] = json.dumps(self.setup.describe())
        ds.attrs["accumulation_kernel"] = json.dumps(self.kernel, sort_keys=True)
        return ds

    def to_netcdf(self, path) -> Path:
        """Write all steps to one netCDF file, atomically, with a checksum."""

        path = output_file("path", path)
        return write_netcdf(self.to_dataset(), path, file_format=TRAINED_FORMAT,
                            version=TRAINED_VERSION)

    @classmethod
    def from_netcdf(cls, path) -> TrainedCorrelators:

        ds = read_netcdf(path, name="path", what="trained-correlators file",
                         file_format=TRAINED_FORMAT)
        version = format_version(ds.attrs)
        if version not in (1, TRAINED_VERSION):  # 1: unshifted sums, read with reference 0
            raise version_error("path", path, version, TRAINED_VERSION,
                                "trained-correlators file")
        try:
            t = json.loads(ds.attrs["training"])
            setup = TrainingSetup(
                tuple(tuple(float(v) for v in p) for p in t["x_train"]),
                tuple(float(v) for v in t["y_train"]), tuple(int(s) for s in t["steps"]),
                float(t["learning_rate"]), t["optimizer"], t["parametrisation"],
                float(t["momentum"]))
            stats = []
            for step in setup.steps:
                sub = ds.sel(step=step).drop_vars("step")
                if "reference" in sub:
                    sub = sub.rename({"reference": "moment_shift"})
                sub.attrs["nngp_ppl_format"] = sub.attrs["correlators_format"]
                stats.append(CorrelatorStats._from_dataset(sub))
            kernel = json.loads(ds.attrs.get("accumulation_kernel", "{}"))
            if not isinstance(kernel, dict):
                raise ValueError("accumulation_kernel is not a JSON object")
        except (KeyError, ValueError, TypeError) as err:
            raise NNGPInputError(f"path: {path} is damaged or incomplete ({err})") from None
        return cls(setup, stats, kernel)


def trained_outputs(net, X, width: int, n_nets: int, x_train, y_train, steps,
                    learning_rate: float, *, seed: int = 0, optimizer: str = "gd",
                    parametrisation: str = "ntk", momentum: float = 0.9,
                    start: int = 0) -> np.ndarray:
    """(S, n_nets, k) float32 outputs at ``X`` of networks start.. trained as in
    :func:`train_correlators`, at each recorded step: the raw draws, for a handful of
    networks (means, plots, tests); memory grows with ``n_nets``."""
    net = _trainable(net)
    setup = training_setup(net, x_train, y_train, steps, learning_rate, optimizer=optimizer,
                           parametrisation=parametrisation, momentum=momentum)
    X = _checks.inputs("X", X, net.d_in)
    width = _checks.positive_int("width", width)
    n_nets = _checks.positive_int("n_nets", n_nets)
    return _outputs_at_steps(net, X, width, n_nets, setup, _checks.seed("seed", seed), start,
                             jax.devices()[0])


def _outputs_at_steps(net, X, width: int, n_nets: int, setup: TrainingSetup, seed: int,
                      start: int, device) -> np.ndarray:
    """(S, n_nets, k) float32 outputs of networks start.. at each recorded step, trained
    in one batch of n_nets rounded up to 8 on ``device``."""
    batch = -(-n_nets // 8) * 8
    put = functools.partial(jax.device_put, device=device)
    params, state = _compiled_init(net, width, batch, setup.compiled)(
        put(jnp.asarray(seed, jnp.int64)), put(jnp.asarray(start, jnp.uint32)))
    train = _compiled_train(net, width, batch, setup.compiled, device.platform)
    outputs = compiled_outputs(net, width, batch, setup.parametrisation)
    X = put(jnp.asarray(X, jnp.float32))
    out, done = [], 0
    for step in setup.steps:
        if step > done:
            params, state = train(params, state, put(jnp.asarray(step - done, jnp.int32)))
            done = step
        out.append(np.asarray(outputs(params, X, batch))[:n_nets])
    return np.stack(out)
