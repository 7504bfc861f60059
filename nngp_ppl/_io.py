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
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from ._checks import NNGPInputError

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
#: The connected 6-pt comparison of a second-order stage (nngp_ppl.connected).
SIXPOINT_FORMAT, SIXPOINT_VERSION = "nngp_ppl.ConnectedSixPoint", 1


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    An exception or interruption removes the temporary file and leaves ``path`` untouched,
    so an interrupted run never leaves a half-written output. The rename is atomic on
    POSIX file systems because both names live in the same directory.
    """
    path = Path(path)
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
    (it would be overwritten), a parent that is a file, and a directory this process cannot
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


def content_checksum(obj, *, keep_lists=()) -> str:
    """``"sha256:<hex>"`` of a Dataset's or DataTree's content.

    Every variable of every group (name, dtype, shape, values as little-endian bytes;
    strings as their text) and every group's attributes (canonical JSON, see
    :func:`canonical_attr`) enter the digest, except the root ``checksum`` attribute itself.
    Variable attributes (descriptions) do not. It survives a netCDF round trip and changes
    with any edit of a value, a coordinate, a group or a provenance attribute. For a Dataset
    it is the digest run files have always carried; ``keep_lists`` names attributes hashed
    as lists even with one element (how files written before that canonical rule hashed
    them: see :func:`nngp_ppl.stats.CorrelatorStats.from_netcdf`).
    """
    return _digests(obj, [keep_lists])[0]


def _digests(obj, variants) -> list[str]:
    """One digest per ``keep_lists`` variant; the variables are hashed only once."""
    import xarray as xr

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
def _load(path, tree: bool):
    import xarray as xr

    if tree:
        return xr.load_datatree(path, engine="h5netcdf")
    return xr.load_dataset(path, engine="h5netcdf")


def write_netcdf(obj, path, *, file_format: str | None = None, version: int | None = None,
                 durable: bool = False) -> Path:
    """Write a Dataset or DataTree to netCDF atomically, with a ``checksum`` attribute.

    The digest is computed from the file as written and read back (so it is exactly what
    :func:`read_netcdf` will recompute, whatever xarray's encoding does to strings, booleans
    or one-element lists) and stamped onto the temporary file before the rename. With
    ``file_format``/``version`` the root attributes ``nngp_ppl_format`` and
    ``nngp_ppl_format_version`` are set first. ``durable`` also flushes the file to disk
    before the rename (checkpoints).
    """
    import h5netcdf
    import xarray as xr

    path = Path(path)
    tree = isinstance(obj, xr.DataTree)
    obj = obj.copy()
    if file_format is not None:
        obj.attrs["nngp_ppl_format"] = file_format
    if version is not None:
        obj.attrs["nngp_ppl_format_version"] = int(version)
    obj.attrs.pop(CHECKSUM_ATTR, None)
    with atomic_path(path) as tmp:
        obj.to_netcdf(tmp, engine="h5netcdf")
        digest = content_checksum(_load(tmp, tree))
        with h5netcdf.File(tmp, "a") as f:
            f.attrs[CHECKSUM_ATTR] = digest
        if durable:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
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
        return _load(path, tree)
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
            got_v = int(np.asarray(obj.attrs.get("nngp_ppl_format_version", -1)).item())
            if got_v != version:
                raise NNGPInputError(
                    f"{name}: {path} has file layout version {got_v}; this nngp_ppl reads "
                    f"version {version}: re-run the command that wrote it"
                )
    verify_checksum(obj, name=name, path=path, what=what)
    return obj
