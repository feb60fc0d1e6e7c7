"""Launchers: the same `synthjax.main` command on a laptop, TPU VMs, a SLURM cluster, and
sweeps of it. Run from the repository root: `python -m launch.<name> --help`."""
