r"""Streaming network sampler: plan a run, execute its shards, return the statistics.

For each width N the sampler draws networks :math:`j = 0, 1, \dots` with the key
:func:`nngp_ppl.ensembles.core.network_keys` ``(seed, N, j)`` (``fold_in`` on the width, then on
the network index), evaluates them on the k inputs in float32, and adds to float64 running
totals the sums :math:`S_t = \sum_j \prod_{a\in t} f_j(x_a)` of every monomial the
statistics need (:mod:`nngp_ppl.sampling.stats`): the distinct tuples of each requested order and,
for the estimator covariance, of every pairwise sum of orders. Since each network has its own
key, the sums do not depend on the batch size, nor on how a later caller splits the index
range into shards, up to round-off: float64 in the sums, and float32 in a network's outputs
(XLA may add a network's N neurons in another order for another batch shape).

A run is three steps, each its own function:

1. **plan** (:func:`plan_run`): validate the arguments and cut each width's index range
   into shards of whole batches (:class:`nngp_ppl.sampling.checkpoint.RunPlan`);
2. **execute**: an *executor* computes the shards still missing from the
   :class:`~nngp_ppl.sampling.checkpoint.ShardLedger` with the pure kernel
   :func:`nngp_ppl.sampling._shard.shard_sums`. :class:`LocalExecutor` runs them on local JAX
   devices (one shard per device, batches queued asynchronously);
   :class:`nngp_ppl.sampling.distributed.DaskExecutor` fans them out to Dask workers. Both have the
   same two methods, ``check(plan)`` (refuse what cannot run, before any work) and
   ``run(plan, ledger, on_networks, on_shard)``, so either can be passed where the other is;
3. **assemble**: the ledger adds the shard sums in shard order and returns the statistics.

The summation order thus depends only on the plan, so one device, two devices, Dask workers
and an interrupted and resumed run give bitwise the same sums on the same platform
(``tests/test_distributed.py``, ``tests/test_resume.py``). Devices run whole shards rather
than slices of one batch: every device then executes the identical single-device program
(a batch split over devices would be a different XLA program, bitwise equal only by luck),
and no cross-device reduction is needed.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections import deque
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from .. import _checks
from .._checks import NNGPInputError
from .._lock import exclusive_lock
from .._progress import on_terminal
from .._version import require_x64
from ..ensembles.core import Ensemble, net_label
from . import _native
from ._shard import (
    CHUNK,
    StepPlan,
    available_bytes,
    batch_bytes,
    chunk_size,
    shard_job,
    shard_sums,
    widest_fitting,
)
from .checkpoint import RunPlan, ShardLedger, remove_stale_temporaries
from .distributed import DaskExecutor
from .stats import MAX_MONOMIALS, CorrelatorStats, check_tails, monomial_count

__all__ = [
    "MAX_NETWORK_INDEX",
    "BATCH_BYTES",
    "default_batch_size",
    "MIN_SHARDS",
    "MAX_SHARD_BATCHES",
    "default_shard_size",
    "MAX_WIDTH",
    "check_widths",
    "check_flag",
    "check_memory",
    "plan_run",
    "local_devices",
    "LocalExecutor",
    "run_round_robin",
    "executor_for",
    "network_sums",
    "sample_correlators",
    "check_resumable",
]

#: Network indices are uint32 in :func:`nngp_ppl.ensembles.core.network_keys`.
MAX_NETWORK_INDEX = 2**32

#: Bytes of forward-pass working memory the default batch size aims at.
BATCH_BYTES = 16 * 2**20


def default_batch_size(width: int, k: int, d_in: int = 1) -> int:
    """Networks per batch: about :data:`BATCH_BYTES` of forward-pass memory, 8..4096.

    Per network the forward pass holds width·(d_in + 2) float32 normals and about three
    (width, k) float32 arrays. The monomial products live per chunk of at most
    :data:`CHUNK` networks and do not count here.
    """
    width = _checks.positive_int("width", width)
    per_net = 4 * width * (_checks.positive_int("d_in", d_in) + 2 + 3 * k) + 8 * k
    batch = BATCH_BYTES // per_net
    if batch >= CHUNK:
        return int(min(4096, batch // CHUNK * CHUNK))
    return int(max(8, batch // 8 * 8))  # very wide networks: few per batch


def _resolve_batch(batch: int, count: int, k: int, max_order: int) -> tuple[int, int]:
    """(batch, chunk) compiled for a range of ``count`` networks at a requested batch size.

    Never a batch much larger than the whole range (small runs, tests); then rounded up to
    whole chunks (the extra rows are masked like a short last batch).
    """
    batch = min(batch, -(-count // 8) * 8)
    chunk = min(chunk_size(k, max_order), batch)
    return -(-batch // chunk) * chunk, chunk


#: The default shard size aims at this many shards per width, so that up to this many
#: devices or workers can share one width.
MIN_SHARDS = 8

#: At most this many batches per shard by default: bounds the work lost to a crash and
#: the time between checkpoints (about 10 s on a 2-core CPU at N = 1000 or N = 10).
MAX_SHARD_BATCHES = 256


def default_shard_size(n_nets: int, batch: int) -> int:
    """Networks per shard: whole batches, about n_nets / :data:`MIN_SHARDS`, at most
    :data:`MAX_SHARD_BATCHES` batches. Independent of the device and worker count, so
    that the summation order (and so the result, bit for bit) is too."""
    n_nets = _checks.positive_int("n_nets", n_nets)
    batch = _checks.positive_int("batch", batch)
    batches = -(-n_nets // batch)
    return min(MAX_SHARD_BATCHES, max(1, -(-batches // MIN_SHARDS))) * batch





#: Widths are folded into the PRNG key as uint32 (:func:`nngp_ppl.ensembles.core.network_keys`).
MAX_WIDTH = 2**32 - 1


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
def _ensemble(net) -> Ensemble:
    if not isinstance(net, Ensemble):
        raise NNGPInputError(
            f"net must be an ensemble (an nngp_ppl.Ensemble such as ErfNet, ActivationNet, "
            f"MLP), got {type(net).__name__}"
        )
    return net


def _memory_d_in(net, width: int) -> int:
    """The d_in at which the single-layer memory model (width·(d_in + 2) random numbers per
    network) counts a net that declares ``parameter_count(width)``: a deep MLP or a user's
    network draws ~depth·N² of them, and sizing its batches by d_in would exhaust memory."""
    count = getattr(net, "parameter_count", None)
    if count is None:
        return net.d_in
    return max(net.d_in, -(-(int(count(width)) - 1) // width) - 2)


def check_widths(widths) -> tuple[int, ...]:
    if widths is None or isinstance(widths, (str, bytes)):
        raise NNGPInputError(
            f"widths must be a positive integer or a sequence of them, got {widths!r}")
    try:
        out = _checks.positive_ints("widths", widths)
    except TypeError:
        raise NNGPInputError(
            f"widths must be a positive integer or a sequence of them, got {widths!r}"
        ) from None
    big = [w for w in out if w > MAX_WIDTH]
    if big:
        raise NNGPInputError(
            f"widths must be at most 2**32 - 1 (the width is part of each network's random "
            f"key), got {big[0]}; such a network would also need {4 * big[0] * 3 / 2**40:.3g} "
            "TiB of float32 weights"
        )
    return out


def check_flag(name: str, value) -> bool:
    """Only True or False: a string such as "no" is truthy and would mean the opposite."""
    if not isinstance(value, (bool, np.bool_)):
        raise NNGPInputError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _nonnegative_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise NNGPInputError(f"{name} must be a non-negative integer, got {value!r}")
    if value < 0:
        raise NNGPInputError(f"{name} must be a non-negative integer, got {value}")
    return int(value)


def _check_monomials(k: int, orders, covariance) -> None:
    n_mono = monomial_count(k, orders, covariance)
    if n_mono > MAX_MONOMIALS:
        raise NNGPInputError(
            f"X: {k} inputs at orders {orders} need {n_mono} monomial sums per width "
            f"(limit {MAX_MONOMIALS}); use fewer inputs or orders, or covariance=False"
        )


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB"


def check_memory(net: Ensemble, k: int, batches: dict, devices) -> None:
    """Refuse, before any allocation, a width whose batch does not fit in device memory.

    ``batches`` maps width -> batch size. CPU devices share the host's memory and run
    their shards at once, so their needs add up; an accelerator has its own.
    """
    devices = list(devices)
    cpu = [d for d in devices if d.platform == "cpu"]
    groups = ([(cpu[0], len(cpu))] if cpu else []) + [(d, 1) for d in devices
                                                      if d.platform != "cpu"]
    for device, sharing in groups:
        free = available_bytes(device)
        if free is None:
            continue
        for width, batch in batches.items():
            need = sharing * batch_bytes(width, batch, k, _memory_d_in(net, width))
            if need <= free:
                continue
            where = (f"on each of {sharing} CPU devices sharing the host's memory"
                     if sharing > 1 else f"on {device.platform} device {device.id}")
            fits = widest_fitting(free // sharing, batch, k, net.d_in)
            one = widest_fitting(free // sharing, 1, k, net.d_in)
            hint = (f"; with batch_size 1 (CLI: --batch-size 1) widths up to {one:,} fit"
                    if batch > 1 else "")
            raise NNGPInputError(
                f"widths: N={width:,} needs about {_gib(need)} for one batch of {batch} "
                f"networks ({k} inputs, d_in={net.d_in}) {where}, but only {_gib(free)} is "
                f"free; at this batch size widths up to {fits:,} fit{hint}"
            )


# ---------------------------------------------------------------------------------------------
# plan
# ---------------------------------------------------------------------------------------------
def _batch_and_shard(want: int, given_batch, shard_size, n_nets: int, k: int,
                     max_order: int) -> tuple[int, int]:
    """(batch, shard) of one width. A given shard size is kept exactly or refused.

    Shards are whole batches and batches whole accumulation chunks. When the batch is the
    default one, it is lowered to the largest whole number of chunks that divides the
    requested shard; a shard that is not a whole number of chunks (or of an explicitly
    requested batch) cannot be honoured, and rounding it silently would run a different
    shard layout than the one asked for.
    """
    count = min(n_nets, shard_size or n_nets)
    batch, chunk = _resolve_batch(want, count, k, max_order)
    if shard_size is None:
        return batch, default_shard_size(n_nets, batch)
    if shard_size >= n_nets:  # a single shard: its nominal size changes nothing
        return batch, -(-shard_size // batch) * batch
    if shard_size % batch == 0:
        return batch, shard_size
    unit = batch if given_batch is not None else chunk
    if shard_size % unit == 0:
        m = batch // chunk
        while shard_size % (m * chunk):
            m -= 1
        return m * chunk, shard_size
    lower = shard_size // unit * unit
    choices = f"{lower} or {lower + unit}" if lower else f"{unit}"
    why = (f"the batch of {batch} networks (batch_size {given_batch}, in whole chunks of "
           f"{chunk})" if given_batch is not None else
           f"the accumulation chunk of {chunk} networks ({k} inputs, orders up to {max_order})")
    raise NNGPInputError(
        f"shard_size must be a whole number of batches: {shard_size} is not a multiple of "
        f"{why}; use {choices}, or omit it for the default"
    )


def plan_run(net: Ensemble, X, widths, n_nets: int, *, orders=(2, 4, 6), seed: int = 0,
             start: int = 0, covariance: bool = True, batch_size: int | None = None,
             shard_size: int | None = None) -> RunPlan:
    """The shard layout :func:`sample_correlators` uses for these arguments (validated).

    Per width: the batch size (default :func:`default_batch_size`, never much more than
    the shard or the run) and the shard size (default :func:`default_shard_size`). A given
    ``shard_size`` smaller than ``n_nets`` must be a whole number of batches (with the
    default batch size: of accumulation chunks, 128 networks for six inputs); anything
    else is refused with the nearest sizes that work.
    """
    net = _ensemble(net)
    X = _checks.inputs("X", X, net.d_in)
    widths = check_widths(widths)
    n_nets = _checks.positive_int("n_nets", n_nets)
    orders = _checks.orders("orders", orders, odd=True)
    seed = _checks.seed("seed", seed)
    start = _nonnegative_int("start", start)
    if batch_size is not None:
        batch_size = _checks.positive_int("batch_size", batch_size)
    if shard_size is not None:
        shard_size = _checks.positive_int("shard_size", shard_size)
    covariance = check_flag("covariance", covariance)
    if start + n_nets > MAX_NETWORK_INDEX:
        raise NNGPInputError(
            f"n_nets must be at most 2**32 = {MAX_NETWORK_INDEX:,} (network indices are "
            f"uint32){f' counted from start {start}' if start else ''}, got {n_nets:,}"
        )
    _check_monomials(len(X), orders, covariance)
    k = len(X)
    batches, shards = [], []
    for width in widths:
        want = (default_batch_size(width, k, _memory_d_in(net, width)) if batch_size is None
                else batch_size)
        batch, shard = _batch_and_shard(want, batch_size, shard_size, n_nets, k, max(orders))
        batches.append(batch)
        shards.append(shard)
    return RunPlan(net=net, X=tuple(tuple(float(v) for v in p) for p in X), widths=widths,
                   n_nets=n_nets, orders=orders, seed=seed, start=start,
                   covariance=covariance, batch=tuple(batches), shard=tuple(shards))


# ---------------------------------------------------------------------------------------------
# execute
# ---------------------------------------------------------------------------------------------
def local_devices(devices=None) -> list:
    """The JAX devices a local run shards over: all local devices of the default backend
    (``None``), the first ``n`` of them (an int), or the given list of ``jax.Device``."""
    avail = jax.local_devices()
    if devices is None:
        return list(avail)
    if isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        n = _checks.positive_int("devices", devices)
        if n > len(avail):
            raise NNGPInputError(
                f"devices: {n} requested but this process sees {len(avail)} local "
                f"{avail[0].platform} device(s); for more CPU devices set XLA_FLAGS="
                f"--xla_force_host_platform_device_count={n} before JAX is imported"
            )
        return list(avail[:n])
    try:
        out = list(devices)
    except TypeError:
        out = None
    if not out or not all(isinstance(d, jax.Device) for d in out):
        raise NNGPInputError(
            f"devices must be None, a positive int or a non-empty list of jax.Device, "
            f"got {devices!r}"
        )
    return out


class LocalExecutor:
    """Runs a plan's missing shards on local JAX devices, one shard per device at a time.

    Each device runs whole shards; the host round-robins over the devices, queueing one
    batch on each before waiting for the previous one, so the devices work concurrently.
    """

    def __init__(self, devices=None):
        self.devices = local_devices(devices)

    def check(self, plan: RunPlan) -> None:
        _native.kernel_choice()  # a bad NNGP_PPL_KERNEL is refused before any work
        check_memory(plan.net, plan.k, {w: plan.batch_size(w) for w in plan.widths},
                     self.devices)

    def identity(self) -> dict:
        """The accumulation kernel these devices sum with
        (:func:`nngp_ppl.sampling._native.identity`);
        devices that would sum with different kernels are refused."""
        seen = {d.platform: _native.identity(d.platform) for d in self.devices}
        if len({_native.kernel_key(i) for i in seen.values()}) > 1:
            raise NNGPInputError(
                f"devices: the devices {self.devices} would sum with different accumulation "
                f"kernels ({seen}); pass devices of one platform")
        return next(iter(seen.values()))

    def run(self, plan: RunPlan, ledger: ShardLedger, on_networks, on_shard) -> None:
        ledger.adopt_kernel(self.identity())
        plan = ledger.plan
        splan = StepPlan(plan.k, plan.orders, plan.covariance)
        X = plan.inputs

        def start_job(width, index, device):
            start, count = plan.shards(width)[index]
            batch = plan.batch_size(width)
            chunk = min(chunk_size(plan.k, splan.max_order), batch)
            return shard_job(plan.net, X, width, plan.seed, start, count, splan, batch, chunk,
                             device)

        run_round_robin(ledger.todo(), self.devices, start_job, on_networks, on_shard)


def run_round_robin(tasks, devices, start_job, on_networks, on_shard) -> None:
    """Run the shards ``tasks`` ((width, index) pairs, in order), one per device at a time.

    ``start_job(width, index, device)`` returns a job with ``dispatch() -> bool`` (queue
    the next batch on the device; False once every batch is queued), ``retire(keep) ->
    int`` (add all but ``keep`` queued batches on the host; the networks added) and
    ``result()``. Each device keeps one batch in flight while the host adds the one before;
    a finished shard goes to ``on_shard((width, index), result)`` as it completes (its
    ledger makes the order irrelevant to the sums). The sampler and the training share it.
    """
    queue = deque(tasks)
    active: list = [None] * len(devices)
    while queue or any(a is not None for a in active):
        for slot, device in enumerate(devices):
            if active[slot] is None and queue:
                key = queue.popleft()
                active[slot] = (key, start_job(*key, device))
        for slot, entry in enumerate(active):
            if entry is None:
                continue
            key, job = entry
            more = job.dispatch()
            done = job.retire(1 if more else 0)
            if done:
                on_networks(done)
            if not more:
                on_shard(key, job.result())
                active[slot] = None


def executor_for(devices=None, dask=None):
    """The executor of ``devices`` (local JAX devices) or ``dask`` (Dask workers)."""
    if dask is None:
        return LocalExecutor(devices)

    return DaskExecutor(dask)


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------
def network_sums(net: Ensemble, X, width: int, seed: int, start: int, count: int, *,
                 orders=(2, 4, 6), covariance: bool = True, batch_size: int | None = None,
                 progress=None):
    """Float64 monomial sums over networks ``start .. start+count-1`` at one width.

    A pure function of its arguments, additive over disjoint index ranges: the unit of
    work a shard or worker computes. Returns ``(moments, squares)``: ``{order: (T,)}``
    for :func:`nngp_ppl.sampling.stats.accumulated_orders` ``(orders, covariance)``, and the
    ``{order: (T,)}`` sums of squares when ``covariance=False`` (else ``None``).
    ``progress``, if given, is called with the number of networks after each batch.
    """

    require_x64("network_sums (float64 running sums)")
    net = _ensemble(net)
    X = _checks.inputs("X", X, net.d_in)
    (width,) = check_widths([width])
    seed = _checks.seed("seed", seed)
    start = _nonnegative_int("start", start)
    count = _checks.positive_int("count", count)
    orders = _checks.orders("orders", orders, odd=True)
    covariance = check_flag("covariance", covariance)
    if progress is not None and not callable(progress):
        raise NNGPInputError(
            f"progress must be None or a function called with each batch's network count, "
            f"got {progress!r}")
    if start + count > MAX_NETWORK_INDEX:
        raise NNGPInputError(
            f"start + count must be <= 2**32 (network indices are uint32), got {start + count}"
        )
    _check_monomials(len(X), orders, covariance)
    if batch_size is None:
        batch = default_batch_size(width, len(X), _memory_d_in(net, width))
    else:
        batch = _checks.positive_int("batch_size", batch_size)
    batch, _ = _resolve_batch(batch, count, len(X), max(orders))
    check_memory(net, len(X), {width: batch}, jax.local_devices()[:1])
    sums = shard_sums(net, X, width, seed, start, count, orders=orders,
                      covariance=covariance, batch=batch, progress=progress)
    return sums.moments, sums.squares


def sample_correlators(net: Ensemble, X, widths, n_nets: int, orders=(2, 4, 6),
                       seed: int = 0, batch_size: int | None = None, progress: bool = True,
                       *, start: int = 0, covariance: bool = True,
                       shard_size: int | None = None, devices=None, dask=None,
                       checkpoint=None, resume: bool = False) -> CorrelatorStats:
    r"""Draw ``n_nets`` networks at each width and return their correlator statistics.

    Parameters
    ----------
    net : Ensemble
        Any :class:`~nngp_ppl.Ensemble`: the single-layer ErfNet, ReLUNet, GaussNet and
        ActivationNet (any elementwise activation), a deep MLP, a JaxNetwork of your own
        init/apply, or an Ensemble class of your own (README, "Bring your own ensemble").
    X : array (k, d_in)
        Inputs; a 1-d array is k scalar inputs when d_in = 1.
    widths : int or sequence of int
        Hidden widths N.
    n_nets : int
        Networks per width. One network gives no noise estimate (a warning says so).
    orders : ints in 1..6
        Correlator orders :math:`G^{(n)}` to measure (default 2, 4, 6). Odd orders give the
        1-pt function and the odd correlators, which vanish for zero-mean ensembles
        (:func:`nngp_ppl.inference.symmetry.parity_test` checks that from data); with an
        odd order every order 1..max is built, and the accumulation costs in proportion
        to the monomials (orders 1..6: 1.67x those of 2, 4, 6; ``benchmarks/sampler.py``).
    seed : int
        Network j at width N uses ``network_keys(seed, N, j)``; results do not depend on
        ``batch_size`` (beyond round-off).
    batch_size : int, optional
        Networks per compiled step; default from the width and the number of inputs
        (:func:`default_batch_size`, about 16 MiB of working memory).
    progress : bool
        Show a tqdm progress bar (on a terminal only: :mod:`nngp_ppl._progress`).
    start : int, keyword-only
        First network index (default 0). Runs over disjoint index ranges with the same
        seed :meth:`~nngp_ppl.CorrelatorStats.merge` into exactly the statistics of one run.
    covariance : bool, keyword-only
        Also accumulate the monomials of all pairwise sums of orders (default), so that
        :meth:`~nngp_ppl.CorrelatorStats.covariance` is available. ``False`` keeps only the
        orders and their squares (standard errors), which is much cheaper for many inputs.
    shard_size : int, keyword-only, optional
        Networks per shard, the unit of parallel work and of checkpointing (default
        :func:`default_shard_size`). Must be a whole number of batches (:func:`plan_run`).
    devices : None, int or list of jax.Device, keyword-only
        Local devices to run shards on concurrently (default: all local devices of JAX's
        default backend; :func:`local_devices`). Ignored with ``dask``.
    dask : None, str or distributed.Client, keyword-only
        Fan the shards out to Dask workers instead: a ``Client``, a scheduler address
        ``"tcp://host:port"``, or ``"local"`` / ``"local:N"`` for a local cluster of N
        worker processes (:mod:`nngp_ppl.sampling.distributed`; needs the ``distributed`` extra).
    checkpoint : path, keyword-only, optional
        Save the finished shards there (atomically) after each shard. The file is left in
        place when the run completes; delete it once the result is saved. It is locked for
        the run (:mod:`nngp_ppl._lock`): a second run naming it is refused at once.
    resume : bool, keyword-only
        Continue from ``checkpoint`` if it exists (it must describe the same run); start
        afresh if it does not. Without ``resume`` an existing checkpoint is an error.

    The statistics are sums over shards added in shard order (:mod:`nngp_ppl.sampling.checkpoint`):
    for the same arguments the result is bitwise the same whatever the number of devices or
    workers and however often the run was interrupted and resumed (on the same platform;
    across machines, to float32 round-off). Memory does not grow with ``n_nets``; a width
    whose batch does not fit in the devices' free memory is refused before any work, with
    the widest that fits. A :class:`~nngp_ppl.sampling.stats.HeavyTailWarning` is emitted when the
    naive standard errors are unreliable (:func:`nngp_ppl.sampling.stats.check_tails`).
    """

    require_x64("sample_correlators (float64 running sums)")
    requested = plan_run(net, X, widths, n_nets, orders=orders, seed=seed, start=start,
                         covariance=covariance, batch_size=batch_size, shard_size=shard_size)
    progress = check_flag("progress", progress)
    resume = check_flag("resume", resume)
    executor = executor_for(devices, dask)
    with _checkpoint_lock(checkpoint):
        ledger, checkpoint = _open_ledger(requested, checkpoint, resume, batch_size,
                                          shard_size)
        executor.check(ledger.plan)
        _warn_if_noise_is_undefined(ledger.plan)
        _execute(ledger, executor, checkpoint, progress)
    stats = ledger.stats()
    check_tails(stats, stacklevel=3)  # point the warning at the caller
    return stats


def _checkpoint_lock(checkpoint):
    """Hold the checkpoint's lock for the run (:mod:`nngp_ppl._lock`): two runs naming the
    same checkpoint would overwrite, or on completion delete, each other's shards."""
    if checkpoint is None:
        return contextlib.nullcontext()
    path = _checkpoint_path(checkpoint)
    path.absolute().parent.mkdir(parents=True, exist_ok=True)
    return exclusive_lock(path, option="checkpoint", reentrant=True)


def _open_ledger(requested: RunPlan, checkpoint, resume: bool, batch_size,
                 shard_size) -> tuple[ShardLedger, Path | None]:
    """A fresh ledger for ``requested``, or the one saved in ``checkpoint`` to resume."""
    if checkpoint is None:
        if resume:
            raise NNGPInputError("resume=True needs a checkpoint path to resume from")
        return ShardLedger(requested), None
    checkpoint = _checkpoint_path(checkpoint)
    if not checkpoint.exists():
        return ShardLedger(requested), checkpoint
    if not resume:
        raise NNGPInputError(
            f"checkpoint: {checkpoint} exists (an interrupted or unsaved run); pass "
            "resume=True (CLI: --resume) to continue it, or delete it to start over"
        )
    remove_stale_temporaries(checkpoint)
    ledger = ShardLedger.load(checkpoint)
    check_resumable(ledger.plan, requested, checkpoint, batch_size, shard_size)
    return ledger, checkpoint


def _warn_if_noise_is_undefined(plan: RunPlan) -> None:
    if plan.n_nets < 2:
        warnings.warn(
            "n_nets=1: one network per width gives correlators but no estimate of their "
            "noise (the sample variance needs at least 2 networks), so standard errors and "
            "the covariance will be NaN and fits cannot weight by them; sample at least 2, "
            "or merge this run with another index range of the same seed",
            UserWarning, stacklevel=4,
        )


def _execute(ledger: ShardLedger, executor, checkpoint: Path | None, progress: bool) -> None:
    """Let ``executor`` fill the ledger, saving it after each shard, with a progress bar."""

    plan = ledger.plan

    def on_shard(key, sums):
        ledger.add(*key, sums)
        if checkpoint is not None:
            ledger.save(checkpoint)

    with tqdm(total=plan.n_nets * len(plan.widths), initial=ledger.networks_done(),
              unit="net", unit_scale=True, disable=not on_terminal(progress),
              dynamic_ncols=True,
              desc=net_label(plan.net.name)) as bar:
        executor.run(plan, ledger, bar.update, on_shard)


def _checkpoint_path(path) -> Path:
    if not isinstance(path, (str, Path)) or str(path) == "":
        raise NNGPInputError(f"checkpoint must be a file path, got {path!r}")
    path = Path(path)
    if path.is_dir():
        raise NNGPInputError(f"checkpoint must be a file name, got the directory {path}")
    # Found now, not after the first shard's work: the first save is where it would fail.
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise NNGPInputError(f"checkpoint: {parent} is a file, so {path} cannot be created")
    if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
        raise NNGPInputError(f"checkpoint: cannot write in {parent} (permission denied)")
    return path


def check_resumable(saved: RunPlan, requested: RunPlan, path, batch_size, shard_size) -> None:
    """A checkpoint continues only the run it was made for; sizes follow the checkpoint
    unless the caller asked for other ones explicitly."""
    diff = saved.differences(requested, sizes=False)
    if diff:
        raise NNGPInputError(
            f"checkpoint: {path} belongs to a different run (it differs in "
            f"{', '.join(diff)}); rerun with the original arguments, or delete it to start over"
        )
    for name, asked, mine, theirs in (("batch_size", batch_size, requested.batch, saved.batch),
                                      ("shard_size", shard_size, requested.shard, saved.shard)):
        if asked is not None and mine != theirs:
            raise NNGPInputError(
                f"{name}: the checkpoint {path} was made with {name} {list(theirs)} per width, "
                f"not {list(mine)}; omit {name} to continue with the checkpoint's"
            )
