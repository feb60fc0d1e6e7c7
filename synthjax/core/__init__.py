"""Infrastructure with no science in it: the workdir and its lock, checkpoints, compilation,
the device mesh and multi-host setup, metrics, progress lines, errors and config files.

Everything else in synthjax may import from here; nothing here imports the rest.
"""
