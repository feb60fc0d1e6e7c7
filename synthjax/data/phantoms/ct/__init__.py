"""Brain-CT phantom: `anatomy` (head, bleeds, one slice in HU) -> `dicom_files` (a slice
in a scanner's DICOM encoding) -> `writer` (scanners, patients, the RSNA Intracranial
Hemorrhage folder)."""
