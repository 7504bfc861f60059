"""Robustness of runs: bad input, concurrent writers, resource limits and interruptions.

Each test reproduces one defect from issue 11 (it failed before the fix): the package must
answer a bad request with one clear :class:`NNGPInputError` naming the argument (the CLI:
the option, exit status 2, no traceback) and must never lose or half-write a result.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import textwrap

import pytest

from nngp_ppl import NNGPInputError
from nngp_ppl._lock import exclusive_lock, lock_path_for


# --- exclusive output lock -------------------------------------------------------------------
def test_a_second_writer_of_the_same_output_is_refused_and_the_lock_is_released(tmp_path):
    target = tmp_path / "run.nc"
    with exclusive_lock(target, option="-o") as held:
        assert held == lock_path_for(target)
        with pytest.raises(NNGPInputError, match=r"^-o: .*run\.nc is being written by another"):
            with exclusive_lock(target, option="-o"):
                pass
    # Released and tidied: a later run takes it again and no lock file is left behind.
    with exclusive_lock(target, option="-o"):
        pass
    assert os.listdir(tmp_path) == []


def test_a_lock_held_by_another_process_is_seen_and_dies_with_it(tmp_path):
    # The other process takes the flock directly, so this checks the kernel-level contract
    # rather than our own helper against itself.
    lock = lock_path_for(tmp_path, directory=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import fcntl, os, sys
            fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, b"%d" % os.getpid())
            print("locked", flush=True)
            sys.stdin.read()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(NNGPInputError, match=rf"--out: .* \(process {holder.pid}\)"):
            with exclusive_lock(tmp_path, option="--out", directory=True):
                pass
    finally:
        holder.kill()
        holder.wait()
    # A killed holder leaves its file but not its lock: the next run proceeds.
    assert lock.exists()
    with exclusive_lock(tmp_path, option="--out", directory=True):
        fd = os.open(lock, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)


def test_a_lock_in_a_missing_directory_names_the_option(tmp_path):
    with pytest.raises(NNGPInputError, match=r"^-o: cannot create the lock file"):
        with exclusive_lock(tmp_path / "missing" / "x.nc", option="-o"):
            pass
