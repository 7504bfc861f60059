"""Training: the sampler's networks trained on a data set, correlators along the way (layer 4).

* :mod:`.trainer`: :func:`~.trainer.train_ensemble` and the stepped correlator files.
"""
