"""Studies: a TOML study -> files -> report, built incrementally (layer 6).

* :mod:`.spec`: the study types, presets and their TOML form.
* :mod:`.presets`: the paper's inputs, widths and cutoffs.
* :mod:`.manifest`: stage keys, input hashes and up-to-date checks (generic).
* :mod:`.report`: the figures and the markdown report of a finished study.
* :mod:`.stages`: the stage actions and :func:`~.stages.reproduce`.
"""
