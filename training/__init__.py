"""Training loops: trackers (``training.tracking``, pairs in ``training.pairs``) and classifiers
(``training.classification``)."""
