r"""The sampler's CPU accumulation in C: built at first use, called through :mod:`ctypes`.

On CPU devices a shard's step draws and evaluates its networks in JAX as everywhere, and
the monomial sums of :mod:`nngp_ppl.sampling._shard` (orders 2..2 max(orders), the tail sums) are
added on the host by ``nngp_ppl/_accumulate.c`` while the device computes the next batch.
The XLA kernel of :mod:`nngp_ppl.sampling._shard` stays in use on GPUs, and on CPUs where no C
compiler is found (with one :class:`NativeKernelWarning`).

Why C: XLA:CPU runs the accumulation as some forty fused loops and matrix products per
chunk, each a pass over the products in memory (about 0.3 ns per element), and runs the
thin prefix-suffix products at 5-15 GFMA/s. The C kernel keeps a block of 16 networks'
products in cache, builds each order from contiguous runs of the one below (one vector
multiply per 8 products), and multiplies prefixes by suffixes in register tiles of up to
4 x 32 (about 20 GFMA/s in float64, twice the lanes in float32, on one core). On the 2-core
machine its accumulation took 3-4x less CPU time per network than the XLA kernel
(``benchmarks/sampler.py``, which times both in the same run).

Build: the system C compiler (``$CC``, else Python's configured compiler, else ``cc``)
with :data:`NUMERICS` (``-O3 -ffp-contract=off``; with GCC/Clang ``target_clones`` on
x86-64, one clone of the kernel per ISA level, x86-64-v4 (AVX-512), v3 (AVX2) and the
baseline, picked by the loader; without ifunc support the baseline alone) into a cache
directory, ``$NNGP_PPL_CACHE_DIR`` or ``~/.cache/nngp_ppl``, under a name that hashes the
source, the flags, the compiler's version and the machine type. No ``-march=native``: with
fused multiply-adds off and no reassociation every clone and every host performs the same
IEEE operations in the same order, so the sums are the same bit for bit on every x86-64
host (tested: the AVX-512, AVX2 and SSE2 builds agree bitwise). Measured on the AVX-512
test host, the clone build costs nothing against ``-march=native`` (0.017 vs 0.016 s CPU per
20 480 networks, k = 6, orders 2..12), which fused 1082 multiply-adds and so gave sums that
differ in the last bits (relative 4e-4 on cancelling float32 sums) from any other host's.
The AVX2 and baseline code run about 9x slower on the same host (their 16 vector registers
spill the 64-byte tiles).

Loading: the library is compiled into a private directory, fsync'ed, renamed into place
and its SHA-256 written beside it the same way, so concurrent first uses (Dask workers,
test processes) never load a half-written file. Each process checks the cached bytes
against that checksum, loads them from a private copy (a cache file truncated later cannot
SIGBUS the run), binds the two symbols and runs a self-test against float64 NumPy
(:func:`_self_test`, a library that sums nothing or wrongly is refused). A cached library
that fails any of these is rebuilt, with one :class:`NativeKernelWarning`; where the build
or load fails (no compiler, a ``noexec`` cache), the XLA kernel is used, with one
:class:`NativeKernelWarning`. :func:`identity` names the kernel that sums a run's shards;
the run plan and checkpoint record it and a resume or Dask run that would mix kernels is
refused (:func:`kernel_key`). ``NNGP_PPL_KERNEL`` chooses: ``auto`` (default: C where it
builds), ``c`` (C or an error) or ``xla``.

Numerics (the same split as the XLA kernel's): the measured orders and the tail sums are
float64 products of the float32 outputs, summed in float64; the covariance-only orders
(8..12 for orders 2, 4, 6) are float32 products of the float64 ones, summed in float32
over a block of NB = 16 networks and then in float64, so their error is at most
:math:`(N_B + 2)\,2^{-24}\sum|\text{term}|` per block (one rounding of each operand, N_B
of the block's sum), about 1e-6 of the sum of magnitudes and far below the statistical
error of any covariance estimate (relative :math:`\sqrt{2/n} > 10^{-4}` for n < 10^8).
When some input's largest output of a batch has a binary exponent beyond
+-:data:`SAFE_EXPONENT`, the batch's outputs are scaled by exact powers of two
(:math:`2^{-e_a}`, :math:`e_a` that exponent) and its sums scaled back, so no float32
product of up to 12 factors can overflow; scaling commutes with rounding, so the sums are
the same bit for bit as without it wherever both are in range. Each batch is summed from
zero and then added to the shard's totals, and the summation order is fixed by the code
and its tables: a shard's sums are the same bit for bit on every run of the same binary.
Tested against float64 brute force and against the XLA kernel (``tests/test_native.py``).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shlex
import subprocess
import sysconfig
import tempfile
import threading
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import jax
import numpy as np

from .. import tuples as _tuples
from .._checks import NNGPInputError
from .checkpoint import ShardSums, kernel_key  # noqa: F401 -- kernel_key is re-exported
from .stats import accumulated_orders, rows_of

SOURCE = Path(__file__).with_name("_accumulate.c")

#: What fixes the kernel's arithmetic: no fused multiply-adds, no fast-math reassociation.
#: Every build with these flags gives the same sums bit for bit, whatever the host's vector
#: ISA (module docstring, "Build").
NUMERICS = ("-O3", "-ffp-contract=off")

#: Compiler flags, tried in order until one builds: with one clone per x86-64 ISA level
#: (``target_clones``, which needs the loader's ifunc support), then the generic code only.
FLAG_SETS = (NUMERICS, (*NUMERICS, "-DNNGP_NO_CLONES"))

KERNELS = ("auto", "c", "xla")

#: Outputs whose binary exponents all lie within +-SAFE_EXPONENT need no scaling: the
#: float32 products of the covariance-only orders have up to 12 factors, 12 * 8 < 126 (and
#: the float64 ones, x^4 of an order-6 product, 24).
SAFE_EXPONENT = 8


class NativeKernelWarning(RuntimeWarning):
    """The C accumulation kernel could not be built or loaded; the XLA kernel is used."""


def kernel_choice() -> str:
    """``NNGP_PPL_KERNEL``: ``auto`` (default), ``c`` or ``xla`` (module docstring)."""
    choice = os.environ.get("NNGP_PPL_KERNEL", "auto").strip().lower() or "auto"
    if choice not in KERNELS:
        raise NNGPInputError(f"NNGP_PPL_KERNEL must be one of {', '.join(KERNELS)}, "
                             f"got {os.environ['NNGP_PPL_KERNEL']!r}")
    return choice


def cache_dir() -> Path:
    root = os.environ.get("NNGP_PPL_CACHE_DIR")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "nngp_ppl"


def _compiler() -> list[str]:
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return shlex.split(cc)


def _cpu_name() -> str:
    """The CPU's model name (recorded in the kernel's identity; the build does not use it)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("model name", "Hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def _fsync(path) -> None:
    """Make ``path`` (a file, or a directory's entries) durable; best effort."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _publish(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably (temporary file, fsync, rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync(path.parent)


def _build(out: Path) -> str:
    """Compile :data:`SOURCE` to ``out`` with a checksum beside it (``out.sha256``); return
    the error text if every flag set failed."""
    errors = []
    out.parent.mkdir(parents=True, exist_ok=True)
    for flags in FLAG_SETS:
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=".build-") as tmpdir:
            tmp = Path(tmpdir) / "accumulate.so"
            cmd = [*_compiler(), *flags, "-fPIC", "-shared", "-o", str(tmp), str(SOURCE)]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            except (OSError, subprocess.TimeoutExpired) as err:
                proc, detail = None, str(err)
            if proc is not None and proc.returncode == 0:
                data = tmp.read_bytes()
                # The library first, then its checksum: a reader between the two renames
                # sees a mismatch and rebuilds, never an unverified file.
                _publish(out, data)
                _publish(_checksum_path(out), _sha256(data).encode())
                return ""
            detail = detail if proc is None else proc.stderr.strip()[-500:]
            errors.append(f"{shlex.join(cmd[:-4])} ...: {detail}")
    return "; ".join(errors)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _load(path: Path) -> tuple[ctypes.CDLL | None, str]:
    """Load the cached library at ``path`` if it is intact, binds the kernel's symbols and
    passes :func:`_self_test`; else (None, why).

    The bytes are checked against the checksum written at build time and then loaded from
    a private copy (unlinked once mapped), so a cache file truncated or replaced later
    cannot reach the mapped code: loading a truncated file would kill the process with
    SIGBUS on first use, not raise.
    """
    try:
        data = path.read_bytes()
        want = _checksum_path(path).read_text().strip()
    except OSError as err:
        return None, f"cannot read the cached library {path}: {err}"
    if _sha256(data) != want:
        return None, f"the cached library {path} is damaged (its checksum does not match)"
    fd, private = tempfile.mkstemp(suffix=".so", dir=path.parent, prefix=".load-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        lib = ctypes.CDLL(private)
    except OSError as err:
        return None, f"cannot load the cached library {path}: {err}"
    finally:
        Path(private).unlink(missing_ok=True)
    try:
        i64, ptr = ctypes.c_int64, ctypes.c_void_p
        lib.nngp_block_size.restype = i64
        lib.nngp_accumulate.restype = None
        lib.nngp_accumulate.argtypes = [i64, i64, ptr, ptr, i64, i64, ptr, i64, ptr, ptr,
                                        i64, i64, ptr, ptr, ptr, ptr, i64]
    except AttributeError as err:
        return None, f"the cached library {path} is not this kernel ({err})"
    error = _self_test(lib)
    return (None, f"the cached library {path} {error}") if error else (lib, "")


def _self_test(lib: ctypes.CDLL) -> str:
    """'' if ``lib`` sums a fixed batch like float64 NumPy; else what it got wrong.

    Three inputs, orders 2 and 4 with the covariance (so orders 2..8, the float32 tiles
    included), 37 networks (two blocks and a part-block), outputs spread past
    2^+-:data:`SAFE_EXPONENT` in the second half so the scaled path runs too. Tolerance:
    the float32 bound of the module docstring, (NB + 2) 2^-24 sum|terms|.
    """
    try:
        if int(lib.nngp_block_size()) != 16:
            return f"has block size {int(lib.nngp_block_size())}, not 16"
        F = np.random.default_rng(0).standard_normal((37, 3)).astype(np.float32)
        wide = F * np.array([1e-3, 1.0, 1e3], np.float32)
        split = tuple(m for m in accumulated_orders((2, 4), True) if m > 4)
        sums = HostSums(lib, 3, (2, 4), split, True)
        sums.add(F)
        sums.add(wide)
        got = sums.result().moments
    except Exception as err:  # noqa: BLE001 -- any failure of a foreign library disqualifies it
        return f"fails its self-test ({type(err).__name__}: {err})"
    f = np.concatenate([F, wide]).astype(np.float64)
    for m, value in got.items():
        terms = np.prod(f[:, _tuples.distinct_tuples(3, m)], axis=2)
        bound = 18 * 2.0**-24 * np.abs(terms).sum(axis=0) + 1e-300
        if value.shape != bound.shape or not np.all(np.abs(value - terms.sum(axis=0)) <= bound):
            return f"fails its self-test (order-{m} sums differ from float64 NumPy)"
    return ""


_LOCK = threading.Lock()


@dataclass(frozen=True)
class _Built:
    lib: ctypes.CDLL | None
    error: str
    identity: dict
    #: why a cached library was rebuilt ('' if it loaded, or none was cached)
    rebuilt: str = ""
    #: the cache file it was loaded from
    path: Path | None = None


@cache
def _library_or_error() -> _Built:
    """The kernel, loaded from the cache or (re)built: a cached library that cannot be
    loaded, or fails its self-test, is rebuilt once; if that fails too, the error."""
    source = SOURCE.read_bytes()
    try:
        version = subprocess.run([*_compiler(), "--version"], capture_output=True, text=True,
                                 timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as err:
        return _Built(None, f"no C compiler ({_compiler()[0]}): {err}", {})
    key = _sha256(source + repr(FLAG_SETS).encode() + version.encode()
                  + platform.machine().encode())[:20]
    path = cache_dir() / f"accumulate-{key}.so"
    identity = {"kernel": "c", "source": _sha256(source)[:16], "numerics": " ".join(NUMERICS),
                "compiler": (version.splitlines() or ["?"])[0].strip(), "cpu": _cpu_name()}
    cached_error = ""
    if path.exists():
        lib, cached_error = _load(path)
        if lib is not None:
            return _Built(lib, "", identity, path=path)
    try:
        error = _build(path)
    except OSError as err:
        error = f"cannot write to {path.parent}: {err}"
    if not error:
        lib, error = _load(path)
        if lib is not None:
            return _Built(lib, "", identity, cached_error, path)
    return _Built(None, f"{cached_error}; rebuilt: {error}" if cached_error else error, {})


def library() -> ctypes.CDLL | None:
    """The compiled kernel, building it on first use; None (and one warning) if it cannot
    be built or loaded, or if ``NNGP_PPL_KERNEL=xla``."""
    choice = kernel_choice()
    if choice == "xla":
        return None
    with _LOCK:
        built = _library_or_error()
    if built.rebuilt:
        _warn_rebuilt_once(built.rebuilt)
    if built.lib is None:
        if choice == "c":
            raise NNGPInputError(
                f"NNGP_PPL_KERNEL=c but the C kernel cannot be built or loaded: {built.error}")
        _warn_once(built.error)
    return built.lib


def identity(platform_name: str = "cpu") -> dict:
    """Which accumulation kernel sums shards on a device of ``platform_name``: the C
    kernel's source hash, numerics flags, compiler and CPU, or the XLA kernel's platform
    and jax version. Recorded in the run plan and checkpoint and compared by
    :func:`kernel_key` (the Dask worker check and ``resume``)."""
    if platform_name == "cpu" and library() is not None:
        return dict(_library_or_error().identity)

    return {"kernel": "xla", "platform": platform_name, "jax": jax.__version__}


@cache
def _warn_rebuilt_once(error: str) -> None:
    warnings.warn(f"{error}; rebuilt it (a damaged cache, or another build under its name)",
                  NativeKernelWarning, stacklevel=3)


@cache
def _warn_once(error: str) -> None:
    warnings.warn(f"the sampler's C accumulation kernel could not be built or loaded "
                  f"({error}); using the XLA kernel, which costs about twice the CPU time "
                  "per network. Install a C compiler (or set CC) to use it; "
                  "NNGP_PPL_KERNEL=xla silences this", NativeKernelWarning, stacklevel=3)


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tables:
    """What :func:`nngp_accumulate` needs for one plan, and how to read its sums back.

    Products (rows) are the materialised orders (2, 4, .., max(orders); 1, 2, ..,
    max(orders) when an order is odd, :func:`nngp_ppl.tuples.materialised_orders`), each in
    lexicographic tuple order, concatenated (``offset[m]``: first row of order m); the C
    kernel stores row r at column k + r of its scratch rows.
    """

    k: int
    rows: int
    offset: dict
    mseg: np.ndarray
    grp: np.ndarray
    prefix: np.ndarray
    acc_len: int
    #: per row: how often each input index occurs (the row's scale is 2^(counts @ e))
    counts: np.ndarray
    #: per acc entry: (prefix row, suffix row), to scale the products back
    acc_rows: np.ndarray
    #: split order -> (acc positions, rows of those m-tuples in canonical order)
    extract: dict

    @property
    def padded_rows(self) -> int:
        return -(-self.rows // 8) * 8

    @property
    def scratch_width(self) -> int:
        return self.k + self.padded_rows + 8


@cache
def tables(k: int, orders: tuple[int, ...], split: tuple[int, ...]) -> Tables:
    """The C kernel's tables for k inputs, measured ``orders`` and covariance-only orders
    ``split`` (:class:`nngp_ppl.sampling._shard.StepPlan`)."""
    mats = _tuples.materialised_orders(orders)
    odd = _tuples.has_odd(orders)
    size = {m: len(_tuples.distinct_tuples(k, m)) for m in mats}
    offset = dict(zip(mats, np.cumsum([0] + [size[m] for m in mats]).tolist(), strict=False))
    rows = sum(size.values())
    # Order 1 (plans with odd orders): a copy of the outputs (scalar column -1: factor 1).
    mseg = [(k + offset[1], 0, k, -1)] if odd else []
    if 2 in offset:
        mseg += [(k + offset[2] + a * k - a * (a - 1) // 2, a, k - a, a) for a in range(k)]
    pairs = _tuples.distinct_tuples(k, 2)
    for m in (m for m in mats if m >= 3):
        start, pos = _tuples.first_index_starts(k, m - 2), offset[m]
        for i, (_, b) in enumerate(pairs):
            n = size[m - 2] - start[b]
            mseg.append((k + pos, k + offset[m - 2] + start[b], n, k + offset[2] + i))
            pos += n
        assert pos == offset[m] + size[m]
    counts = np.concatenate([_tuples.index_counts(k, m) for m in mats]).astype(np.int64)

    # Each tile row: acc[row, j] += sum_b (scalar column)_b (column t0 + j)_b, j < npad;
    # (scalar row, first column row, npad, m, wanted j, rows of those m-tuples).
    tile_rows = []
    for m in split:
        p, q = _tuples.prefix_suffix_orders(m, odd)
        pre, suf = _tuples.distinct_tuples(k, p), _tuples.distinct_tuples(k, q)
        start = _tuples.first_index_starts(k, q)
        for d in range(k):
            sel = np.flatnonzero(pre[:, -1] == d)
            n = size[q] - start[d]
            if len(sel) == 0 or n == 0:
                continue
            npad, ppad = -(-n // 8) * 8, -(-size[p] // 8) * 8
            if n * ppad < len(sel) * npad:
                # Few suffixes (one, for d = k - 1): each suffix against the whole prefix
                # block, vectorised over the prefixes, instead of padding the suffixes.
                for t in range(start[d], size[q]):
                    joined = np.concatenate([pre[sel], np.repeat(suf[t][None], len(sel), 0)],
                                            axis=1)
                    tile_rows.append((offset[q] + t, offset[p], ppad, m, sel,
                                      rows_of(k, joined)))
                continue
            for r in sel:
                joined = np.concatenate([np.repeat(pre[r][None], n, 0), suf[start[d]:]],
                                        axis=1)
                tile_rows.append((offset[p] + r, offset[q] + start[d], npad, m, np.arange(n),
                                  rows_of(k, joined)))
    # Rows that sweep the same columns form one group (register tiles of up to 4 rows).
    grp, prefix, acc_rows, acc_len = [], [], [], 0
    extract = {m: ([], []) for m in split}
    by_columns: dict = {}
    for row in tile_rows:
        by_columns.setdefault(row[1:3], []).append(row)
    for (first, npad), rows_ in by_columns.items():
        grp.append((len(prefix), len(rows_), k + first, npad, acc_len))
        for scalar, _, _, m, wanted, dest in rows_:
            prefix.append(k + scalar)
            extract[m][0].append(acc_len + wanted)
            extract[m][1].append(dest)
            acc_rows.append(np.stack([np.full(npad, scalar),
                                      np.minimum(first + np.arange(npad), rows - 1)], axis=1))
            acc_len += npad
    extract = {m: (np.concatenate(pos), np.concatenate(dest)) for m, (pos, dest) in
               extract.items()}
    for m, (_, dest) in extract.items():  # every m-tuple exactly once
        assert np.array_equal(np.sort(dest), np.arange(len(_tuples.distinct_tuples(k, m))))
    return Tables(k, rows, offset, np.asarray(mseg, np.int64).ravel(),
                  np.asarray(grp, np.int64).ravel(), np.asarray(prefix, np.int64), acc_len,
                  counts, np.concatenate(acc_rows) if acc_rows else np.zeros((0, 2), np.int64),
                  extract)


# ---------------------------------------------------------------------------------------------
# accumulation
# ---------------------------------------------------------------------------------------------
class HostSums:
    """Running float64 sums of one shard on the host, batch by batch (C kernel).

    One array holds them, in the C kernel's layout: ``[mom | cubes | fourth powers |
    squares (covariance=False only) | acc]`` (``nngp_accumulate`` in ``_accumulate.c``).
    """

    def __init__(self, lib: ctypes.CDLL, k: int, orders: tuple[int, ...],
                 split: tuple[int, ...], covariance: bool):
        self._lib = lib
        self._block = int(lib.nngp_block_size())
        self.orders, self.split, self.covariance = orders, split, covariance
        self.t = tables(k, orders, split)
        tv = self.t.padded_rows
        self._parts = 3 if covariance else 4
        size = self._parts * tv + self.t.acc_len
        self.total = np.zeros(size)
        self._buf = np.zeros(size)
        self._scratch = np.zeros((self._block, self.t.scratch_width))
        self._scratch32 = np.zeros((self._block, self.t.scratch_width), np.float32)

    def _views(self, a):
        """(mom, tails (2, T), squares or None, acc) views of a layout-``a`` array."""
        t, tv = self.t, self.t.padded_rows
        return (a[:t.rows], a[tv:3 * tv].reshape(2, tv)[:, :t.rows],
                None if self.covariance else a[3 * tv:3 * tv + t.rows],
                a[self._parts * tv:])

    def add(self, f) -> None:
        """Add a batch of float32 outputs ``f`` (n, k) (masked rows zero) to the sums.

        The batch is summed from zero and then added to the totals (the same rounding
        whatever came before). Outputs are scaled only when some input's largest
        magnitude is outside 2^+-:data:`SAFE_EXPONENT`; scaling by powers of two commutes
        with rounding, so the sums are the same bit for bit either way.
        """
        t = self.t
        f = np.ascontiguousarray(f, np.float32)
        if len(f) % self._block:
            f = np.concatenate([f, np.zeros((-len(f) % self._block, t.k), np.float32)])
        _, e = np.frexp(np.max(np.abs(f), axis=0))
        scaled = bool(np.any(np.abs(e) > SAFE_EXPONENT))
        e = e.astype(np.int64) if scaled else np.zeros(t.k, np.int64)
        scale = np.ldexp(1.0, -e)  # held here: ctypes keeps only the address
        ptr = _pointer
        self._lib.nngp_accumulate(
            len(f), t.k, ptr(f), ptr(scale), t.rows, len(t.mseg) // 4,
            ptr(t.mseg), len(t.grp) // 5, ptr(t.grp), ptr(t.prefix), int(not self.covariance),
            t.acc_len, ptr(self._buf), None if scaled else ptr(self.total),
            ptr(self._scratch), ptr(self._scratch32), t.scratch_width)
        if scaled:  # scale the batch's sums back exactly, then add them
            x = t.counts @ e
            mom, tails, squares, acc = self._views(self._buf)
            tot = self._views(self.total)
            tot[0][:] += np.ldexp(mom, x)
            tot[1][:] += np.ldexp(tails, np.array([[3], [4]]) * x)
            if squares is not None:
                tot[2][:] += np.ldexp(squares, 2 * x)
            tot[3][:] += np.ldexp(acc, x[t.acc_rows].sum(axis=1))

    def result(self) -> ShardSums:
        t = self.t
        mom, tails, squares, acc = self._views(self.total)
        moments = {m: mom[t.offset[m]:t.offset[m] + len(_tuples.distinct_tuples(t.k, m))]
                   for m in t.offset}
        for m, (positions, dest) in t.extract.items():
            v = np.empty(len(dest))
            v[dest] = acc[positions]
            moments[m] = v

        def measured(v):
            return {n: v[..., t.offset[n]:t.offset[n] + len(_tuples.distinct_tuples(t.k, n))]
                    .copy() for n in self.orders}

        return ShardSums(
            moments={m: np.array(moments[m])
                     for m in accumulated_orders(self.orders, self.covariance)},
            squares=None if squares is None else measured(squares),
            tails=measured(tails),
        )


def _pointer(a):
    return None if a is None else a.ctypes.data
