"""The paper's classification study: IEN vs plain CNN vs steerable CNN, homogeneous vs heterogeneous groups.

    python -m training.classification.train --dataset rot-digits --model cnnbasic --group R4 --beta 1 --out runs/x
    python -m training.classification.study configs/classification/rot_digits.toml --out runs/study
"""
from data.classification import DATASETS, ClassificationData, DatasetError, load_dataset
from training.classification.config import TrainConfig, TrainError

from .engine import GroupPoolClassifier, evaluate_checkpoint, train

__all__ = [
    "DATASETS", "ClassificationData", "DatasetError", "GroupPoolClassifier", "TrainConfig", "TrainError",
    "evaluate_checkpoint", "load_dataset", "train",
]
