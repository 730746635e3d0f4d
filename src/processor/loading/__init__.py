"""Finding and loading versions: which checkpoints and SavedModel versions are complete
(checkpoints.py, savedmodels.py), which deltas apply (deltas.py), loading one into the data plane
(loader.py) and warming it up (warmup.py)."""
