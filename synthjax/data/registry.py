"""The datasets `prepare` reads, by `dataset.name`, and which have a built-in phantom.

No imports: configs read these names without loading TFDS or JAX.
"""

DATASETS = ("chexpert", "nih_cxr14", "rsna_ich", "folder")
PHANTOM_DATASETS = ("chexpert", "rsna_ich")  # the built-in phantoms write these layouts
