r"""A stored coupling posterior read back: its draws and the theory it was drawn with.

A posterior of :func:`~nngp_ppl.infer_couplings` (``nngp-ppl infer``, a study's ``infer``
stage) stores, beside the coupling draws, everything its estimand was built from
(docs/file_formats.md): the ensemble (``ensemble``), the inputs (``constant_data/inputs``),
the couplings, the fitted orders, the propagator on the vertex legs, the perturbative order
and the free part of :math:`r = G - G_{free}` (``two_point``); each draw of the noise-free
deviations :math:`r_s` is ``posterior/deviation``. Whoever reuses a posterior — the
β-functions (:func:`~nngp_ppl.beta_function`, ``nngp-ppl flow``) and a study's exact
centred target (:mod:`nngp_ppl.study.stages`) — reads it here and rebuilds the same
:class:`~nngp_ppl.inference.problem.EFTTheory` with :meth:`StoredPosterior.theory`, so that
:math:`g_s(\Lambda) = B(\Lambda)\, r_s` maps the draws with the estimand they were drawn for.

A file is read as every other reader of the package reads one
(:func:`nngp_ppl._io.read_netcdf`): its ``nngp_ppl_format`` must be a coupling posterior of
the current layout version and its SHA-256 ``checksum`` must match its content, so an
edited ``ensemble`` attribute (which would silently give another γ) or a damaged draw is
one clear error. A DataTree handed over in memory (the return value of
:func:`~nngp_ppl.infer_couplings`, which carries no checksum until it is written) gets the
same structural checks without the checksum.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import xarray as xr

from .._checks import NNGPInputError
from .._io import POSTERIOR_FORMAT, POSTERIOR_VERSION, json_attr, read_netcdf
from ..ensembles.core import ensemble_from_dict
from .problem import EFTTheory

__all__ = ["StoredPosterior", "read_posterior"]

#: How messages name a posterior file.
WHAT = "coupling posterior written by `nngp-ppl infer`"


@dataclass(frozen=True)
class StoredPosterior:
    """A coupling posterior and the settings of its estimand, as stored (module docstring).

    ``tree``: the whole DataTree; ``deviation``: the draws of r (chain, draw, width, cutoff,
    tuple), float64; ``widths``, ``cutoffs``: its grid; ``net``, ``inputs``, ``couplings``,
    ``orders``, ``propagator``, ``order``: what its theory was built from; ``two_point``:
    the stored free part (``"kernel"``, ``"measured"``; None in a tree that does not say).
    """

    tree: xr.DataTree
    net: object
    inputs: np.ndarray
    couplings: tuple[str, ...]
    orders: tuple[int, ...]
    propagator: str
    order: int
    two_point: str | None
    widths: np.ndarray
    cutoffs: np.ndarray
    deviation: np.ndarray

    @property
    def attrs(self) -> dict:
        """The root attributes (provenance and settings) as stored."""
        return dict(self.tree.attrs)

    def theory(self) -> EFTTheory:
        """The theory the posterior was drawn with: its couplings fitted to its orders
        (``data_orders = orders``), its propagator and perturbative order, vertex integrals
        up to its largest cutoff; for a net with non-zero means the centred theory
        (:meth:`EFTTheory.build` chooses it from the stored ensemble)."""
        return EFTTheory.build(self.net, self.inputs, self.couplings, self.orders,
                               self.orders, self.propagator,
                               max_cutoff=float(self.cutoffs.max()), order=self.order)


def read_posterior(posterior, *, name: str = "posterior") -> StoredPosterior:
    """The :class:`StoredPosterior` of ``posterior``: a file path (checksum, format and
    layout version verified by :func:`nngp_ppl._io.read_netcdf`) or a DataTree in memory.

    Refused with one :class:`~nngp_ppl.NNGPInputError` naming ``name``: a missing, foreign,
    edited or damaged file; a tree without the ``posterior`` and ``constant_data`` groups or
    the inputs; cutoffs that are not distinct, positive and finite; non-finite draws; a
    missing or malformed setting (ensemble, couplings, orders, propagator, draws of r).
    """
    path = None
    if isinstance(posterior, (str, os.PathLike)):
        path = posterior
        posterior = read_netcdf(path, name=name, what=WHAT, tree=True,
                                file_format=POSTERIOR_FORMAT, version=POSTERIOR_VERSION)
    elif not isinstance(posterior, xr.DataTree):
        raise NNGPInputError(f"{name} must be a posterior file path or the DataTree of "
                             f"infer_couplings, got {type(posterior).__name__}")
    where = f"{name}: {path}" if path is not None else name
    missing = [g for g in ("posterior", "constant_data") if g not in posterior.children]
    if not missing and "inputs" not in posterior["constant_data"].data_vars:
        missing = ["constant_data/inputs"]
    if missing:
        raise NNGPInputError(f"{where} lacks {', '.join(missing)}; it is not a complete "
                             "posterior written by `nngp-ppl infer`")
    post = posterior["posterior"].to_dataset()
    cut = (np.asarray(post["cutoff"].values, dtype=np.float64) if "cutoff" in post.coords
           else None)
    if cut is None or not (np.all(np.isfinite(cut)) and np.all(cut > 0)
                           and np.all(np.diff(np.sort(cut)) > 0)):
        raise NNGPInputError(f"{where} must have distinct positive finite cutoffs, got "
                             f"{None if cut is None else cut.tolist()}")
    for var in post.data_vars:
        if not np.all(np.isfinite(post[var].values)):
            raise NNGPInputError(f"{where} has non-finite posterior draws of {var}")
    attrs = posterior.attrs
    try:
        net = ensemble_from_dict(json_attr(attrs["ensemble"], "ensemble"))
        couplings = tuple(str(c) for c in json_attr(attrs["couplings"], "couplings"))
        orders = tuple(int(n) for n in json_attr(attrs["orders"], "orders"))
        propagator = str(attrs["propagator"])
        order = int(attrs.get("order", 1))
        inputs = np.asarray(posterior["constant_data"]["inputs"].values, dtype=np.float64)
        deviation = np.asarray(post["deviation"].values, dtype=np.float64)
        widths = np.asarray(post["width"].values)
    except (KeyError, TypeError, ValueError) as err:
        why = f"it lacks {err}" if isinstance(err, KeyError) else str(err)
        raise NNGPInputError(f"{where} must be a coupling posterior written by "
                             f"infer_couplings (nngp-ppl infer); {why}") from None
    two_point = str(attrs["two_point"]) if "two_point" in attrs else None
    return StoredPosterior(tree=posterior, net=net, inputs=inputs, couplings=couplings,
                           orders=orders, propagator=propagator, order=order,
                           two_point=two_point, widths=widths, cutoffs=cut,
                           deviation=deviation)
