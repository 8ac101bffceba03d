"""Training of the Siamese trackers with the implicit-equivariance (IEN) loss, split by concern:

- :mod:`~training.tracking.config`: the run's configuration ([model], [train], [data]);
- :mod:`~training.tracking.pairs` and :mod:`~training.tracking.data`: training pairs and their batches;
- :mod:`~training.tracking.loop`: the loss of a step and the :class:`Trainer` (checkpoints, resume,
  validation, logs through the shared layer :mod:`training.run`);
- :mod:`~training.tracking.export`: weights in (``train.init_from``) and out (``export_weights``).

The names below are the public API (``tools/train_tracker.py`` is the command line).
"""
from .config import DataConfig, RunConfig, SourceConfig, TrainConfig, TrainingError, read_config
from .data import load_pairs, load_validation_pairs
from .export import export_weights, initialize_from
from .loop import BEST_NAME, Trainer, build_lr_scheduler, response_peaks

__all__ = ["BEST_NAME", "DataConfig", "RunConfig", "SourceConfig", "TrainConfig", "Trainer", "TrainingError",
           "build_lr_scheduler", "export_weights", "initialize_from", "load_pairs", "load_validation_pairs",
           "read_config", "response_peaks"]
