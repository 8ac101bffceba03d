"""Let the CUDA build of torchvision import next to a CPU-only torch.

PyPI has no CPU torchvision matching the local CPU torch wheel; the CUDA build's compiled ops
cannot load there, and ``import torchvision`` then fails on its fake-kernel registrations for
``torchvision::nms``/``qnms``. Declaring those two operator schemas first is enough for models,
transforms and datasets to work. Installed by tools/install.sh as a .pth hook that acts only when
torchvision is first imported, and only when torch is a CPU build.
"""
import importlib.abc
import sys

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_LIBRARY = []  # keep the Library object alive


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != "torchvision":
            return None
        sys.meta_path.remove(self)
        try:
            _declare_ops()
        except Exception:  # never break an import because of this hook
            pass
        return None


def _declare_ops():
    import torch

    if torch.version.cuda is not None:
        return  # a CUDA torch loads torchvision's compiled ops itself
    lib = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _SCHEMAS:
        try:
            lib.define(schema)
        except RuntimeError:
            pass  # already declared
    _LIBRARY.append(lib)


def install():
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
