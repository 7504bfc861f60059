"""Ensembles: the networks whose output distribution is the field theory (layer 1).

* :mod:`.core`: the :class:`~.core.Ensemble` protocol, the activation registry,
  single-layer nets (ErfNet, ReLUNet, GaussNet, ActivationNet), description and import rules.
* :mod:`.networks`: deep MLPs and user JAX networks.
* :mod:`.quadrature`: Gaussian expectations of an activation (kernels without a closed form).
"""
