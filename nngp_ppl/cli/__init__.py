"""The ``nngp-ppl`` command line (layer 7): :mod:`.main` parses, :mod:`.commands` run."""
