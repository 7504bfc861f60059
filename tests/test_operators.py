"""Operators as records (nngp_ppl.theory.operators): names, aliases, the one validation of
coupling names, and the stages that read the records (diagrams, fits, the lattice field)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from numpyro import handlers

import nngp_ppl as nn
from nngp_ppl.inference import eft, problem
from nngp_ppl.inference.models import field as fm
from nngp_ppl.theory import diagrams as dg
from nngp_ppl.theory import operators as ops
from nngp_ppl.theory.lattice import Lattice
from nngp_ppl.theory.wick import gp_correlator_tuples


def test_records_of_the_local_operators():
    lam, kappa, g3, g5 = (ops.operator(n) for n in ("lambda", "kappa", "g3", "g5"))
    assert ops.operator("g4") is lam and ops.operator("g6") is kappa and ops.local(4) is lam
    assert (lam.name, lam.symbol, lam.legs, lam.parity, lam.size_power) == ("lambda", "λ", 4,
                                                                              1, 1.0)
    assert (kappa.name, kappa.symbol, kappa.size_power) == ("kappa", "κ", 2.0)
    assert (g3.name, g3.symbol, g3.legs, g3.parity, g3.size_power) == ("g3", "g₃", 3, -1, 0.5)
    assert g5.parity == -1 and not g5.even and g5.local and g5.dimension == 5
    assert ops.operator("g1").legs == 1 and ops.operator("g12").legs == 12
    f = np.array([-1.5, 0.5, 2.0])
    np.testing.assert_array_equal(g3.density(f), f**3)
    np.testing.assert_array_equal(kappa.density(f), f**6)
    assert str(g3) == "g₃ f^3"
    assert ops.operator(g3) is g3


def test_one_validation_of_coupling_names():
    assert ops.coupling_names("g4, g6") == ("lambda", "kappa")
    assert ops.coupling_names(("g3", "lambda", "g5")) == ("g3", "lambda", "g5")
    for bad in ("g0", "g", "mu", "g03", "lambda4", "", 4):
        with pytest.raises(nn.NNGPInputError, match="coupling"):
            ops.coupling_names(bad if bad != "" else ())
    with pytest.raises(nn.NNGPInputError, match="repeat"):
        ops.coupling_names(("kappa", "g6"))
    # The theory layer and the fit layer call the same function: the same message for a
    # bad name; the fit layer restricts the bases through the records, with one message.
    msgs = []
    for fn in (dg.coupling_names, problem.coupling_names):
        with pytest.raises(nn.NNGPInputError) as err:
            fn(("lambda", "mu"))
        msgs.append(str(err.value))
    assert msgs[0] == msgs[1]
    assert dg.coupling_names(("g3",)) == ("g3",)
    assert problem.coupling_names("lambda") == ("lambda",)
    assert problem.coupling_names(("kappa", "g4")) == ("lambda", "kappa")
    # Odd bases are fitted to the odd correlators now (tests/test_basis.py): g3 with lambda.
    assert problem.coupling_names(("lambda", "g3")) == ("g3", "lambda")
    for basis in (("kappa",), ("g3",), ("g5", "lambda"), ("lambda", "kappa", "g8")):
        with pytest.raises(nn.NNGPInputError,
                           match=r"couplings must be lambda or lambda,kappa or g3,lambda or "):
            problem.coupling_names(basis)


def test_visibility_and_the_basis_up_to_a_dimension():
    assert ops.check_visible(("g3", "lambda"), (3, 4)) == ("g3", "lambda")
    with pytest.raises(nn.NNGPInputError, match="g3 .* odd orders"):
        ops.check_visible(("lambda", "g3"), (4, 6))
    net, X = nn.ErfNet(), nn.paper_inputs("erf", 1)[:3]
    data = {n: gp_correlator_tuples(np.asarray(net.kernel(X)), n) for n in (4, 6)}
    with pytest.raises(nn.NNGPInputError, match="g3"):
        eft.fit_couplings(data, 10.0, net=net, X=X, couplings=("lambda", "g3"))
    assert [o.name for o in ops.up_to_dimension(6)] == ["g3", "lambda", "g5", "kappa"]
    assert [o.name for o in ops.up_to_dimension(6, "z2")] == ["lambda", "kappa"]
    with pytest.raises(nn.NNGPInputError, match="symmetry"):
        ops.up_to_dimension(6, "u1")


def test_a_new_kind_is_refused_where_it_has_no_leg_factor(monkeypatch):
    with pytest.raises(nn.NNGPInputError, match="kind"):
        ops.Operator(4, "d4", "δ", kind="derivative")
    monkeypatch.setitem(ops.KINDS, "derivative", ops.Kind("derivative", "∂K̃(x, y)"))
    op = ops.Operator(4, "d4", "δ", kind="derivative", derivatives=(1, 1, 0, 0))
    assert op.dimension == 6 and op.parity == 1
    with pytest.raises(nn.NNGPInputError, match="local operators"):
        ops.require_local(op, "diagrams")
    with pytest.raises(nn.NNGPInputError, match="density"):
        op.density(np.ones(3))
    with pytest.raises(nn.NNGPInputError, match="one count per leg"):
        ops.Operator(4, "d4", "δ", kind="derivative", derivatives=(1, 1))


def test_aliases_give_the_same_designs():
    net = nn.ErfNet(d_in=1, sigma_w=1.3, sigma_b=0.8)
    X = np.array([[-0.7], [0.2], [0.9]])
    lattice = Lattice(np.array([[-1.1], [0.5]]), np.array([0.3, 0.5]))
    a = dg.first_order_design(net, X, 4, None, ("lambda", "kappa"), lattice=lattice)
    b = dg.first_order_design(net, X, 4, None, "g4,g6", lattice=lattice)
    np.testing.assert_array_equal(a, b)
    assert dg.first_order_diagrams(4, 4)[0].coupling == "lambda"
    assert dg.second_order_diagrams(4, (3, 5))[0].couplings == ("g3", "g5")


def test_the_lattice_action_reads_the_records():
    """The field model's interaction factor is -Σ_j w_j (λ f_j^4 + κ f_j^6), by hand."""
    net = nn.ErfNet(d_in=1)
    X = np.array([[0.3], [0.8]])
    lattice = Lattice(np.array([[-1.0], [0.0], [1.2]]), np.array([0.4, 0.7, 0.2]))
    field = fm.FieldLattice.build(net, X, lattice)
    arrays = field.arrays(-0.02, 0.003)
    z = jnp.linspace(-1.0, 1.3, field.chol.shape[0])
    tr = handlers.trace(handlers.substitute(field.model, {"z": z})).get_trace(arrays)
    sites = np.asarray(field.chol @ np.asarray(z))[2:]
    hand = -np.sum(lattice.weights * (-0.02 * sites**4 + 0.003 * sites**6))
    np.testing.assert_allclose(float(tr["interaction"]["fn"].log_factor), hand, rtol=1e-6)
    assert fm.bounded_below({"lambda": -1.0, "kappa": 0.1})
    assert fm.bounded_below({"g3": 5.0, "lambda": 1.0})
    assert not fm.bounded_below({"lambda": 1.0, "g5": 1e-9})
    assert not fm.bounded_below({"lambda": -1.0})
    assert fm.bounded_below({"lambda": 0.0})
    with pytest.raises(nn.NNGPInputError, match="unbounded"):
        fm.check_bounded(-0.1, 0.0)
