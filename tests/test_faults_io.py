"""Faults of issue 19 §4 (sampler and files): each one reproduced, each one a clear error.

A user's ensemble whose outputs have the wrong shape or are not finite, a kernel that is
not a covariance, a full disk, a device node or read-only file as the output, two runs on
one checkpoint, a file that names code to import, a damaged format version or JSON
attribute, Ctrl-C while the command starts, a refused resume, a damaged manifest.
Command-line cases assert a non-zero exit, one line on stderr and no traceback.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
import types
import uuid
from dataclasses import dataclass
from typing import ClassVar

import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

import nngp_ppl
import nngp_ppl.ensembles.core as ensembles
from nngp_ppl import CorrelatorStats, NNGPInputError, _io, _lock, sample_correlators
from nngp_ppl.cli.main import main
from nngp_ppl.sampling.checkpoint import ShardLedger

X4 = np.array([-1.0, -0.3, 0.4, 1.0])


# ---------------------------------------------------------------------------------------------
# a user's own ensembles with faults (module level: the CLI names them by import path)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExtraColumnNet(nngp_ppl.ErfNet):
    """Outputs of shape (B, n + 1): the C kernel would read them with the wrong stride."""

    name: ClassVar[str] = "extra_column"

    def network_outputs(self, keys, X, width, dtype=jnp.float32):
        f = super().network_outputs(keys, X, width, dtype)
        return jnp.concatenate([f, f[:, :1]], axis=1)


@dataclass(frozen=True)
class FlatNet(nngp_ppl.ErfNet):
    """Outputs of shape (B * n,): the right number of values in the wrong shape."""

    name: ClassVar[str] = "flat"

    def network_outputs(self, keys, X, width, dtype=jnp.float32):
        return super().network_outputs(keys, X, width, dtype).reshape(-1)


@dataclass(frozen=True)
class NaNNet(nngp_ppl.ErfNet):
    """One NaN output, in network 3 of the first batch."""

    name: ClassVar[str] = "nan_net"

    def network_outputs(self, keys, X, width, dtype=jnp.float32):
        return super().network_outputs(keys, X, width, dtype).at[3, 0].set(jnp.nan)


@dataclass(frozen=True)
class InfNet(nngp_ppl.ErfNet):
    """Infinite outputs wherever a network's first output exceeds 1 (about 1 in 3)."""

    name: ClassVar[str] = "inf_net"

    def network_outputs(self, keys, X, width, dtype=jnp.float32):
        f = super().network_outputs(keys, X, width, dtype)
        return jnp.where(f[:, :1] > 1.0, jnp.inf, f)


@dataclass(frozen=True)
class NegativeKernelNet(nngp_ppl.ErfNet):
    name: ClassVar[str] = "negative_kernel"

    def traced_kernel(self, X, Y):
        return -super().traced_kernel(X, Y)


@dataclass(frozen=True)
class AsymmetricKernelNet(nngp_ppl.ErfNet):
    name: ClassVar[str] = "asymmetric_kernel"

    def traced_kernel(self, X, Y):
        return super().traced_kernel(X, Y) + 0.1 * X[:, :1]


@dataclass(frozen=True)
class IndefiniteKernelNet(nngp_ppl.ErfNet):
    """K(x, y) = 1 - (x - y)^2: symmetric, unit diagonal, and indefinite (the 2x2 minor of
    x = -1, 1 has determinant 1 - 9 < 0)."""

    name: ClassVar[str] = "indefinite_kernel"

    def traced_kernel(self, X, Y):
        return 1.0 - (X[:, :1] - Y[:, 0][None, :]) ** 2


@dataclass(frozen=True)
class NaNKernelNet(nngp_ppl.ErfNet):
    name: ClassVar[str] = "nan_kernel"

    def traced_kernel(self, X, Y):
        K = super().traced_kernel(X, Y)
        return jnp.where(X[:, :1] > 0.9, jnp.nan, K)


def one_line_error(capsys, code, *, status=2) -> str:
    """The CLI's refusal: the status, one line on stderr, no traceback."""
    err = capsys.readouterr().err
    assert code == status, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def proc_one_line(proc, status) -> str:
    assert proc.returncode == status, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.fixture(params=["c", "xla"])
def kernel(request, monkeypatch):
    """Both accumulation kernels: the per-batch checks must guard each."""
    monkeypatch.setenv("NNGP_PPL_KERNEL", request.param)
    if request.param == "c" and nngp_ppl.sampling._native.library() is None:
        pytest.skip("no C compiler: the C kernel cannot be built here")
    return request.param


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "run.nc"
    stats = sample_correlators(nngp_ppl.ErfNet(), X4, [5], 256, orders=(2, 4, 6), seed=1,
                               progress=False)
    stats.to_netcdf(path)
    return path


def rewrite(src, dst, **attrs):
    """``src`` with root attributes changed and the checksum recomputed, as anyone can."""
    ds = xr.load_dataset(src, engine="h5netcdf")
    ds.attrs.update(attrs)
    ds.attrs[_io.CHECKSUM_ATTR] = _io.content_checksum(ds)
    ds.to_netcdf(dst, engine="h5netcdf")
    return dst


# ---------------------------------------------------------------------------------------------
# 1. a user's ensemble: output shape and finiteness per batch, kernel symmetry and PSD
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [ExtraColumnNet, FlatNet])
def test_outputs_of_the_wrong_shape_are_refused_by_both_kernels(kernel, cls):
    # Before: (B, n + 1) was read with a stride of n by the C kernel, exit 0 and a
    # plausible G2 (measured 1.33, 1.15, 0.55, 0.44).
    with pytest.raises(NNGPInputError, match=r"must return one real output per network and "
                                             r"input, shape .* = \(\d+, 4\), but returned "
                                             r"an array of shape"):
        sample_correlators(cls(), X4, [5], 64, orders=(2, 4), progress=False)


@pytest.mark.parametrize("cls", [NaNNet, InfNet])
def test_nonfinite_outputs_are_refused_naming_width_and_networks(kernel, cls):
    # Before: the NaN was summed and the file held an all-NaN G2.
    with pytest.raises(NNGPInputError, match=r"outputs of networks 0\.\.\d+ at width 5 are "
                                             r"NaN or infinite"):
        sample_correlators(cls(), X4, [5], 64, orders=(2, 4), progress=False)


def test_a_nonfinite_later_batch_names_that_batch(kernel):
    @dataclass(frozen=True)
    class LateNaN(nngp_ppl.ErfNet):
        name: ClassVar[str] = "late_nan"

        def network_outputs(self, keys, X, width, dtype=jnp.float32):
            f = super().network_outputs(keys, X, width, dtype)
            # NaN for network 40 only: identified by its key, not by its row.
            hit = jnp.all(keys == nngp_ppl.ensembles.core.network_keys(0, width, 40, 1)[0], axis=-1)
            return jnp.where(hit[:, None], jnp.nan, f)

    with pytest.raises(NNGPInputError, match=r"networks 32\.\.63 at width 3"):
        sample_correlators(LateNaN(), X4, [3], 64, orders=(2,), batch_size=32, shard_size=32,
                           progress=False)


def test_the_cli_refuses_nonfinite_outputs_in_one_line(tmp_path, capsys):
    out = tmp_path / "nan.nc"
    code = main(["sample", "--ensemble", f"{__name__}:NaNNet", "--inputs", "-1,1",
                 "--widths", "4", "--n-nets", "64", "--no-progress", "-o", str(out)])
    line = one_line_error(capsys, code)
    assert "NaN or infinite" in line and "width 4" in line
    assert not out.exists() and not list(tmp_path.glob(".*tmp"))


@pytest.mark.parametrize(("cls", "what"), [
    (NegativeKernelNet, "not positive semi-definite"),
    (IndefiniteKernelNet, "not positive semi-definite"),
    (AsymmetricKernelNet, "not symmetric"),
    (NaNKernelNet, r"not finite on these inputs \(4 of the 4x4 entries"),
])
def test_kernels_that_are_not_covariances_are_refused(cls, what):
    # Before: all three passed kernel(), sample, fit and infer.
    with pytest.raises(NNGPInputError, match=what):
        cls().kernel(X4)


def test_the_kernel_check_passes_singular_kernels_of_the_package():
    # The tolerance must not refuse a true covariance that is singular to round-off:
    # repeated and nearly repeated inputs, a rank-1 ReLU kernel (sigma_b = 0, x > 0), a
    # quadrature kernel, a Monte Carlo kernel.
    X = np.array([0.0, 1e-9, 0.5, 0.5, 1.0])
    nngp_ppl.ErfNet().kernel(X)
    K = nngp_ppl.ReLUNet(sigma_b=0.0).kernel(np.array([0.5, 1.0, 2.0, 3.0]))
    assert np.linalg.matrix_rank(K, tol=1e-9 * K.max()) == 1
    nngp_ppl.ActivationNet("tanh").kernel(X)
    nngp_ppl.GaussNet().kernel(np.linspace(-1, 1, 40))


@pytest.mark.parametrize("cls", [NegativeKernelNet, IndefiniteKernelNet, AsymmetricKernelNet])
def test_sample_and_fit_refuse_a_bad_kernel_in_one_line(tmp_path, capsys, cls):
    code = main(["sample", "--ensemble", f"{__name__}:{cls.__name__}", "--inputs",
                 "-1,-0.3,0.4,1", "--widths", "3", "--n-nets", "16", "--no-progress",
                 "-o", str(tmp_path / "s.nc")])
    assert "kernel is not" in one_line_error(capsys, code)
    # A run file written through the Python API (the sampler needs no kernel) must not
    # get through fit either.
    run = tmp_path / "run.nc"
    sample_correlators(cls(), X4, [3], 32, orders=(2, 4, 6), progress=False).to_netcdf(run)
    code = main(["fit", str(run), "--cutoffs", "5", "-o", str(tmp_path / "fit.nc")])
    assert "kernel is not" in one_line_error(capsys, code)
    assert not (tmp_path / "fit.nc").exists()


# ---------------------------------------------------------------------------------------------
# 2. a full disk
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def small_tmpfs(path, size="256k"):
    """A real tmpfs of ``size`` at ``path`` (root only), or skip."""
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk, leave_kib: int) -> None:
    """Fill ``disk`` until about ``leave_kib`` KiB are left."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    with open(disk / "filler", "wb") as fh:
        fh.write(b"\0" * max(0, free - leave_kib * 1024))


def test_a_full_disk_while_writing_a_fit_is_one_line_on_a_real_tmpfs(tmp_path, run_file):
    # Before: exit 139 (a segfault in HDF5 at exit) after h5py tracebacks.
    with small_tmpfs(tmp_path / "disk") as disk:
        fill(disk, 8)
        proc = subprocess.run([sys.executable, "-m", "nngp_ppl.cli.main", "fit", str(run_file),
                               "--cutoffs", "5", "-o", str(disk / "fit.nc")],
                              capture_output=True, text=True, timeout=300)
        line = proc_one_line(proc, 1)
        assert "No space left on device" in line and "fit.nc" in line
        assert sorted(p.name for p in disk.iterdir()) == ["filler"]  # no temporary left


class _FullDisk:
    """What ``open(path, "wb")`` gives on a full disk: writes fail with ENOSPC."""

    def __init__(self, path, mode="r", *args, **kwargs):
        self._fh = open(path, mode, *args, **kwargs)  # noqa: SIM115 (closed in __exit__)

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()


@pytest.fixture
def full_disk(monkeypatch):
    # Only the writer of the package's files sees the full disk (pytest's own files and
    # HDF5's in-memory image do not).
    monkeypatch.setattr(_io, "open", _FullDisk, raising=False)


def _posterior_tree():
    post = xr.Dataset({"lam": (("chain", "draw"), np.zeros((2, 3)))})
    return xr.DataTree.from_dict({"/": xr.Dataset(attrs={"a": 1}), "/posterior": post})


@pytest.mark.parametrize("what", ["run", "posterior", "beta", "checkpoint"])
def test_a_full_disk_is_one_oserror_and_leaves_no_temporary(tmp_path, full_disk, what):
    target = tmp_path / f"{what}.nc"
    stats = sample_stats() if what == "run" else None
    with pytest.raises(OSError) as info:
        if what == "run":
            stats.to_netcdf(target)
        elif what == "posterior":
            _io.write_netcdf(_posterior_tree(), target, file_format=_io.POSTERIOR_FORMAT,
                             version=_io.POSTERIOR_VERSION)
        elif what == "beta":
            _io.write_netcdf(_posterior_tree(), target, file_format=_io.BETA_FORMAT,
                             version=_io.BETA_VERSION)
        else:
            plan = nngp_ppl.sampling.sampler.plan_run(nngp_ppl.ErfNet(), X4, [3], 16)
            ShardLedger(plan).save(target)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []


def sample_stats():
    return sample_correlators(nngp_ppl.ErfNet(), X4[:2], [3], 16, orders=(2,),
                              progress=False)


def test_the_cli_reports_a_full_disk_in_one_line(tmp_path, run_file, full_disk, capsys):
    out = tmp_path / "fit.nc"
    code = main(["fit", str(run_file), "--cutoffs", "5", "-o", str(out)])
    line = one_line_error(capsys, code, status=1)
    assert "No space left on device" in line and str(out) in line
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# 3. device nodes and read-only outputs
# ---------------------------------------------------------------------------------------------
def special_file(path):
    """A character device (as root: a copy of /dev/null's node) or else a named pipe."""
    if os.geteuid() == 0:
        with contextlib.suppress(OSError):
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
            return "a character device"
    os.mkfifo(path)
    return "a named pipe"


@pytest.mark.parametrize("command", ["sample", "fit"])
def test_an_output_that_is_a_device_node_is_refused(tmp_path, run_file, capsys, command):
    node = tmp_path / "node"
    kind = special_file(node)
    argv = (["sample", "--ensemble", "erf", "--inputs", "1,2", "--widths", "3", "--n-nets",
             "16", "--no-progress"] if command == "sample" else
            ["fit", str(run_file), "--cutoffs", "5"])
    code = main(argv + ["-o", str(node)])
    line = one_line_error(capsys, code)
    assert f"-o/--output: {node} is {kind}" in line
    mode = os.stat(node).st_mode
    assert stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)  # the node is still there


def test_dev_null_is_refused_as_an_output(capsys):
    code = main(["sample", "--ensemble", "erf", "--inputs", "1,2", "--widths", "3",
                 "--n-nets", "16", "--no-progress", "-o", os.devnull])
    assert "is a character device" in one_line_error(capsys, code)
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_a_read_only_output_is_not_replaced(tmp_path, run_file, capsys):
    out = tmp_path / "fit.nc"
    out.write_text("keep me")
    out.chmod(0o444)
    code = main(["fit", str(run_file), "--cutoffs", "5", "-o", str(out)])
    assert "read-only (mode 444)" in one_line_error(capsys, code)
    assert out.read_text() == "keep me"
    # The Python API refuses too, also when the file turns read-only during the work.
    with pytest.raises(NNGPInputError, match="read-only"):
        sample_stats().to_netcdf(out)
    late = tmp_path / "late.nc"
    with pytest.raises(NNGPInputError, match="read-only"):
        with _io.atomic_path(late) as tmp:
            tmp.write_text("new")
            late.write_text("old")
            late.chmod(0o444)
    assert late.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == [
        "fit.nc", "late.nc"]


# ---------------------------------------------------------------------------------------------
# 4. checkpoints are locked
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def held_by_another_process(target):
    """The lock of ``target`` held by another live process (as a running sample holds it)."""
    lock = _lock.lock_path_for(target)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import fcntl, os, sys
            fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, b"%d" % os.getpid())
            print("locked", flush=True)
            sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_a_run_locks_its_default_checkpoint(tmp_path, monkeypatch, capsys):
    seen = []
    real = nngp_ppl.sampling.sampler._execute

    def spy(ledger, executor, checkpoint, progress):
        seen.append(set(_lock._HELD))
        return real(ledger, executor, checkpoint, progress)

    monkeypatch.setattr(nngp_ppl.sampling.sampler, "_execute", spy)
    out = tmp_path / "a.nc"
    assert main(["sample", "--ensemble", "erf", "--inputs", "1,2", "--widths", "3",
                 "--n-nets", "16", "--no-progress", "-o", str(out)]) == 0
    partial = _lock.lock_path_for(tmp_path / "a.nc.partial")
    assert str(partial) in seen[0]
    assert not _lock._HELD  # released


def test_a_second_run_on_the_same_checkpoint_is_refused(tmp_path, capsys):
    # Before: `sample -o b.nc --checkpoint a.nc.partial` beside a running `sample -o a.nc`
    # took no lock on a.nc.partial and deleted it when it finished.
    partial = tmp_path / "a.nc.partial"
    partial.write_bytes(b"shards of run a")
    with held_by_another_process(partial) as pid:
        code = main(["sample", "--ensemble", "erf", "--inputs", "1,2", "--widths", "3",
                     "--n-nets", "16", "--no-progress", "-o", str(tmp_path / "b.nc"),
                     "--checkpoint", str(partial), "--resume"])
        line = one_line_error(capsys, code)
        assert f"--checkpoint: {partial} is being written by another nngp-ppl run " \
               f"(process {pid})" in line
        with pytest.raises(NNGPInputError, match=r"^checkpoint: .* another nngp-ppl run"):
            sample_correlators(nngp_ppl.ErfNet(), X4, [3], 16, checkpoint=partial,
                               resume=True, progress=False)
    assert partial.read_bytes() == b"shards of run a"
    assert not (tmp_path / "b.nc").exists()


# ---------------------------------------------------------------------------------------------
# 5. reading a file never imports the code it names
# ---------------------------------------------------------------------------------------------
EVIL = """
import pathlib
pathlib.Path({marker!r}).write_text("code ran on open")
from dataclasses import dataclass
from typing import ClassVar
import nngp_ppl

@dataclass(frozen=True)
class Net(nngp_ppl.ErfNet):
    name: ClassVar[str] = {name!r}
"""


@pytest.fixture
def crafted(tmp_path, run_file, monkeypatch):
    """A run file whose ``ensemble`` names an importable module that runs code on import,
    with the checksum recomputed; the session has not named that module."""
    module = f"planted_{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "marker"
    (tmp_path / f"{module}.py").write_text(EVIL.format(marker=str(marker), name=module))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(ensembles, "_ALLOWED_MODULES", set())
    description = {**json.loads(xr.load_dataset(run_file).attrs["ensemble"]),
                   "ensemble": f"{module}:Net"}
    path = rewrite(run_file, tmp_path / "crafted.nc", ensemble=json.dumps(description))
    yield path, module, marker
    sys.modules.pop(module, None)


def test_a_file_naming_a_module_does_not_import_it(crafted, capsys):
    path, module, marker = crafted
    with pytest.raises(NNGPInputError, match=r"never imports the code it names.*"
                                             rf"--ensemble {module}:Net"):
        CorrelatorStats.from_netcdf(path)
    assert not marker.exists() and module not in sys.modules
    code = main(["show", str(path)])
    assert "never imports" in one_line_error(capsys, code)
    assert not marker.exists() and module not in sys.modules


def test_naming_the_module_lets_the_file_be_read(crafted, capsys):
    path, module, marker = crafted
    assert main(["show", "--no-exact", "--ensemble", f"{module}:Net", str(path)]) == 0
    assert marker.exists()  # imported because the user named it
    assert CorrelatorStats.from_netcdf(path).net.name == module


def test_allow_import_in_python(crafted):
    path, module, _ = crafted
    nngp_ppl.allow_import(module)
    assert type(CorrelatorStats.from_netcdf(path).net).__module__ == module


@pytest.mark.parametrize("fn", ["os:system", "subprocess:run", "builtins:exec"])
def test_a_file_cannot_make_a_jax_network_call_a_function(fn, monkeypatch):
    monkeypatch.setattr(ensembles, "_ALLOWED_MODULES", set())
    called = []
    monkeypatch.setattr(os, "system", lambda *a: called.append(a))
    with pytest.raises(NNGPInputError, match=r"JaxNetwork init function .* never imports"):
        ensembles.ensemble_from_dict({"ensemble": "jax_network", "init": fn, "apply": fn,
                                      "d_in": 1, "name": "x"})
    assert not called


def test_an_imported_module_is_looked_up_without_its_getattr(monkeypatch):
    # A module's __getattr__ may import (lazy submodules): a file path resolves through
    # the module's own attributes only, and must name an Ensemble subclass.
    monkeypatch.setattr(ensembles, "_ALLOWED_MODULES", set())
    lazy, asked = types.ModuleType("lazy_module"), []

    def module_getattr(name):
        asked.append(name)
        return NaNNet

    lazy.__getattr__ = module_getattr
    monkeypatch.setitem(sys.modules, "lazy_module", lazy)
    with pytest.raises(NNGPInputError, match="cannot be imported"):
        ensembles.ensemble_class("lazy_module:Net")
    assert asked == []
    with pytest.raises(NNGPInputError, match="not an nngp_ppl.Ensemble subclass"):
        ensembles.ensemble_class("os:path")
    assert ensembles.ensemble_class(f"{__name__}:NaNNet") is NaNNet  # imported: no import


# ---------------------------------------------------------------------------------------------
# 6. damaged attributes: a string format version, deeply nested JSON
# ---------------------------------------------------------------------------------------------
def test_a_string_format_version_is_a_clear_error(tmp_path, run_file, capsys):
    bad = rewrite(run_file, tmp_path / "v.nc", nngp_ppl_format_version="three")
    with pytest.raises(NNGPInputError, match="nngp_ppl_format_version is not an integer"):
        CorrelatorStats.from_netcdf(bad)
    assert "not an integer" in one_line_error(capsys, main(["show", str(bad)]))
    post = tmp_path / "post.nc"
    _io.write_netcdf(_posterior_tree(), post, file_format=_io.POSTERIOR_FORMAT,
                     version=_io.POSTERIOR_VERSION)
    dt = xr.load_datatree(post, engine="h5netcdf")
    dt.attrs["nngp_ppl_format_version"] = "3"
    dt.attrs[_io.CHECKSUM_ATTR] = _io.content_checksum(dt)
    dt.to_netcdf(post, engine="h5netcdf")
    with pytest.raises(NNGPInputError, match="not an integer"):
        _io.read_netcdf(post, name="posterior", what="posterior file", tree=True,
                        file_format=_io.POSTERIOR_FORMAT, version=_io.POSTERIOR_VERSION)


@pytest.mark.parametrize("attr", ["ensemble", "network_ranges"])
def test_deeply_nested_json_is_a_clear_error(tmp_path, run_file, capsys, attr):
    deep = "[" * 100_000 + "]" * 100_000
    bad = rewrite(run_file, tmp_path / "deep.nc", **{attr: deep})
    with pytest.raises(NNGPInputError, match=rf"{attr}' is nested 100000 levels deep"):
        CorrelatorStats.from_netcdf(bad)
    assert "nested" in one_line_error(capsys, main(["show", str(bad)]))


def test_json_depth_ignores_brackets_inside_strings():
    text = json.dumps({"ensemble": "x", "label": "[" * 1000})
    assert _io.json_attr(text, "a")["label"] == "[" * 1000


def test_a_checkpoint_with_a_string_version_or_deep_plan_is_refused(tmp_path):
    plan = nngp_ppl.sampling.sampler.plan_run(nngp_ppl.ErfNet(), X4, [3], 16)
    cp = ShardLedger(plan).save(tmp_path / "cp.partial")
    for attrs, what in (({"nngp_ppl_format_version": "1"}, "not an integer"),
                        ({"plan": "{" * 5000}, "nested")):
        rewrite(cp, tmp_path / "bad.partial", **attrs)
        with pytest.raises(NNGPInputError, match=what):
            ShardLedger.load(tmp_path / "bad.partial")


# ---------------------------------------------------------------------------------------------
# 7. Ctrl-C while starting, a refused resume, a damaged manifest
# ---------------------------------------------------------------------------------------------
def importing_jax(pid: int, timeout: float = 60.0) -> None:
    """Wait until process ``pid`` has loaded JAX's extension: the package's start-up guard
    runs before ``import jax``, and much of the start-up (SciPy, xarray, the commands) is
    still to come. (A Ctrl-C during Python's own start-up, before any of our code runs,
    is Python's to report.)"""
    maps = f"/proc/{pid}/maps"
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with open(maps) as fh:
                if "jaxlib" in fh.read():
                    return
        except OSError:
            time.sleep(1.0)  # no /proc: give it a second
            return
        time.sleep(0.02)


def default_sigint() -> None:
    """Ctrl-C as a user's terminal delivers it: a process started with SIGINT ignored (a
    pytest-xdist worker's children can inherit that) keeps ignoring it, and the guard
    rightly leaves an ignored SIGINT alone."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_while_the_command_starts_is_one_line(tmp_path):
    # Before: a 26-41 line traceback from inside some import (jax, dataclasses, ...).
    for delay in (0.0, 1.0):
        proc = subprocess.Popen(
            [sys.executable, "-m", "nngp_ppl.cli.main", "sample", "--ensemble", "erf", "--inputs",
             "1,2", "--widths", "3", "--n-nets", "1e6", "-o", str(tmp_path / "x.nc")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=default_sigint)
        importing_jax(proc.pid)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        proc.stdout, proc.stderr = proc.communicate(timeout=120)
        line = proc_one_line(proc, 130)
        assert "interrupted" in line
    assert not (tmp_path / "x.nc").exists()


def test_a_refused_resume_does_not_first_announce_itself(tmp_path, capsys):
    cp = tmp_path / "cp.partial"
    sample_correlators(nngp_ppl.ErfNet(), [1.0, 2.0], [3], 16, orders=(2,), seed=0,
                       checkpoint=cp, progress=False)
    argv = ["sample", "--ensemble", "erf", "--inputs", "1,2", "--widths", "3", "--n-nets",
            "16", "--orders", "2", "--no-progress", "--checkpoint", str(cp), "--resume",
            "-o", str(tmp_path / "out.nc")]
    line = one_line_error(capsys, main(argv[:-2] + ["--seed", "5"] + argv[-2:]))
    assert "belongs to a different run" in line and "resuming" not in line
    assert main(argv) == 0
    assert "resuming from" in capsys.readouterr().err


def test_a_damaged_manifest_says_everything_reruns(tmp_path):
    from nngp_ppl.study.manifest import MANIFEST, load_manifest

    said = []
    (tmp_path / MANIFEST).write_text('{"stages": {"sample"')
    assert load_manifest(tmp_path, said.append) == {"stages": {}}
    assert len(said) == 1 and "damaged" in said[0] and "every stage runs again" in said[0]
    (tmp_path / MANIFEST).write_text('{"stages": []}')
    assert load_manifest(tmp_path, said.append) == {"stages": {}} and len(said) == 2
    (tmp_path / MANIFEST).write_text('{"stages": {}}')
    assert load_manifest(tmp_path, said.append) == {"stages": {}} and len(said) == 2


def test_reproduce_dry_run_warns_of_a_damaged_manifest(tmp_path, capsys):
    from nngp_ppl.study.manifest import MANIFEST

    out = tmp_path / "study"
    out.mkdir()
    (out / MANIFEST).write_text("not json")
    assert main(["reproduce", "--preset", "quick", "--dry-run", "--out", str(out)]) == 0
    assert "manifest.json is damaged" in capsys.readouterr().out
