"""Exclusive ownership of an output path for the lifetime of one run.

Two processes writing the same result (two ``sample -o x.nc``, two ``reproduce --out d``)
would share checkpoints and temporary files and the last writer would silently win. A check
for an existing file cannot prevent that: both processes may look before either writes. An
advisory ``flock`` taken on a lock file beside the output is atomic in the kernel, is released
by the kernel when the process dies (SIGKILL, power loss: no stale lock to clean by hand), and
makes the second run fail at once, before any work, with a message naming the option.

The lock file is ``.<name>.lock`` in the output's directory (or ``.nngp-ppl.lock`` inside an
output directory). It is removed on release. Removal while another process waits for the same
file would let that process lock an unlinked inode while a third locks a new file, so after
acquiring, :func:`exclusive_lock` checks that the file it holds is still the one at the path,
and retries otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import warnings
from pathlib import Path

from ._checks import NNGPInputError

#: Name of the lock file taken inside an output directory.
DIRECTORY_LOCK_NAME = ".nngp-ppl.lock"

#: Absolute paths of the lock files this process holds (a nested request is granted).
_HELD: set[str] = set()

#: flock errors that mean "this file system cannot lock", not "someone holds the lock".
_UNSUPPORTED = {e for e in (getattr(errno, n, None) for n in ("ENOLCK", "EOPNOTSUPP",
                                                               "ENOTSUP", "ENOSYS")) if e}


def lock_path_for(target, *, directory: bool = False) -> Path:
    """The lock file guarding ``target``: beside a file, inside a directory."""
    target = Path(target)
    if directory:
        return target / DIRECTORY_LOCK_NAME
    return target.parent / f".{target.name}.lock"


def _holder(fd: int) -> str:
    """The pid the current holder wrote into the lock file, for the message (best effort)."""
    with contextlib.suppress(OSError, ValueError):
        data = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if data.isdigit():
            return f" (process {data})"
    return ""


@contextlib.contextmanager
def exclusive_lock(target, *, option: str, directory: bool = False, reentrant: bool = False):
    """Hold an exclusive lock on ``target`` for the ``with`` block, or fail at once.

    ``option`` names what the user gave (e.g. ``"-o"``, ``"--out"``) so that the error reads
    as an answer to their command. The lock's parent directory must exist (the caller creates
    output directories first). Raises :class:`NNGPInputError` if another live process holds
    the lock; never blocks. On a file system without locks it warns (RuntimeWarning) and
    yields ``None`` instead of the lock file's path. ``reentrant``: a lock this process
    already holds is granted again (a library call inside a command that locked first);
    otherwise even this process's own lock refuses.
    """
    path = lock_path_for(target, directory=directory)
    key = os.path.abspath(path)
    if reentrant and key in _HELD:
        # This process holds it already (the CLI locks a checkpoint, then the library it
        # calls locks it again): flock locks belong to an open file, so a second open here
        # would refuse its own holder.
        yield path
        return
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise NNGPInputError(
                f"{option}: cannot create the lock file {path} ({err.strerror}); "
                "the output location must be a writable directory"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _holder(fd)
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise NNGPInputError(
                    f"{option}: {target} is being written by another nngp-ppl run{holder}; "
                    "wait for it to finish or choose another output"
                ) from None
            if err.errno in _UNSUPPORTED:
                # Some network file systems have no flock. Refusing would make the output
                # location unusable; running unguarded is what every run did before.
                warnings.warn(
                    f"{option}: the file system of {path.parent} does not support locks "
                    f"({err.strerror}); nothing stops a second run from writing {target} at "
                    "the same time, so make sure only one does",
                    RuntimeWarning, stacklevel=3,
                )
                with contextlib.suppress(OSError):
                    os.unlink(path)
                yield None
                return
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        # The previous holder removed the file between our open and our flock: start over.
        os.close(fd)
    _HELD.add(key)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield path
    finally:
        _HELD.discard(key)
        # Unlink while still holding the lock, so no one can lock this inode after we let go.
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)
