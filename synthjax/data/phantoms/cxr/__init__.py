"""Chest radiograph phantom: `anatomy` (detector, patient) -> `findings` (the 14 findings)
-> `render` (one frontal or lateral image) -> `writer` (the CheXpert-v1.0-small folder)."""
