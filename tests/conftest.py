import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# e2cnn 0.2.3 emits deprecation warnings from torch internals on every basis expansion.
warnings.filterwarnings("ignore", category=UserWarning, module="e2cnn")


@pytest.fixture(autouse=True)
def _seed():
    import numpy as np
    import torch

    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture
def one_thread():
    """Tiny models: one torch thread avoids oversubscribing the shared cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def trainer_stopping_after_first_step():
    """A ``training.tracking.Trainer`` subclass that asks to stop after its first step, as on
    SIGTERM / Ctrl-C (imported lazily: conftest stays free of torch at collection)."""
    from training.tracking import Trainer

    class StopsAfterFirstStep(Trainer):
        def train_step(self, batch):
            values = super().train_step(batch)
            if self.step == 1:
                self.request_stop()
            return values

    return StopsAfterFirstStep


def write_tiny_siamfc_toml(path: Path, data: Path | None, extra: str = "", data_extra: str = "",
                           epochs: int = 1) -> Path:
    """A tracker-training TOML of a tiny SiamFC (ResNet-22 R8 x0.125, batch 2, 4 pairs per epoch)
    on the sequence folder ``data`` (None: the generated default); ``extra`` / ``data_extra`` are
    more lines of [train] / [data]."""
    data_line = "" if data is None else f'path = "{data}"'
    path.write_text(f"""
[model]
type = "siamfc"
[model.backbone]
name = "resnet22"
group = "R8"
width_mult = 0.125
[train]
epochs = {epochs}
pairs_per_epoch = 4
batch_size = 2
num_workers = 0
{extra}
[data]
{data_line}
{data_extra}
""")
    return path
