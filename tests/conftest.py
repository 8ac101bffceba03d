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
