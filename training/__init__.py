"""Training loops: trackers (``training.tracking``) and classifiers (``training.classification``),
on one shared layer (``training.run``: run folders, checkpoints, history, RNG states)."""
