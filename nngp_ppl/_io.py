"""Files the package writes: complete or absent, checksummed, checked before any work.

* :func:`atomic_path`: a result file is written under a temporary name and renamed, so an
  interrupted run never leaves a half-written output.
* :func:`output_file`: an output path is checked (a file name, in a directory that exists or
  can be created, writable) before the work that produces it, so a long run never ends in
  "cannot write".
* :func:`content_checksum`, :func:`write_netcdf`, :func:`read_netcdf`: every netCDF file
  carries a SHA-256 ``checksum`` attribute of all its groups, variables and attributes,
  verified on reading, so an edited or damaged file is refused with one clear error instead
  of silently changing a result (a posterior whose ``ensemble`` attribute was edited would
  otherwise give another γ).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import io
import json
import os
import re
import stat
import sys
import tempfile
from pathlib import Path

import h5netcdf
import numpy as np
import xarray as xr

from ._checks import NNGPInputError
from ._memo import BytesLRU

#: Root attribute holding the SHA-256 digest of a file's content.
CHECKSUM_ATTR = "checksum"

#: ``nngp_ppl_format`` and layout version of a coupling posterior (``nngp-ppl infer``);
#: version 3 named its dimensions by the common scheme (``tuple_n``, ``position_n``,
#: ``observation_col``; docs/file_formats.md); version 4 stores every compared model's
#: pointwise log density in ``log_likelihood`` (the ELPD is PSIS-LOO of those) and moved
#: the standard errors ``G{n}_se`` from ``observed_data`` to ``constant_data``.
POSTERIOR_FORMAT, POSTERIOR_VERSION = "nngp_ppl.CouplingPosterior", 4
#: ``nngp_ppl_format`` and layout version of a β-function posterior (``nngp-ppl flow``).
BETA_FORMAT, BETA_VERSION = "nngp_ppl.BetaFunction", 2
#: ``nngp_ppl_format`` and layout version of a lattice file (``nngp-ppl lattice``); version 2
#: named its dimensions by the common scheme.
LATTICE_FORMAT, LATTICE_VERSION = "nngp_ppl.LatticeCorrelators", 2
#: ``nngp_ppl_format`` and layout version of a reproduction's exact summary; version 2 added
#: the stored slopes (``m4_slope`` …, ``gamma_fit_exact``) the report reads.
EXACT_FORMAT, EXACT_VERSION = "nngp_ppl.ExactSummary", 2
#: The connected 6-pt comparison of a second-order stage (nngp_ppl.inference.connected).
SIXPOINT_FORMAT, SIXPOINT_VERSION = "nngp_ppl.ConnectedSixPoint", 1


def check_replaceable(option: str, path) -> None:
    """Refuse to replace ``path`` when it exists and is not a writable regular file.

    The atomic write renames a new file onto the name, which would silently turn a device
    node (``-o /dev/null``, run as root) into a regular file and replace a result its owner
    made read-only (mode 444; root passes every permission check, so the mode bits are
    read, not ``os.access``).
    """
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as err:
        raise NNGPInputError(f"{option}: cannot use {path} ({err.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in (
            (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
            (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"),
            (stat.S_ISDIR, "a directory")) if test(st.st_mode)), "not a regular file")
        raise NNGPInputError(
            f"{option}: {path} is {kind}; results are written to regular files only "
            "(the file is replaced as a whole), so give a file name")
    if not st.st_mode & 0o222:
        raise NNGPInputError(
            f"{option}: {path} exists and is read-only (mode {stat.S_IMODE(st.st_mode):o}); "
            "it will not be replaced: make it writable (chmod u+w) or choose another output")


@contextlib.contextmanager
def atomic_path(path, *, option: str = "path"):
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    An exception or interruption removes the temporary file and leaves ``path`` untouched,
    so an interrupted run never leaves a half-written output. The rename is atomic on
    POSIX file systems because both names live in the same directory. An existing ``path``
    that is not a writable regular file is refused (:func:`check_replaceable`), before and
    again just before the rename.
    """
    path = Path(path)
    check_replaceable(option, path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    os.close(fd)
    # mkstemp creates 0600; give the result the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield Path(tmp)
        check_replaceable(option, path)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------------------------
# output paths, checked before the work
# ---------------------------------------------------------------------------------------------
def output_file(option: str, path, *, inputs=()) -> Path:
    """``path`` as an output file that can be written, else one error naming ``option``.

    Refused: an empty name, a name ending in a path separator or naming a directory (the
    result would be a file called like the directory), the same file as one of ``inputs``
    (it would be overwritten), an existing device node, pipe or read-only file
    (:func:`check_replaceable`), a parent that is a file, and a directory this process cannot
    create files in (probed by creating and removing a temporary file, which is what the
    atomic write will do). A missing parent directory is fine if it can be created.
    """
    text = os.fspath(path) if isinstance(path, (str, os.PathLike)) else None
    if not text:
        raise NNGPInputError(f"{option} must be a file name, got {path!r}")
    if text.endswith(("/", os.sep)):
        raise NNGPInputError(
            f"{option} must be a file name, got {text!r}, which names a directory; "
            f"give the file inside it, e.g. {text.rstrip('/' + os.sep)}/result.nc"
        )
    out = Path(text)
    if out.is_dir():
        raise NNGPInputError(f"{option} must be a file name, got the directory {text}")
    check_replaceable(option, out)
    for src in inputs:
        # Compared whether or not they exist yet: `-o a.nc --plot a.nc` would overwrite.
        src = Path(src)
        if out.resolve() == src.resolve():
            raise NNGPInputError(f"{option} must differ from {src}, which this command "
                                 "also reads or writes")
    parent = out.parent if str(out.parent) else Path(".")
    existing = parent
    while not existing.exists():
        if existing.is_symlink() or existing == existing.parent:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise NNGPInputError(
            f"{option}: cannot write {text}: {existing} is a file, not a directory"
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".probe", dir=existing)
    except OSError as err:
        raise NNGPInputError(
            f"{option}: cannot write {text}: the directory {existing} does not accept new "
            f"files ({err.strerror})"
        ) from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return out


# ---------------------------------------------------------------------------------------------
# attributes read back from a file: never trusted
# ---------------------------------------------------------------------------------------------
#: Deepest nesting of lists and objects a JSON attribute may have. The package writes at
#: most 3 levels (an ensemble description inside a run plan); a crafted file with
#: thousands would make the parser, or any code walking the result, hit Python's
#: recursion limit.
MAX_JSON_DEPTH = 32

_JSON_STRING = re.compile(r'"(?:\\.|[^"\\])*"')


def json_attr(value, key: str):
    """The JSON attribute ``key`` of a file, parsed; ValueError when it is not JSON or is
    nested deeper than :data:`MAX_JSON_DEPTH` (checked before parsing)."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    if not isinstance(text, str):
        raise ValueError(f"attribute {key!r} is not a JSON string")
    bare = np.frombuffer(_JSON_STRING.sub("", text).encode("utf-8", "replace"), np.uint8)
    depth = np.cumsum((bare == ord("[")) | (bare == ord("{")), dtype=np.int64) - np.cumsum(
        (bare == ord("]")) | (bare == ord("}")), dtype=np.int64)
    if depth.size and int(depth.max()) > MAX_JSON_DEPTH:
        raise ValueError(f"attribute {key!r} is nested {int(depth.max())} levels deep (at "
                         f"most {MAX_JSON_DEPTH} are read)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"attribute {key!r} is not valid JSON ({err.msg})") from None
    except RecursionError:
        raise ValueError(f"attribute {key!r} is nested too deeply") from None


def format_version(attrs) -> int | None:
    """The file's ``nngp_ppl_format_version`` as an int; -1 when absent, None when it is
    not an integer (a string, a list, a fraction)."""
    value = attrs.get("nngp_ppl_format_version", -1)
    arr = np.asarray(value)
    if arr.size != 1 or arr.dtype.kind not in "iu":
        return None
    return int(arr.item())


def version_error(name: str, path, got, wanted: int, what: str = "file") -> NNGPInputError:
    """The error for a file whose layout version is not ``wanted`` (``got`` None: not an
    integer at all)."""
    if got is None:
        return NNGPInputError(
            f"{name}: {path} is not a readable {what}: its nngp_ppl_format_version is not "
            f"an integer (this nngp_ppl reads version {wanted}); it was damaged or not "
            "written by nngp_ppl")
    return NNGPInputError(
        f"{name}: {path} has file layout version {got}; this nngp_ppl reads version "
        f"{wanted}: re-run the command that wrote it")


# ---------------------------------------------------------------------------------------------
# checksums
# ---------------------------------------------------------------------------------------------
def canonical_attr(value, *, keep_list: bool = False):
    """JSON-ready form of an attribute value that survives a netCDF round trip.

    netCDF stores a one-element list attribute as a plain value (``orders=[4]`` reads back
    as ``4``) and booleans as integers, so both forms map to the same canonical value: a
    one-element list becomes its element, ``True`` becomes 1. ``keep_list`` keeps the list
    (the digest of files written before version 0.2 of this rule, see
    :func:`content_checksum`).
    """
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    out = np.asarray(value)
    if out.dtype.kind == "b":
        out = out.astype(np.int64)
    if out.dtype.kind in "SO":
        out = out.astype(str)
    if keep_list:
        return np.atleast_1d(out).tolist()
    out = out.tolist()
    if isinstance(out, list) and len(out) == 1:
        out = out[0]
    return out


def _hash_dataset(h, ds, prefix: str = "") -> None:
    """Feed the variables of one dataset (one DataTree node) into the hash ``h``."""
    for name in sorted(ds.variables):
        v = np.asarray(ds.variables[name].values)
        if v.dtype.kind in "biuf":
            v = np.ascontiguousarray(v, dtype=v.dtype.newbyteorder("<"))
            h.update(f"{prefix}{name}|{v.dtype.str}|{v.shape}|".encode())
            h.update(v.tobytes())
        elif v.dtype.kind in "USO":
            # Strings read back as object arrays; hash their text, not their storage.
            h.update(f"{prefix}{name}|str|{v.shape}|".encode())
            h.update(json.dumps(v.astype(str).ravel().tolist()).encode())
        else:
            raise ValueError(f"variable {prefix}{name} has unsupported dtype {v.dtype}")


def _attrs_json(attrs, keep_lists=()) -> bytes:
    canon = {key: canonical_attr(val, keep_list=key in keep_lists)
             for key, val in attrs.items() if key != CHECKSUM_ATTR}
    return json.dumps(canon, sort_keys=True).encode()


def sha256_file(path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks: what ties a fit to the exact run
    file it was made from (``run_sha256``) and a pipeline stage to its input and output
    files (the manifest)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def content_checksum(obj, *, keep_lists=()) -> str:
    """``"sha256:<hex>"`` of a Dataset's or DataTree's content.

    Every variable of every group (name, dtype, shape, values as little-endian bytes;
    strings as their text) and every group's attributes (canonical JSON, see
    :func:`canonical_attr`) enter the digest, except the root ``checksum`` attribute itself.
    Variable attributes (descriptions) do not. It survives a netCDF round trip and changes
    with any edit of a value, a coordinate, a group or a provenance attribute. For a Dataset
    it is the digest run files have always carried; ``keep_lists`` names attributes hashed
    as lists even with one element (how files written before that canonical rule hashed
    them: see :func:`nngp_ppl.sampling.stats.CorrelatorStats.from_netcdf`).
    """
    return _digests(obj, [keep_lists])[0]


def _digests(obj, variants) -> list[str]:
    """One digest per ``keep_lists`` variant; the variables are hashed only once."""

    h = hashlib.sha256()
    if isinstance(obj, xr.DataTree):
        nodes = sorted(obj.subtree, key=lambda node: node.path)
        for node in nodes:
            h.update(f"group {node.path}|".encode())
            _hash_dataset(h, node.to_dataset(inherit=False), prefix=f"{node.path}/")
        for node in nodes:
            if node is not obj:
                h.update(f"attrs {node.path}|".encode() + _attrs_json(node.attrs))
    else:
        _hash_dataset(h, obj)
    out = []
    for keep in variants:
        g = h.copy()
        g.update(_attrs_json(obj.attrs, keep))
        out.append("sha256:" + g.hexdigest())
    return out


# ---------------------------------------------------------------------------------------------
# writing and reading checksummed netCDF files
# ---------------------------------------------------------------------------------------------
def _load(src, tree: bool, *, engine: str = "h5netcdf"):
    """The Dataset or DataTree in the netCDF file ``src`` (a path, a file object, or with
    ``engine="netcdf4"`` the file's bytes).

    h5netcdf (the default) reads any file: a damaged header raises a Python exception, which
    :func:`load_netcdf` reports in one line (damaged values parse, and their checksum fails).
    netCDF-C (``engine="netcdf4"``) is for the bytes :func:`write_netcdf` has just built, and
    only those: a posterior file of 91 variables takes 0.07 s against 0.45 s through
    h5netcdf, which looks every dimension up through h5py again for each variable (h5netcdf
    issue 195). Both give the same objects for a file h5netcdf wrote: the same values,
    attributes and their order, and encodings from which h5netcdf writes the same bytes
    again (checked on the 1,875 checksummed files a run of the test suite left;
    tests/test_properties.py), so the checksum computed from one is the one the other
    recomputes. Never a file from disk: netCDF-C 4.10 crashed the interpreter (SIGSEGV, at
    exit) after refusing a file whose header had been overwritten, where h5netcdf raises.
    """
    if tree:
        return xr.load_datatree(src, engine=engine)
    return xr.load_dataset(src, engine=engine)


#: The files this process has parsed or written, by the SHA-256 of their bytes: h5netcdf
#: spends some 5 ms per variable on metadata (a posterior file: ~0.45 s of CPU), and a study
#: reads each file several times (its fit, infer, flow and target stages, then the report).
#: Keyed by content, so that a file edited or replaced since is parsed anew; every reader
#: gets its own deep copy. (key -> (object, size in bytes)), least recently used first.
_PARSED = BytesLRU()
#: Total size of the files kept parsed; a file larger than a quarter of it is not kept (and
#: is parsed from disk, without a copy of its bytes in memory).
PARSED_CACHE_BYTES = 256 * 2**20


def _parsed_key(data: bytes, tree: bool) -> tuple[bytes, bool]:
    return hashlib.sha256(data).digest(), bool(tree)


def _kept(size: int) -> bool:
    """Whether a file of ``size`` bytes is kept parsed (:data:`PARSED_CACHE_BYTES`)."""
    return size <= PARSED_CACHE_BYTES // 4


def _remember(key, obj, size: int) -> None:
    if _kept(size):
        _PARSED.keep(key, obj, size, limit=PARSED_CACHE_BYTES)


def _load_bytes(data: bytes, tree: bool):
    """The Dataset or DataTree held in ``data`` (a netCDF file's bytes): parsed once per
    content in this process (:data:`_PARSED`), a deep copy for the caller."""
    key = _parsed_key(data, tree)
    obj = _PARSED.fetch(key)
    if obj is None:
        obj = _load(io.BytesIO(data), tree)
        _remember(key, obj, len(data))
    return obj.copy(deep=True)


def netcdf_bytes(obj) -> bytes:
    """A Dataset or DataTree as the bytes of a netCDF-4 (HDF5) file, built in memory.

    HDF5 does not survive a failed write: on a full disk h5py raised "Can't close file",
    printed a screen of "Exception ignored" tracebacks and then crashed the interpreter
    (exit 139, measured with a 512 KiB tmpfs). Building the file in memory and writing its
    bytes with plain Python I/O (:func:`write_bytes`) turns a full disk into one OSError.
    """
    buf = io.BytesIO()
    with _local_write_lock():
        obj.to_netcdf(buf, engine="h5netcdf")
    return buf.getvalue()


def _local_write_lock():
    """Make xarray guard the write with a local lock even while a Dask ``distributed``
    client is active (``--dask``): it would otherwise ask the scheduler for a lock named by
    the target, which a file object cannot name. The data are in memory: no Dask graph
    runs, so the scheduler choice changes nothing else."""
    try:
        import dask
    except ImportError:
        return contextlib.nullcontext()
    return dask.config.set(scheduler="sync")


def write_bytes(tmp, data: bytes, *, target=None, durable: bool = False) -> None:
    """Write ``data`` to ``tmp`` (optionally flushed to disk); an OSError (a full disk, an
    I/O error) names ``target``, the file the user asked for, not the temporary name."""
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
    except OSError as err:
        raise OSError(err.errno, err.strerror or str(err), os.fspath(target or tmp)) from None


def write_netcdf(obj, path, *, file_format: str | None = None, version: int | None = None,
                 durable: bool = False) -> Path:
    """Write a Dataset or DataTree to netCDF atomically, with a ``checksum`` attribute.

    The digest is computed from the file as written and read back (so it is exactly what
    :func:`read_netcdf` will recompute, whatever xarray's encoding does to strings, booleans
    or one-element lists) and stamped onto the file before it is written. With
    ``file_format``/``version`` the root attributes ``nngp_ppl_format`` and
    ``nngp_ppl_format_version`` are set first. The file is built in memory
    (:func:`netcdf_bytes`) and written under a temporary name renamed at the end
    (:func:`atomic_path`), so a full disk is one OSError and leaves nothing behind.
    ``durable`` also flushes the file to disk before the rename (checkpoints). The object
    read back, with its checksum, is what :func:`load_netcdf` returns for these bytes.
    """

    path = Path(path)
    tree = isinstance(obj, xr.DataTree)
    obj = obj.copy()
    if file_format is not None:
        obj.attrs["nngp_ppl_format"] = file_format
    if version is not None:
        obj.attrs["nngp_ppl_format_version"] = int(version)
    obj.attrs.pop(CHECKSUM_ATTR, None)
    check_replaceable("path", path)
    buf = io.BytesIO(netcdf_bytes(obj))
    written = _load(buf.getvalue(), tree, engine="netcdf4")
    digest = content_checksum(written)
    with h5netcdf.File(buf, "a") as f:
        f.attrs[CHECKSUM_ATTR] = digest
    data = buf.getvalue()
    with atomic_path(path) as tmp:
        write_bytes(tmp, data, target=path, durable=durable)
    # What a reader of these bytes would parse: the object read back, with the checksum that
    # was added after it (tests/test_properties.py checks that the two are identical).
    written.attrs[CHECKSUM_ATTR] = digest
    _remember(_parsed_key(data, tree), written, len(data))
    return path


class _QuietH5netcdf:
    """``sys.unraisablehook`` that drops the close errors of half-opened h5netcdf files."""

    def __init__(self, previous):
        self.previous = previous

    def __call__(self, unraisable):
        if getattr(unraisable.object, "__module__", "").startswith("h5netcdf"):
            return
        self.previous(unraisable)


def load_netcdf(path, *, name: str, what: str, tree: bool = False):
    """Read a netCDF file into memory; a missing, foreign or broken file is one clear error.

    h5netcdf leaves a half-constructed ``File`` behind when a damaged header makes it fail
    midway; collecting it later prints an "Exception ignored" traceback after our error.
    It is collected here, with that report silenced, so the user sees one line only.
    The bytes are parsed once per content in a process (:func:`_load_bytes`).
    """
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise NNGPInputError(f"{name} must be a file path, got {path!r}")
    path = Path(path)
    if path.is_dir():
        raise NNGPInputError(f"{name}: {path} is a directory, not a netCDF file")
    if not path.is_file():
        raise NNGPInputError(f"{name}: no such file: {path}")
    problem = None
    hook = sys.unraisablehook
    sys.unraisablehook = _QuietH5netcdf(hook)
    try:
        if not _kept(path.stat().st_size):  # parsed from disk: no copy of its bytes
            return _load(path, tree)
        return _load_bytes(path.read_bytes(), tree)
    except Exception as err:  # h5py/xarray raise many types for foreign or broken files
        problem = f"{type(err).__name__}: {err}"
    finally:
        try:
            if problem is not None:
                gc.collect()
        finally:
            sys.unraisablehook = hook
    raise NNGPInputError(f"{name}: {path} is not a readable {what} ({problem})")


def verify_checksum(obj, *, name: str, path, what: str, keep_lists=()) -> None:
    """Refuse ``obj`` (read from ``path``) unless its ``checksum`` attribute matches."""
    stored = obj.attrs.get(CHECKSUM_ATTR)
    if stored is None:
        raise NNGPInputError(
            f"{name}: {path} is damaged or incomplete (no checksum attribute; every {what} "
            "written by nngp_ppl carries one)"
        )
    variants = [()] + ([keep_lists] if keep_lists else [])
    try:
        digests = _digests(obj, variants)
    except ValueError as err:
        raise NNGPInputError(f"{name}: {path} is damaged or incomplete ({err})") from None
    if str(stored) not in digests:
        raise NNGPInputError(
            f"{name}: {path} is damaged or edited: its content does not match the checksum "
            "written with it (values, coordinates or attributes changed after writing)"
        )


def read_netcdf(path, *, name: str, what: str, tree: bool = False, file_format=None,
                version: int | None = None):
    """Read a file written by :func:`write_netcdf` and verify its checksum.

    ``file_format`` (a string or tuple of strings) is the ``nngp_ppl_format`` the file must
    carry, ``version`` its ``nngp_ppl_format_version``; ``what`` names the kind of file in
    messages ("posterior file"), ``name`` the argument or option it came from.
    """
    obj = load_netcdf(path, name=name, what=what, tree=tree)
    if file_format is not None:
        wanted = (file_format,) if isinstance(file_format, str) else tuple(file_format)
        got = obj.attrs.get("nngp_ppl_format")
        if got not in wanted:
            found = f"an nngp_ppl file of format {got!r}" if got else "not an nngp_ppl file"
            raise NNGPInputError(
                f"{name}: {path} is not a {what} (nngp_ppl_format {wanted[0]!r}); it is "
                f"{found}"
            )
        if version is not None:
            got_v = format_version(obj.attrs)
            if got_v != version:
                raise version_error(name, path, got_v, version, what)
    verify_checksum(obj, name=name, path=path, what=what)
    return obj
