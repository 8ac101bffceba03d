"""Inference backends for the per-frame part of the Siamese trackers: the feature extractor.

Every frame a tracker runs ``model.extract(crops).out`` (input normalisation, backbone, optional
group max-pool, optional neck) on its search crops; that is almost all of a frame's compute.
A backend is a callable ``features(images) -> tensor`` computing exactly that; crops,
correlation and heads stay the model's own code.

- ``torch-unfused``: the model itself, live (follows later changes to its weights).
- ``torch``: an eval-mode copy with every BatchNorm folded into the convolution before it, and
  the input normalisation folded into the first convolution when that convolution has no
  padding (ResNet-22: exact; with zero padding the fold would change the border).
- ``onnxruntime``: the folded copy exported to ONNX (in memory, dynamic batch and size) and run
  by ONNX Runtime on the CPU with the thread policy's count of intra-op threads, sequentially,
  one session per input shape (the shape pinned: faster than the dynamic graph), the border
  crops of ResNet-22 rewritten as depthwise convolutions (:func:`crops_as_convolutions`).
- ``auto``: ``onnxruntime`` on the CPU where installed, else ``torch``; ``torch-unfused`` for a
  model given in memory (it may still be training, and a snapshot would go stale).

The optimised backends (``torch``, ``onnxruntime``) also have the SiamFC trackers correlate a
single template by one GEMM and a shifted sum (:func:`tracker.heads.xcorr_gemm`, 4-7x faster
than conv2d on the CPU); ``torch-unfused`` keeps the model's conv2d.

The folded and exported copies are snapshots of the weights at tracker build. Their boxes agree
with the unfused model's to well under a pixel, not bit for bit (tests/test_backends.py).
:data:`BACKEND_REVISION` goes into evaluation result keys, so that results an optimised
backend made before a change to its boxes are recomputed.
"""
from __future__ import annotations

import copy
import importlib.util
import io
import operator
import warnings

import torch
from torch import nn
from torch.nn import functional as F

from backbones import group_max_pool

__all__ = ["BACKENDS", "REFERENCE_BACKEND", "BACKEND_REVISION", "BackendError", "onnxruntime_available",
           "resolve_backend", "FoldedFeatures", "fold_batchnorm", "build_features", "export_features_onnx",
           "onnx_session"]

BACKENDS = ("auto", "onnxruntime", "torch", "torch-unfused")
REFERENCE_BACKEND = "torch-unfused"     # the model's own forward: what results were computed with before backends
# Raised when an optimised backend's boxes change, float rounding included (2: one template
# correlated by a GEMM instead of conv2d).
BACKEND_REVISION = 2


class BackendError(ValueError):
    """An inference backend that cannot be used (unknown, not installed, wrong device or model)."""


def onnxruntime_available() -> bool:
    """Whether the ``onnxruntime`` backend can run: ONNX Runtime, and ``onnx`` for torch's exporter."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def resolve_backend(backend: str | None, device, live_model: bool = False) -> str:
    """The concrete backend ``backend`` means on ``device`` (``None`` = ``auto``); checked."""
    name = "auto" if backend is None else str(backend).strip().lower()
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if device is None:                                  # as tracker.siamfc.resolve_device
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        on_cpu = torch.device(device).type == "cpu"
    except (RuntimeError, TypeError) as exc:
        raise BackendError(f"unknown device {device!r}: {exc}") from None
    if name == "auto":
        if live_model:
            return REFERENCE_BACKEND
        return "onnxruntime" if on_cpu and onnxruntime_available() else "torch"
    if name == "onnxruntime":
        if not onnxruntime_available():
            raise BackendError("backend onnxruntime needs the onnxruntime and onnx packages "
                               "(pip install onnxruntime onnx); or choose --backend torch")
        if not on_cpu:
            raise BackendError(f"backend onnxruntime runs on the CPU, not on {device}; use backend torch there")
    return name


# ---- BatchNorm and normalisation folding --------------------------------------------------
class _BackboneOut(nn.Module):
    """A backbone's output map alone (its watched maps dropped), for tracing."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x).out


def fold_batchnorm(module: nn.Module) -> torch.fx.GraphModule:
    """An eval-mode fx copy of ``module`` in which every BatchNorm that directly follows a
    convolution (and is its only user) is folded into that convolution."""
    from torch.fx.experimental.optimization import fuse

    module = module.eval()
    try:
        return fuse(torch.fx.symbolic_trace(module), inplace=False)
    except Exception as exc:     # fx raises many types for untraceable code (e.g. e2cnn modules)
        raise BackendError(f"cannot fold the network's BatchNorm layers ({type(exc).__name__}: {exc}); "
                           "use backend torch-unfused") from None


def _fold_normalisation(graph_module: torch.fx.GraphModule, mean: torch.Tensor, std: torch.Tensor) -> bool:
    """Fold ``(x - mean) / std`` (per input channel) into the graph's first op when it is an
    unpadded, ungrouped Conv2d applied once to the input: w' = w / std, b' = b - Σ w·mean/std.
    True when folded (the caller then feeds raw pixels)."""
    placeholders = [n for n in graph_module.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1 or len(placeholders[0].users) != 1:
        return False
    node = next(iter(placeholders[0].users))
    if node.op != "call_module":
        return False
    conv = graph_module.get_submodule(node.target)
    uses = [n for n in graph_module.graph.nodes if n.op == "call_module" and n.target == node.target]
    if (not isinstance(conv, nn.Conv2d) or len(uses) != 1 or conv.groups != 1
            or any(p != 0 for p in conv.padding) or conv.in_channels != mean.numel()):
        return False
    with torch.no_grad():
        scale = (1.0 / std).view(1, -1, 1, 1).to(conv.weight)
        shift = (mean.view(1, -1, 1, 1).to(conv.weight) * scale)
        bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels, dtype=conv.weight.dtype,
                                                                   device=conv.weight.device)
        new_bias = bias - (conv.weight * shift).sum(dim=(1, 2, 3))
        conv.weight.mul_(scale)
        conv.bias = nn.Parameter(new_bias)
    return True


class FoldedFeatures(nn.Module):
    """``model.extract(images).out`` of a Siamese model with BatchNorm (and, where exact, the input
    normalisation) folded into the convolutions; an eval-mode snapshot of the weights.

    Mirrors :meth:`tracker.models.SiamNet.extract`: normalise, backbone, group max-pool when
    ``config.pool_groups``, neck.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        was_training = model.training
        model.eval()
        try:
            self.backbone = fold_batchnorm(_BackboneOut(model.backbone))
            neck = model.neck if not isinstance(model.neck, nn.Identity) else None
            self.neck = fold_batchnorm(neck) if neck is not None else nn.Identity()
        finally:
            model.train(was_training)
        self.pool_spec = model.backbone.spec if model.config.pool_groups else None
        mean, std = model.pixel_mean.detach().clone(), model.pixel_std.detach().clone()
        if not model.NORMALISES_INPUT:            # raw pixels in: the identity standardisation
            mean, std = torch.zeros_like(mean), torch.ones_like(std)
        self.normalisation_folded = _fold_normalisation(self.backbone, mean.flatten(), std.flatten())
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images if self.normalisation_folded else (images - self.pixel_mean) / self.pixel_std
        out = self.backbone(x)
        if self.pool_spec is not None:
            out = group_max_pool(out, self.pool_spec)
        return self.neck(out)


# ---- ONNX ---------------------------------------------------------------------------------
class CropBorder(nn.Module):
    """``x[:, :, k:-k, k:-k]`` as a depthwise convolution with a one-hot (2k+1)x(2k+1) kernel:
    the same values (each output is its centre pixel times 1 plus exact zeros), but an op ONNX
    Runtime runs in its blocked NCHWc layout. A Slice there forces a layout conversion to NCHW
    and back around every ResNet-22 unit and keeps the residual Add from fusing into the conv."""

    def __init__(self, channels: int, border: int):
        super().__init__()
        kernel = torch.zeros(channels, 1, 2 * border + 1, 2 * border + 1)
        kernel[:, :, border, border] = 1.0
        self.register_buffer("kernel", kernel)
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.kernel, groups=self.channels)


def _border_crop(node) -> int | None:
    """k when an fx node is ``x[:, :, k:-k, k:-k]`` (k >= 1) of a 4-d tensor, else None."""
    if node.op != "call_function" or node.target is not operator.getitem:
        return None
    index = node.args[1]
    full = slice(None, None, None)
    if not (isinstance(index, tuple) and len(index) == 4 and index[0] == full and index[1] == full):
        return None
    rows, cols = index[2], index[3]
    if not (isinstance(rows, slice) and rows == cols and rows.step is None and isinstance(rows.start, int)):
        return None
    return rows.start if rows.start >= 1 and rows.stop == -rows.start else None


def crops_as_convolutions(graph_module: torch.fx.GraphModule, example: torch.Tensor) -> int:
    """Replace, in place, every border crop ``x[:, :, k:-k, k:-k]`` of ``graph_module`` (the CIR
    units' crops of ResNet-22) by a :class:`CropBorder`; returns how many. For the ONNX Runtime
    backend: measured 1.13x faster per SiamFC search batch (interleaved, 1 thread); the outputs
    differ from the sliced graph's by float rounding only (ONNX Runtime then fuses the residual
    Adds into the convolutions)."""
    from torch.fx.passes.shape_prop import ShapeProp

    ShapeProp(graph_module).propagate(example)
    replaced = 0
    for node in list(graph_module.graph.nodes):
        border = _border_crop(node)
        meta = node.args[0].meta.get("tensor_meta") if border is not None else None
        if meta is None or len(meta.shape) != 4:
            continue
        name = f"crop_border_{replaced}"
        graph_module.add_submodule(name, CropBorder(int(meta.shape[1]), border).to(meta.dtype))
        with graph_module.graph.inserting_after(node):
            conv = graph_module.graph.call_module(name, (node.args[0],))
        node.replace_all_uses_with(conv)
        graph_module.graph.erase_node(node)
        replaced += 1
    if replaced:
        graph_module.graph.lint()
        graph_module.recompile()
    return replaced


def export_features_onnx(module: nn.Module, size: int, target=None, opset: int = 17) -> bytes | None:
    """Export a features module (images (B, 3, H, W) float RGB 0..255 -> features) to ONNX with
    dynamic batch, height and width, traced at ``size``. Written to ``target`` (a path or file
    object) when given, else returned as bytes."""
    try:
        param = next(module.parameters())
        device = param.device
    except StopIteration:
        device = torch.device("cpu")
    example = torch.zeros(1, 3, size, size, device=device)
    buffer = io.BytesIO() if target is None else target
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # the TorchScript exporter's deprecation notice
        torch.onnx.export(module.eval(), (example,), buffer, dynamo=False, opset_version=opset,
                          input_names=["images"], output_names=["features"],
                          dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"},
                                        "features": {0: "batch", 2: "feature_height", 3: "feature_width"}})
    return buffer.getvalue() if target is None else None


def onnx_session(model_bytes_or_path, threads: int | None = None, fixed_dims: dict | None = None):
    """An ONNX Runtime CPU session: ``threads`` intra-op threads (default: torch's count, i.e. the
    thread policy's), one inter-op thread, sequential execution, no spinning between calls.

    ``fixed_dims`` ({dimension name: size}) pins the model's named dynamic dimensions, so ONNX
    Runtime plans the whole graph for one input shape (measured: ~10% faster per SiamFC search
    batch than the dynamic graph, outputs equal to 1e-6). Other options, measured the same way
    (interleaved A/B in one process, 1 thread, SiamFC's search batch (3, 3, 255, 255)):
    ``ORT_ENABLE_ALL`` (kept; it adds the NCHWc layout) vs ``ORT_ENABLE_EXTENDED``: EXTENDED 1.34x
    slower; the CPU memory arena off, or spinning on: within 2% (noise), so left at the arena's
    default and spinning off (on a shared CPU idle threads must not busy-wait).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    for name, size in (fixed_dims or {}).items():
        options.add_free_dimension_override_by_name(name, int(size))
    return ort.InferenceSession(model_bytes_or_path, options, providers=["CPUExecutionProvider"])


IMAGE_DIMS = ("batch", "channels", "height", "width")   # names of the exported input's dimensions


class OnnxRuntimeFeatures:
    """Features through ONNX Runtime, one session per input shape.

    The model (dynamic batch, height and width) is exported once; each input shape a tracker uses
    (exemplar bank, search batch of ``scale_num`` crops; SiamRPN's single crops) gets its own
    session with those dimensions pinned (:func:`onnx_session`), created on first use: a few
    sessions of ~1 MB each. Beyond ``max_fixed_shapes`` shapes one dynamic session serves the rest.
    Takes and returns CPU float tensors; :meth:`images_from_crops` makes the input without copies.
    """

    def __init__(self, model_bytes: bytes, threads: int | None = None, max_fixed_shapes: int = 8):
        self.model_bytes = model_bytes
        self.threads = int(threads or torch.get_num_threads())   # the thread policy at build
        self.max_fixed_shapes = int(max_fixed_shapes)
        self.sessions: dict = {}                                  # input shape (or None: dynamic) -> session

    def session_for(self, shape) -> object:
        """The session for inputs of ``shape`` (N, 3, H, W), created on first use."""
        shape = tuple(int(v) for v in shape)
        session = self.sessions.get(shape)
        if session is not None:
            return session
        fixed = len([key for key in self.sessions if key is not None]) < self.max_fixed_shapes
        key = shape if fixed else None
        if key not in self.sessions:
            dims = {name: size for name, size in zip(IMAGE_DIMS, shape) if name != "channels"} if fixed else None
            self.sessions[key] = onnx_session(self.model_bytes, self.threads, dims)
        return self.sessions[key]

    def run(self, array):
        """Features of a float32 (N, 3, H, W) array, as an array."""
        import numpy as np

        array = np.ascontiguousarray(array, dtype=np.float32)    # no copy when it already is
        return self.session_for(array.shape).run(None, {"images": array})[0]

    def images_from_crops(self, crops, device=None) -> torch.Tensor:
        """(N, H, W, 3) uint8 crops -> a contiguous float32 (N, 3, H, W) CPU tensor in one pass
        (its ``numpy()`` is what ONNX Runtime reads, without another copy). ``device`` is accepted
        for the trackers' common call; ONNX Runtime runs on the CPU."""
        import numpy as np

        return torch.from_numpy(np.ascontiguousarray(crops.transpose(0, 3, 1, 2), dtype=np.float32))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.run(images.detach().cpu().numpy()))


class _TorchFeatures:
    def __init__(self, module: nn.Module):
        self.module = module

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.module(images)


class _ModelFeatures:
    def __init__(self, model: nn.Module):
        self.model = model

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.extract(images).out


def build_features(model: nn.Module, backend: str | None, device=None, live_model: bool = True):
    """The feature extractor ``backend`` (see :func:`resolve_backend`) makes of a Siamese model
    that is already on ``device``; call it under ``torch.inference_mode``."""
    backend = resolve_backend(backend, device, live_model)
    if backend == REFERENCE_BACKEND:
        return _ModelFeatures(model)
    folded = FoldedFeatures(model)
    if backend == "torch":
        return _TorchFeatures(folded)
    cpu_copy = copy.deepcopy(folded).cpu()
    size = int(getattr(model.config, "instance_size", 255))
    crops_as_convolutions(cpu_copy.backbone, torch.zeros(1, 3, size, size))      # shapes only
    return OnnxRuntimeFeatures(export_features_onnx(cpu_copy, size))
