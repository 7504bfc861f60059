"""CLI subcommands, one module each (see nngp_ppl.cli.main)."""
