"""The generic manifest of an incremental build: stage keys, output hashes, up-to-date checks.

A :class:`Stage` names its inputs, outputs and parameters; :func:`stage_key` hashes them
with the package version and the SHA-256 of every input file; ``manifest.json`` in the
output directory records per stage that key, its outputs' SHA-256 and its wall time, and
:func:`up_to_date` skips a stage whose key and outputs are unchanged. Nothing here knows
what a stage computes (that is :mod:`nngp_ppl.study.stages`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import _io
from .._io import atomic_path, sha256_file
from .._version import __version__

__all__ = [
    "MANIFEST",
    "ReproduceResult",
    "Stage",
    "load_manifest",
    "save_manifest",
    "sha256_file",
    "stage_key",
    "up_to_date",
    "write_netcdf",
    "write_text",
]

@dataclass(frozen=True)
class Stage:
    """One step: reads ``inputs``, writes ``outputs`` (paths relative to the output dir)."""

    name: str
    describe: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict
    action: Callable[[Path], None]


@dataclass
class ReproduceResult:
    """What :func:`reproduce` did: ``status`` maps each stage to ``"ran"`` or ``"skipped"``."""

    out: Path
    report: Path
    summary: Path
    status: dict
    seconds: dict
    wall_s: float


MANIFEST = "manifest.json"


def stage_key(stage: Stage, out: Path) -> str:

    payload = {
        "stage": stage.name,
        "version": __version__,
        "params": stage.params,
        "inputs": {p: sha256_file(out / p) for p in stage.inputs},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def load_manifest(out: Path, log=None) -> dict:
    """The stage records of ``out``; an unreadable manifest is never trusted (every stage
    is recomputed), and ``log`` says so, since that silently redoes hours of work."""
    path = out / MANIFEST
    if not path.is_file():
        return {"stages": {}}
    try:
        data = _io.json_attr(path.read_bytes(), MANIFEST)
        problem = None if isinstance(data, dict) and isinstance(data.get("stages"), dict) \
            else "no 'stages' record"
    except (OSError, ValueError) as err:
        problem = getattr(err, "strerror", None) or str(err)
    if problem is None:
        return data
    if log is not None:
        log(f"WARNING: {path} is damaged ({problem}), so no stage can be trusted to be up to "
            "date: every stage runs again and its outputs are replaced")
    return {"stages": {}}


def write_text(path, text: str) -> Path:
    """Write text atomically (complete file or none)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def save_manifest(out: Path, manifest: dict) -> None:
    write_text(out / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))


def up_to_date(stage: Stage, out: Path, record: dict | None, key: str) -> bool:
    if not record or record.get("key") != key:
        return False
    outputs = record.get("outputs", {})
    for p in stage.outputs:
        f = out / p
        if p not in outputs or not f.is_file() or sha256_file(f) != outputs[p]:
            return False
    return True


def write_netcdf(obj, path, *, file_format: str | None = None,
                 version: int | None = None) -> Path:
    """Write an xarray Dataset or DataTree atomically and checksummed (:mod:`nngp_ppl._io`)."""

    return _io.write_netcdf(obj, path, file_format=file_format, version=version)


# ---------------------------------------------------------------------------------------------
# stage actions
# ---------------------------------------------------------------------------------------------
