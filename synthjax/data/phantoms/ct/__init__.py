"""Brain-CT phantom: `anatomy` (head, bleeds, one slice in HU) -> `writer` (scanners, DICOM
encodings, the RSNA Intracranial Hemorrhage folder)."""
