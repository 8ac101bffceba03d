"""IdentityTracker: a got10k tracker that always reports its initial box.

It is the floor every real tracker must beat and the tracker the evaluation tests run
end to end (deterministic, no model, no weights).
"""
from __future__ import annotations

import numpy as np
from got10k.trackers import Tracker

__all__ = ["IdentityTracker"]


class IdentityTracker(Tracker):
    """Returns the box given to init() for every later frame."""

    def __init__(self, name: str = "identity"):
        super().__init__(name=name, is_deterministic=True)
        self.box = None

    def init(self, image, box) -> None:
        self.box = np.asarray(box, dtype=np.float64).reshape(4).copy()

    def update(self, image) -> np.ndarray:
        if self.box is None:
            raise RuntimeError("IdentityTracker.update() called before init()")
        return self.box.copy()
