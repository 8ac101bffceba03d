"""IdentityTracker: a got10k tracker that always reports its initial box.

It is the floor every real tracker must beat and the tracker the evaluation tests run
end to end (deterministic, no model, no weights). It also reports an angle that never changes
(``last_angle`` 0), so its angle error is the reference a rotation estimate must beat: a
constant estimate, whose error depends on how far the targets turn.
"""
from __future__ import annotations

import numpy as np
from got10k.trackers import Tracker

from data.frames import check_frame_size, frame_size

__all__ = ["IdentityTracker"]


class IdentityTracker(Tracker):
    """Returns the box given to init() for every later frame, and angle 0."""

    def __init__(self, name: str = "identity"):
        super().__init__(name=name, is_deterministic=True)
        self.box = None
        self.frame_size = None
        self.last_angle = None

    def init(self, image, box) -> None:
        self.box = np.asarray(box, dtype=np.float64).reshape(4).copy()
        self.frame_size = frame_size(image)
        self.last_angle = 0.0

    def update(self, image) -> np.ndarray:
        if self.box is None:
            raise RuntimeError("IdentityTracker.update() called before init()")
        check_frame_size(self.frame_size, image)
        return self.box.copy()
