"""The data floor: sequences and their readers, frames, generated and rotating benchmarks,
still photos and the classification datasets. Imports only :mod:`common`.

- :mod:`data.sequence`: the ``Sequence`` type, dataset errors, ``split_by_source``;
- :mod:`data.layouts`: every reader behind one registry, ``load_sequences(root, layout="auto")``
  (GOT-10k and OTB: :mod:`data.got10k_otb`; LaSOT, UAV123, VOT, TrackingNet: :mod:`data.benchmarks`);
- :mod:`data.frames`: the one frame decoder and pixel conversion;
- :mod:`data.synthetic` / :mod:`data.generated`: the rotating-sequence generator and its cached datasets;
- :mod:`data.rotating`: rotating copies of any sequence set (Rot-OTB style);
- :mod:`data.photos`: still photos with boxes; :mod:`data.classification`, :mod:`data.mnist`:
  the classification datasets.
"""
from .layouts import LAYOUTS, detect_layout, load_sequences
from .sequence import IMAGE_EXTENSIONS, DatasetError, DatasetWarning, Sequence, box_to_polygon, split_by_source

__all__ = ["DatasetError", "DatasetWarning", "IMAGE_EXTENSIONS", "LAYOUTS", "Sequence", "box_to_polygon", "detect_layout",
           "load_sequences", "split_by_source"]
