r"""A sampling run as an ordered list of shards: fixed-order folding and crash-safe checkpoints.

A run (:class:`RunPlan`) draws, at each width N, the networks ``start .. start+n_nets-1``.
It is cut into *shards*: consecutive index ranges of ``shard`` networks (the last one may be
shorter), each computed on its own by :func:`nngp_ppl.sampling.sampler.network_sums` from zero
totals. Whatever computes them (one device, several devices, Dask workers) and in whatever
order they finish, :class:`ShardLedger` adds the shard sums of a width in shard-index order,

.. math:: S = (\dots((0 + S_0) + S_1) + \dots) + S_{m-1},

so the float64 result depends only on the plan (seed, widths, n_nets, batch and shard
sizes), never on the device count, the worker count, the completion order or on how often
the run was interrupted and resumed. A shard's own sums are bitwise reproducible on the same
platform (same XLA executable on the same kind of device), so runs that differ only in those
respects agree bit for bit; across different machines they agree to float32 round-off in
the network outputs.

Checkpoints
-----------
After each shard the ledger can be saved (:meth:`ShardLedger.save`) to a netCDF file: the
folded sums of each width (shards ``0 .. k_N - 1``), the sums of shards that finished out
of order and wait for their predecessors, the plan and a checksum. It is written to a
temporary name, flushed to disk (``fsync``), renamed over the previous checkpoint and the
directory flushed, so a crash at any instant (SIGKILL, power loss) leaves either the old or
the new checkpoint, never a torn one. Resuming recomputes exactly the shards not in the file: no
network is lost and none is counted twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import xarray as xr

from .. import tuples as _tuples
from .._checks import NNGPInputError
from .._io import (
    atomic_path,
    format_version,
    json_attr,
    load_netcdf,
    netcdf_bytes,
    version_error,
    write_bytes,
)
from .._version import __version__
from ..ensembles.core import Ensemble, ensemble_from_dict
from .stats import TAIL_POWERS, CorrelatorStats, accumulated_orders, content_checksum

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "ShardSums",
    "RunPlan",
    "kernel_key",
    "ShardLedger",
    "remove_stale_temporaries",
]

#: ``nngp_ppl_format`` attribute of a checkpoint file.
CHECKPOINT_FORMAT = "nngp_ppl.sampling.checkpoint"
#: Layout version of a checkpoint file.
CHECKPOINT_VERSION = 1


class ShardSums(NamedTuple):
    """Float64 sums of one shard (or of several, folded).

    ``moments``: ``{order: (T,)}`` for :func:`nngp_ppl.sampling.stats.accumulated_orders`;
    ``squares``: ``{order: (T,)}`` with ``covariance=False``, else ``None``;
    ``tails``: ``{order: (2, T)}``, the power sums p = 3, 4 of each measured order.
    """

    moments: dict
    squares: dict | None
    tails: dict


@dataclass(frozen=True)
class RunPlan:
    """What a sampling run draws and how it is cut into shards.

    ``batch`` and ``shard`` hold, per width (aligned with ``widths``), the networks per
    compiled step and per shard; ``shard`` is a multiple of ``batch``. ``X`` is stored as
    nested tuples so that plans compare and serialise exactly.
    """

    net: Ensemble
    X: tuple
    widths: tuple[int, ...]
    n_nets: int
    orders: tuple[int, ...]
    seed: int
    start: int
    covariance: bool
    batch: tuple[int, ...]
    shard: tuple[int, ...]
    #: JSON of the accumulation kernel's :func:`nngp_ppl.sampling._native.identity` that summed the
    #: shards ('' until an executor adopts one, and in checkpoints written before it was
    #: recorded); compared by :meth:`ShardLedger.adopt_kernel`, not by :meth:`differences`.
    kernel: str = ""

    @property
    def k(self) -> int:
        return len(self.X)

    @property
    def inputs(self) -> np.ndarray:
        return np.asarray(self.X, dtype=np.float64)

    def batch_size(self, width: int) -> int:
        return self.batch[self.widths.index(width)]

    def shard_size(self, width: int) -> int:
        return self.shard[self.widths.index(width)]

    def shards(self, width: int) -> list[tuple[int, int]]:
        """``(start, count)`` of each shard at this width, in index order."""
        size = self.shard_size(width)
        return [(self.start + a, min(size, self.n_nets - a)) for a in range(0, self.n_nets, size)]

    def tasks(self) -> list[tuple[int, int]]:
        """All ``(width, shard index)`` pairs of the run, widths in the plan's order."""
        return [(w, i) for w in self.widths for i in range(len(self.shards(w)))]

    def describe(self) -> dict:
        """JSON-ready description (provenance of the checkpoint file)."""
        return {
            "ensemble": self.net.to_dict(), "X": [list(p) for p in self.X],
            "widths": list(self.widths), "n_nets": self.n_nets, "orders": list(self.orders),
            "seed": self.seed, "start": self.start, "covariance": self.covariance,
            "batch": list(self.batch), "shard": list(self.shard),
            **({"kernel": json.loads(self.kernel)} if self.kernel else {}),
        }

    @classmethod
    def from_description(cls, d: dict) -> RunPlan:
        return cls(
            net=ensemble_from_dict(d["ensemble"]), X=tuple(tuple(float(v) for v in p)
                                                           for p in d["X"]),
            widths=tuple(int(w) for w in d["widths"]), n_nets=int(d["n_nets"]),
            orders=tuple(int(n) for n in d["orders"]), seed=int(d["seed"]),
            start=int(d["start"]), covariance=bool(d["covariance"]),
            batch=tuple(int(b) for b in d["batch"]), shard=tuple(int(s) for s in d["shard"]),
            kernel=json.dumps(d["kernel"], sort_keys=True) if d.get("kernel") else "",
        )

    def differences(self, other: RunPlan, *, sizes: bool = True) -> list[str]:
        """Names of the fields in which two plans differ (``sizes``: also batch and shard)."""
        fields = ["net", "X", "widths", "n_nets", "orders", "seed", "start", "covariance"]
        if sizes:
            fields += ["batch", "shard"]
        return [f for f in fields if getattr(self, f) != getattr(other, f)]

    # --- flat layout of one width's sums -----------------------------------------------------
    def _segments(self) -> list[tuple[str, int, tuple[int, ...]]]:
        k = self.k
        segs = [("moments", m, (len(_tuples.distinct_tuples(k, m)),))
                for m in accumulated_orders(self.orders, self.covariance)]
        if not self.covariance:
            segs += [("squares", n, (len(_tuples.distinct_tuples(k, n)),)) for n in self.orders]
        segs += [("tails", n, (len(TAIL_POWERS), len(_tuples.distinct_tuples(k, n))))
                 for n in self.orders]
        return segs

    def n_values(self) -> int:
        return sum(int(np.prod(shape)) for _, _, shape in self._segments())

    def flatten(self, sums: ShardSums) -> np.ndarray:
        parts = []
        for kind, m, shape in self._segments():
            arr = np.asarray(getattr(sums, kind)[m], dtype=np.float64)
            if arr.shape != shape:
                raise ValueError(f"{kind}[{m}] has shape {arr.shape}, expected {shape}")
            parts.append(arr.ravel())
        return np.concatenate(parts)

    def unflatten(self, flat: np.ndarray) -> ShardSums:
        out = {"moments": {}, "squares": None if self.covariance else {}, "tails": {}}
        pos = 0
        for kind, m, shape in self._segments():
            size = int(np.prod(shape))
            out[kind][m] = np.array(flat[pos:pos + size], dtype=np.float64).reshape(shape)
            pos += size
        return ShardSums(**out)


def kernel_key(identity: dict) -> tuple:
    """The part of an accumulation kernel's identity (:func:`nngp_ppl.sampling._native.identity`)
    that fixes the sums' bits: for the C kernel its source hash and numerics flags (the
    compiler, CPU and ISA clone are left out, since every build with those flags sums alike:
    :mod:`nngp_ppl.sampling._native`), for the XLA kernel the platform and the jax version."""
    if identity.get("kernel") == "c":
        return ("c", identity.get("source"), identity.get("numerics"))
    return ("xla", identity.get("platform"), identity.get("jax"))


class ShardLedger:
    """Shard results of one run, folded per width in shard-index order (module docstring)."""

    def __init__(self, plan: RunPlan):
        self.plan = plan
        zero = plan.unflatten(np.zeros(plan.n_values()))
        self._folded = {w: plan.flatten(zero) for w in plan.widths}
        self._n_folded = dict.fromkeys(plan.widths, 0)
        self._pending: dict[tuple[int, int], np.ndarray] = {}

    # --- progress ---------------------------------------------------------------------------
    def done(self, width: int, index: int) -> bool:
        return index < self._n_folded[width] or (width, index) in self._pending

    def todo(self) -> list[tuple[int, int]]:
        """``(width, shard index)`` of the shards still to compute, in plan order."""
        return [t for t in self.plan.tasks() if not self.done(*t)]

    @property
    def complete(self) -> bool:
        return not self.todo()

    def networks_done(self) -> int:
        """Networks whose sums the ledger holds (all widths together)."""
        return sum(count for w in self.plan.widths
                   for i, (_, count) in enumerate(self.plan.shards(w)) if self.done(w, i))

    def shards_done(self) -> int:
        return sum(self._n_folded.values()) + len(self._pending)

    def adopt_kernel(self, identity: dict) -> None:
        """Record the accumulation kernel (:func:`nngp_ppl.sampling._native.identity`) that sums the
        shards still to do; refuse one whose sums would differ in their bits from the
        kernel that summed the shards already held (a resume on another platform, without
        the C compiler, or with another kernel version)."""
        saved = json.loads(self.plan.kernel) if self.plan.kernel else None
        if saved and self.shards_done() and kernel_key(saved) != kernel_key(identity):
            raise NNGPInputError(
                f"checkpoint: its {self.shards_done()} finished shards were summed by the "
                f"accumulation kernel {kernel_key(saved)}, and this run would sum the rest "
                f"with {kernel_key(identity)}, so the run's sums would mix two roundings; "
                "resume where the C kernel builds as before (or with the same "
                "NNGP_PPL_KERNEL and platform), or delete the checkpoint to start over")
        self.plan = dataclasses.replace(self.plan, kernel=json.dumps(identity, sort_keys=True))

    # --- adding -----------------------------------------------------------------------------
    def add(self, width: int, index: int, sums: ShardSums) -> None:
        """Record shard ``index`` of ``width``; fold it and any waiting successors in order."""
        if width not in self._n_folded or not 0 <= index < len(self.plan.shards(width)):
            raise ValueError(f"no shard {index} at width {width} in this run")
        if self.done(width, index):
            raise ValueError(f"shard {index} at width {width} was already added: it would "
                             "be counted twice")
        self._pending[width, index] = self.plan.flatten(sums)
        while (width, self._n_folded[width]) in self._pending:
            self._folded[width] = self._folded[width] + self._pending.pop(
                (width, self._n_folded[width]))
            self._n_folded[width] += 1

    # --- result -----------------------------------------------------------------------------
    def stats(self) -> CorrelatorStats:
        """The run's statistics; every shard must have been added."""
        missing = self.todo()
        if missing:
            raise ValueError(f"{len(missing)} shards are still missing, e.g. {missing[0]}")
        p = self.plan
        moments, squares, tails, ranges = {}, (None if p.covariance else {}), {}, {}
        for w in p.widths:
            s = p.unflatten(self._folded[w])
            moments[w] = s.moments
            tails[w] = s.tails
            if squares is not None:
                squares[w] = s.squares
            ranges[w] = [(p.start, p.start + p.n_nets)]
        return CorrelatorStats(p.net, p.inputs, p.orders, p.seed, moments, ranges,
                               squares=squares, covariance=p.covariance, tails=tails)

    # --- files ------------------------------------------------------------------------------
    def to_dataset(self):

        p = self.plan
        keys = sorted(self._pending)
        data = {
            "folded": (("width", "value"), np.stack([self._folded[w] for w in p.widths]),
                       {"long_name": "sums of shards 0..folded_shards-1, added in order"}),
            "folded_shards": (("width",), np.asarray([self._n_folded[w] for w in p.widths],
                                                     np.int64)),
        }
        if keys:  # h5netcdf cannot write zero-length chunked variables
            data["pending"] = (
                ("pending", "value"), np.stack([self._pending[key] for key in keys]),
                {"long_name": "sums of shards finished ahead of their predecessors"})
            data["pending_width"] = (("pending",), np.asarray([w for w, _ in keys], np.int64))
            data["pending_shard"] = (("pending",), np.asarray([i for _, i in keys], np.int64))
        ds = xr.Dataset(
            data,
            coords={"width": ("width", np.asarray(p.widths, np.int64))},
            attrs={
                "nngp_ppl_format": CHECKPOINT_FORMAT,
                "nngp_ppl_format_version": CHECKPOINT_VERSION,
                "nngp_ppl_version": __version__,
                "plan": json.dumps(p.describe()),
            },
        )
        ds.attrs["checksum"] = content_checksum(ds)
        return ds

    def save(self, path) -> Path:
        """Write the ledger atomically and durably (temporary file, fsync, rename)."""
        path = Path(path)
        data = netcdf_bytes(self.to_dataset())  # in memory: a full disk is one OSError
        with atomic_path(path) as tmp:
            write_bytes(tmp, data, target=path, durable=True)
        # Make the rename itself durable (POSIX: fsync of the directory entry).
        with contextlib.suppress(OSError):
            fd = os.open(path.parent if str(path.parent) else ".", os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return path

    @classmethod
    def load(cls, path) -> ShardLedger:
        """Read a checkpoint written by :meth:`save`; a damaged file is a clear error."""
        path = Path(path)
        try:
            ds = load_netcdf(path, name="checkpoint", what="checkpoint")
        except NNGPInputError as err:
            raise NNGPInputError(f"{err}; delete it to start the run over") from None
        if ds.attrs.get("nngp_ppl_format") != CHECKPOINT_FORMAT:
            raise NNGPInputError(f"checkpoint: {path} is not an nngp_ppl checkpoint file")
        version = format_version(ds.attrs)
        if version != CHECKPOINT_VERSION:
            err = version_error("checkpoint", path, version, CHECKPOINT_VERSION, "checkpoint")
            raise NNGPInputError(f"{err}; delete it to start the run over")
        try:
            digest = content_checksum(ds)
        except ValueError as err:
            raise NNGPInputError(f"checkpoint: {path} is damaged ({err})") from None
        if str(ds.attrs.get("checksum")) != digest:
            raise NNGPInputError(
                f"checkpoint: {path} is damaged or edited (checksum mismatch); delete it to "
                "start the run over"
            )
        try:
            plan = RunPlan.from_description(json_attr(ds.attrs["plan"], "plan"))
            ledger = cls(plan)
            folded = ds["folded"].values
            counts = ds["folded_shards"].values
            if list(ds["width"].values) != list(plan.widths) or folded.shape[1] != plan.n_values():
                raise ValueError("layout does not match the plan")
            for i, w in enumerate(plan.widths):
                ledger._folded[w] = np.array(folded[i])
                ledger._n_folded[w] = int(counts[i])
                if not 0 <= counts[i] <= len(plan.shards(w)):
                    raise ValueError(f"impossible shard count {counts[i]} at width {w}")
            rows = zip(ds["pending"].values, ds["pending_width"].values,
                       ds["pending_shard"].values, strict=True) if "pending" in ds else ()
            for row, w, i in rows:
                w, i = int(w), int(i)
                if w not in ledger._n_folded or ledger.done(w, i):
                    raise ValueError(f"pending shard {i} at width {w} is not pending")
                ledger._pending[w, i] = np.array(row)
        except (KeyError, ValueError, TypeError, NNGPInputError) as err:
            raise NNGPInputError(f"checkpoint: {path} is damaged or incomplete ({err})") from None
        return ledger


def remove_stale_temporaries(path) -> None:
    """Delete the temporary files a killed :func:`nngp_ppl._io.atomic_path` left beside ``path``."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        return
    for tmp in folder.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()
