"""The C kernel cannot break a run (issue 18 part 5, issue 19 section 4).

Each fault is first put in place the way it happens (a truncated or corrupt cache file, a
library of the right name with other symbols, one that sums nothing, a compiler that fails
or builds the wrong thing), and the test checks that sampling still gives the right sums,
with exactly one NativeKernelWarning saying what happened. A cache is damaged after a good
build, so the faulty file sits under the exact name the kernel looks for.

Identity: every build with nngp_ppl.sampling._native.NUMERICS gives the same sums bit for bit
whatever the vector ISA (tested on the baseline, AVX2 and cloned builds); a resume or a
Dask run that would mix kernels of different bits is refused.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

import nngp_ppl
from nngp_ppl import NNGPInputError
from nngp_ppl.sampling import _native, distributed
from nngp_ppl.sampling.checkpoint import ShardLedger, kernel_key
from nngp_ppl.sampling.sampler import plan_run, shard_sums

NET = nngp_ppl.ErfNet(sigma_w=1.1, sigma_b=0.4)
X = [-0.8, 0.1, 0.9]
REAL_CC = shutil.which(_native._compiler()[0])  # before any test sets CC
NOOP = ("#include <stdint.h>\nint64_t nngp_block_size(void) { return 16; }\n"
        "void nngp_accumulate(void) {}\n")


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """The process's own (built or cached) library, and a stand-in compiler that "builds"
    by copying it: rebuilds then run every step of the real build (subprocess, temporary
    file, fsync, rename, checksum) without a minute of compiling on a loaded 2-core box."""
    built = _native._library_or_error()
    if built.lib is None:
        pytest.skip(f"no C kernel here: {built.error}")
    real = REAL_CC
    fake = tmp_path_factory.mktemp("cc") / "cc"
    fake.write_text(f'#!/bin/sh\ncase "$*" in *--version*) exec {real} --version;; esac\n'
                    f'while [ "$1" != -o ]; do shift; done\ncp {built.path} "$2"\n')
    fake.chmod(0o755)
    return built.path, fake


@pytest.fixture
def cache(tmp_path, monkeypatch, good):
    """A private kernel cache holding a good library; rebuilds use the stand-in compiler.
    The process's own kernel is restored afterwards."""
    path, fake = good
    root = tmp_path / "cache"
    root.mkdir()
    shutil.copy(path, root / path.name)
    shutil.copy(_native._checksum_path(path), root / (path.name + ".sha256"))
    monkeypatch.setenv("NNGP_PPL_CACHE_DIR", str(root))
    monkeypatch.setenv("CC", str(fake))
    monkeypatch.delenv("NNGP_PPL_KERNEL", raising=False)
    _forget()
    yield root
    _forget()


def _forget():
    _native._library_or_error.cache_clear()
    _native._warn_once.cache_clear()
    _native._warn_rebuilt_once.cache_clear()


def _cached_library(cache) -> os.PathLike:
    (path,) = cache.glob("accumulate-*.so")
    return path


def _compile(source_text, out, tmp_path, *flags):
    src = tmp_path / "other.c"
    src.write_text(source_text)
    subprocess.run([REAL_CC, *flags, "-fPIC", "-shared", "-o", str(out), str(src)],
                   check=True, capture_output=True)


def _seal(path):
    """Write the checksum a build writes, so that the file passes the checksum check and
    the later checks (load, symbols, self-test) are the ones under test."""
    _native._checksum_path(path).write_text(_native._sha256(path.read_bytes()))


def _sums_with(lib, F, k=3, orders=(2, 4)):
    split = tuple(m for m in nngp_ppl.sampling.stats.accumulated_orders(orders, True)
                  if m > max(orders))
    sums = _native.HostSums(lib, k, orders, split, True)
    sums.add(F)
    return sums.result()


def _exact(F, m):
    from nngp_ppl.tuples import distinct_tuples

    f = F.astype(np.float64)
    return np.prod(f[:, distinct_tuples(F.shape[1], m)], axis=2).sum(axis=0)


def _library_with_one_warning(pattern):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        lib = _native.library()
        again = _native.library()
    native = [w for w in seen if issubclass(w.category, _native.NativeKernelWarning)]
    assert len(native) == 1, [str(w.message) for w in native]
    assert pattern in str(native[0].message), str(native[0].message)
    return lib, again


def _check_kernel_is_right(lib):
    F = np.random.default_rng(1).standard_normal((40, 3)).astype(np.float32)
    got = _sums_with(lib, F).moments
    for m in (2, 4):
        np.testing.assert_allclose(got[m], _exact(F, m), rtol=1e-12)


def test_truncated_cache_is_rebuilt_not_a_sigbus(cache, tmp_path):
    """Before: SIGBUS (exit -7) on the first call into a truncated mmap'd library. Run in
    a child process so that a regression kills the child, not the test session."""
    path = _cached_library(cache)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    code = ("import warnings, numpy as np, nngp_ppl\n"
            "import nngp_ppl.sampling._native as _native\n"
            "warnings.simplefilter('always')\n"
            "with warnings.catch_warnings(record=True) as seen:\n"
            "    lib = _native.library()\n"
            "F = np.ones((32, 3), np.float32)\n"
            "s = _native.HostSums(lib, 3, (2,), (4,), True); s.add(F)\n"
            "print(bool(np.all(s.result().moments[2] == 32)), "
            "sum('rebuilt' in str(w.message) for w in seen))\n")
    env = dict(os.environ)  # the private cache and the stand-in compiler
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["True", "1"]


def test_corrupt_file_under_its_checksum_is_rebuilt(cache):
    """Before: 'invalid ELF header' on every run. Sealed, so the loader itself refuses."""
    path = _cached_library(cache)
    path.write_bytes(b"garbage" * 100)
    _seal(path)
    lib, again = _library_with_one_warning("cannot load the cached library")
    assert lib is again is not None
    _check_kernel_is_right(lib)


def test_damaged_file_fails_its_checksum_and_is_rebuilt(cache):
    path = _cached_library(cache)
    path.write_bytes(b"\x7fELF" + b"\0" * 500)
    lib, _ = _library_with_one_warning("checksum does not match")
    _check_kernel_is_right(lib)
    assert _native._checksum_path(path).read_text() == _native._sha256(path.read_bytes())


def test_library_with_other_symbols_is_rebuilt(cache, tmp_path):
    """Before: AttributeError: undefined symbol: nngp_block_size."""
    path = _cached_library(cache)
    _compile("int foo(void) { return 1; }\n", path, tmp_path)
    _seal(path)
    lib, _ = _library_with_one_warning("is not this kernel")
    _check_kernel_is_right(lib)


def test_noop_library_fails_the_self_test_and_is_rebuilt(cache, tmp_path):
    """Before: all-zero sums, exit 0. The self-test compares with float64 NumPy."""
    path = _cached_library(cache)
    _compile(NOOP, path, tmp_path)
    _seal(path)
    assert "fails its self-test" in _native._load(path)[1]
    lib, _ = _library_with_one_warning("fails its self-test")
    _check_kernel_is_right(lib)


def test_a_compiler_that_builds_the_wrong_thing_falls_back_to_xla(cache, tmp_path, monkeypatch):
    """A rebuild that fails too: the XLA kernel, one warning, and the sums still right."""
    script = tmp_path / "badcc"
    noop = tmp_path / "noop.c"
    noop.write_text(NOOP)
    real = REAL_CC
    script.write_text(f'#!/bin/sh\n'
                      f'case "$*" in *--version*) exec {real} --version;; esac\n'
                      f'while [ "$1" != -o ]; do shift; done\n'
                      f'exec {real} -shared -fPIC -o "$2" {noop}\n')
    script.chmod(0o755)
    monkeypatch.setenv("CC", str(script))
    _cached_library(cache).unlink()
    lib, _ = _library_with_one_warning("fails its self-test")
    assert lib is None
    assert _native.identity("cpu")["kernel"] == "xla"
    stats = nngp_ppl.sample_correlators(NET, X, [3], 32, orders=(2,), progress=False)
    ref = shard_sums(NET, np.asarray(X)[:, None], 3, 0, 0, 32, orders=(2,), covariance=True,
                     batch=32)
    np.testing.assert_allclose(stats.moment_sums(3)[2], ref.moments[2], rtol=1e-5)
    monkeypatch.setenv("NNGP_PPL_KERNEL", "c")
    with pytest.raises(NNGPInputError, match="cannot be built or loaded"):
        _native.library()


def test_no_compiler_falls_back_with_one_warning(cache, monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    lib, _ = _library_with_one_warning("no C compiler")
    assert lib is None


def test_the_library_and_its_checksum_are_fsynced_before_the_rename(cache, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace",
                        lambda a, b: (events.append(f"replace {os.path.basename(b)}"),
                                      real_replace(a, b))[1])
    _cached_library(cache).unlink()
    assert _native.library() is not None
    renames = [i for i, e in enumerate(events) if e.startswith("replace")]
    assert [events[i].split(".so")[-1] for i in renames] == ["", ".sha256"]
    for i in renames:
        assert events[i - 1] == "fsync"  # the file's data, just before its rename
    assert events[-1] == "fsync"  # and the directory entry after the last rename


@pytest.mark.slow  # two real compiles (the cloned build is the process's own), ~17 s of CPU
@pytest.mark.skipif(platform.machine() != "x86_64", reason="the ISA clones are x86-64's")
def test_every_isa_build_gives_the_same_bits(cache, good, tmp_path):
    """The reason builds need no identity check across hosts: with -ffp-contract=off the
    baseline (SSE2), AVX2 and cloned (AVX-512 here, if the CPU has it) builds sum alike.
    A -march=native build (fused multiply-adds) would not: shown on AVX-512/FMA hosts."""
    F = (np.random.default_rng(2).standard_normal((203, 4))
         * np.array([1e-3, 1.0, 3.0, 1e3])).astype(np.float32)
    builds = {"baseline": ("-DNNGP_NO_CLONES",),
              "avx2": ("-DNNGP_NO_CLONES", "-march=x86-64-v3")}
    got = {}
    own = good[0]
    for name, extra in {"cloned": (), **builds}.items():
        out = cache / f"{name}.so"
        if name == "cloned" and b".arch_x86_64_v3" in own.read_bytes():
            # The process's own library is this build: the first of FLAG_SETS (NUMERICS),
            # by the same compiler, and its clone symbols say it did not fall back.
            assert _native.FLAG_SETS[0] == _native.NUMERICS
            shutil.copy(own, out)
        else:
            subprocess.run([REAL_CC, *_native.NUMERICS, *extra, "-fPIC", "-shared",
                            "-o", str(out), str(_native.SOURCE)], check=True,
                           capture_output=True)
        _seal(out)
        lib, error = _native._load(out)
        assert lib is not None, error
        got[name] = _sums_with(lib, F, k=4, orders=(2, 4, 6))
    for name in builds:
        for m, v in got["cloned"].moments.items():
            assert np.array_equal(v, got[name].moments[m]), (name, m)


def _identity(kernel):
    if kernel == "c":
        return {"kernel": "c", "source": "abc", "numerics": "-O3 -ffp-contract=off",
                "compiler": "cc 1", "cpu": "one"}
    return {"kernel": "xla", "platform": "cpu", "jax": "0.0"}


def test_identity_is_recorded_and_a_mixed_resume_is_refused(tmp_path):
    plan = plan_run(NET, X, [3], 128, orders=(2,), seed=5, batch_size=64, shard_size=64)
    ledger = ShardLedger(plan)
    ledger.adopt_kernel(_identity("xla"))  # no shards yet: any kernel may start
    ledger.adopt_kernel(_identity("c"))
    (start, count) = plan.shards(3)[0]
    ledger.add(3, 0, shard_sums(NET, plan.inputs, 3, 5, start, count, orders=(2,),
                                covariance=True, batch=64))
    ledger.save(tmp_path / "ck")
    loaded = ShardLedger.load(tmp_path / "ck")
    assert json.loads(loaded.plan.kernel) == _identity("c")
    # Another compiler or CPU gives the same bits: accepted.
    loaded.adopt_kernel({**_identity("c"), "compiler": "cc 2", "cpu": "two"})
    with pytest.raises(NNGPInputError, match="mix two roundings"):
        loaded.adopt_kernel(_identity("xla"))
    with pytest.raises(NNGPInputError, match="mix two roundings"):
        loaded.adopt_kernel({**_identity("c"), "source": "def"})


def test_resume_under_another_kernel_is_refused(tmp_path, monkeypatch):
    """A real checkpoint, one of two shards done, resumed with the other kernel."""
    monkeypatch.delenv("NNGP_PPL_KERNEL", raising=False)
    plan = plan_run(NET, X, [3], 128, orders=(2,), seed=5, batch_size=64, shard_size=64)
    ledger = ShardLedger(plan)
    here = _native.identity("cpu")
    ledger.adopt_kernel(here)
    ledger.add(3, 0, shard_sums(NET, plan.inputs, 3, 5, 0, 64, orders=(2,), covariance=True,
                                batch=64))
    ledger.save(tmp_path / "ck")
    other = "c" if here["kernel"] == "xla" else "xla"
    if other == "c" and _native.library() is None:
        pytest.skip("no C kernel to switch to")
    monkeypatch.setenv("NNGP_PPL_KERNEL", other)
    with pytest.raises(NNGPInputError, match="mix two roundings"):
        nngp_ppl.sample_correlators(NET, X, [3], 128, orders=(2,), seed=5, progress=False,
                                    checkpoint=tmp_path / "ck", resume=True)
    monkeypatch.setenv("NNGP_PPL_KERNEL", here["kernel"])
    stats = nngp_ppl.sample_correlators(NET, X, [3], 128, orders=(2,), seed=5,
                                        progress=False, checkpoint=tmp_path / "ck",
                                        resume=True)
    assert tuple(stats.network_ranges(3)) == ((0, 128),)


class _Client:
    def __init__(self, kernels):
        self.kernels = kernels

    def run(self, fn):
        mine = distributed._versions()
        return {f"w{i}": (*mine, json.dumps(_identity(k))) for i, k in enumerate(self.kernels)}


def test_dask_workers_with_different_kernels_are_refused():
    with pytest.raises(NNGPInputError, match="different accumulation kernels"):
        distributed._check_workers(_Client(["c", "xla"]))
    assert kernel_key(distributed._check_workers(_Client(["c", "c"]))) == \
        kernel_key(_identity("c"))
