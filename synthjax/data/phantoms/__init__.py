"""Built-in phantoms: fake hospitals that write a dataset's raw download layout to disk.

`cxr` writes CheXpert-v1.0-small (JPEGs + CSVs), `ct` the RSNA Intracranial Hemorrhage train
set (DICOM slices + label CSV). The `prepare` stage writes one when no raw folder is given,
and the dataset's own builder then reads it as it reads the real download.
"""
