#!/usr/bin/env python
"""Export a tracker's networks to ONNX and TorchScript, each checked against torch.

    python tools/export.py --tracker siamfc --out exported/
    python tools/export.py --tracker siamrpn --checkpoint runs/siamrpn.pth --formats onnx --out exported/

Two networks per tracker, both in eval mode with BatchNorm (and, where exact, the input
normalisation) folded into the convolutions (tracker/backends.py):

- ``features``: images (B, 3, H, W) float RGB 0..255 -> features; dynamic batch and size. This
  is the part a tracker runs on every frame; the correlation with the cached template is cheap.
- ``siamese``: the whole network, template (1, 3, e, e) and search (B, 3, s, s) at the
  configured exemplar/instance sizes -> the SiamFC response, or the SiamRPN (cls, loc) maps.

Each exported file is loaded back and run (ONNX: by ONNX Runtime) on random input; the JSON
printed on stdout gives every file's largest absolute difference to the unfolded torch model.
Files are written atomically (a reader never sees half a file). Bad input: one ``error: ...``
line and exit status 2; an exported network that does not match torch: exit status 1.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}
MAX_BATCH = 64     # check inputs of batch x 3 x 255 x 255 floats (the trackers search up to 15 scales at once)


class ExportError(ValueError):
    """Bad input to the export tool."""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Export a tracker's networks to ONNX / TorchScript, checked against torch.")
    p.add_argument("--tracker", default="siamfc", help="tracker.build_tracker name of the toolkit's own "
                   "(siamfc, siamrpn, re-siamfc, nanotrack-ien, ...; default siamfc)")
    p.add_argument("--checkpoint", type=Path, default=None, help="tracker checkpoint (default: the bundled weights)")
    p.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS), help="default: both")
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    p.add_argument("--batch", type=int, default=3,
                   help=f"search batch of the check inputs (default 3: the scales; at most {MAX_BATCH})")
    p.add_argument("--seed", type=int, default=0, help="seed of the random check inputs")
    p.add_argument("--rtol", type=float, default=1e-4,
                   help="allowed difference, relative to the largest torch output (default 1e-4)")
    return p.parse_args(argv)


class SiameseExport(torch.nn.Module):
    """The whole network with its feature path folded: (template, search) -> head outputs."""

    def __init__(self, model, features):
        super().__init__()
        self.features = features
        self.model = model

    def forward(self, template: torch.Tensor, search: torch.Tensor):
        return self.model.head(self.features(template), self.features(search))


def _networks(model, batch: int, seed: int) -> dict:
    """name -> (folded module, reference function, example inputs, ONNX input names, dynamic axes)."""
    from tracker.backends import FoldedFeatures

    model = model.eval()
    features = FoldedFeatures(model).cpu()
    cfg = model.config
    gen = torch.Generator().manual_seed(seed)
    search = torch.rand(batch, 3, cfg.instance_size, cfg.instance_size, generator=gen) * 255.0
    template = torch.rand(1, 3, cfg.exemplar_size, cfg.exemplar_size, generator=gen) * 255.0
    model = model.cpu()
    return {
        "features": (features, lambda x: model.extract(x).out, (search,), ["images"],
                     {"images": {0: "batch", 2: "height", 3: "width"}}),
        "siamese": (SiameseExport(model, features).eval(), lambda z, x: model.head(model.extract(z).out, model.extract(x).out),
                    (template, search), ["template", "search"],
                    {"search": {0: "batch"}} if model.SEARCH_BATCH_EXPORTS_DYNAMIC else None),
    }


def _as_list(outputs) -> list:
    return list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]


def _max_abs_diff(got: list, want: list) -> tuple[float, float]:
    import numpy as np

    diff = max(float(np.max(np.abs(np.asarray(g, dtype=np.float64) - w.double().numpy()))) for g, w in zip(got, want))
    scale = max(float(w.abs().max()) for w in want)
    return diff, scale


def export_onnx(module, inputs, input_names, dynamic_axes) -> bytes:

    buffer = io.BytesIO()
    outputs = _as_list(module(*inputs))
    output_names = ["output"] if len(outputs) == 1 else [f"output{i}" for i in range(len(outputs))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # the TorchScript-based exporter's deprecation notice
        torch.onnx.export(module, tuple(inputs), buffer, dynamo=False, opset_version=17,
                          input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes)
    return buffer.getvalue()


def run_onnx(data: bytes, input_names, inputs) -> list:
    from tracker.backends import onnx_session

    session = onnx_session(data)
    return session.run(None, {name: x.numpy() for name, x in zip(input_names, inputs)})


def export_torchscript(module, inputs) -> bytes:

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, tuple(inputs), check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
    return buffer.getvalue()


def run_torchscript(data: bytes, inputs) -> list:

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(io.BytesIO(data), map_location="cpu")
    with torch.inference_mode():
        return [o.numpy() for o in _as_list(loaded(*inputs))]


def run(args: argparse.Namespace) -> dict:
    from common.atomic import write_bytes_atomic
    from tracker import build_tracker
    from tracker.backends import BackendError, onnxruntime_available

    if args.batch < 1:
        raise ExportError(f"--batch must be >= 1, got {args.batch}")
    if args.batch > MAX_BATCH:
        raise ExportError(f"--batch must be at most {MAX_BATCH}, got {args.batch}")
    if args.seed < 0:
        raise ExportError(f"--seed must be a non-negative integer, got {args.seed}")
    if not args.rtol > 0:
        raise ExportError(f"--rtol must be positive, got {args.rtol}")
    if "onnx" in args.formats and not onnxruntime_available():
        raise ExportError("ONNX export and its check need the onnx and onnxruntime packages "
                          "(pip install onnx onnxruntime), or --formats torchscript")
    if args.out.exists() and not args.out.is_dir():
        raise ExportError(f"--out {args.out} is not a folder")
    try:
        tracker = build_tracker(args.tracker, checkpoint=args.checkpoint, device="cpu", backend="torch-unfused")
    except BackendError as exc:
        raise ExportError(str(exc)) from None
    # the toolkit's trackers hold their torch network (NanoTrack's in its networks); baselines have none
    model = getattr(tracker, "model", None) or getattr(getattr(tracker, "networks", None), "model", None)
    if not isinstance(model, torch.nn.Module):
        raise ExportError(f"{args.tracker} has no network of this toolkit to export (a baseline runs its "
                          f"own files or OpenCV)")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.tracker.strip().lower() if args.checkpoint is None else f"{args.tracker.strip().lower()}@{args.checkpoint.stem}"
    files = []
    for network, (module, reference, inputs, input_names, dynamic_axes) in _networks(model, args.batch,
                                                                                      args.seed).items():
        with torch.inference_mode():
            want = _as_list(reference(*inputs))
        for fmt in args.formats:
            try:
                if fmt == "onnx":
                    data = export_onnx(module, inputs, input_names, dynamic_axes)
                    got = run_onnx(data, input_names, inputs)
                else:
                    data = export_torchscript(module, inputs)
                    got = run_torchscript(data, inputs)
            except BackendError as exc:
                raise ExportError(str(exc)) from None
            diff, scale = _max_abs_diff(got, want)
            path = args.out / f"{stem}.{network}{SUFFIXES[fmt]}"
            write_bytes_atomic(path, data)
            files.append({"path": str(path), "format": fmt, "network": network,
                          "inputs": {n: list(x.shape) for n, x in zip(input_names, inputs)},
                          "outputs": [list(w.shape) for w in want], "max_abs_diff": diff, "max_abs_output": scale,
                          "matches": diff <= args.rtol * max(scale, 1e-12), "bytes": len(data),
                          "sha256": hashlib.sha256(data).hexdigest()})
    return {"tracker": args.tracker, "checkpoint": None if args.checkpoint is None else str(args.checkpoint),
            "folded": "BatchNorm into convolutions; input normalisation where the first convolution is unpadded",
            "check": {"seed": args.seed, "rtol": args.rtol, "reference": "the unfolded torch model"},
            "torch": torch.__version__, "files": files}


def main(argv=None) -> int:
    args = parse_args(argv)
    from common.atomic import describe_os_error
    from common.checkpoints import CheckpointError
    from data.frames import TrackerError

    try:
        report = run(args)
    except (ExportError, TrackerError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    bad = [f["path"] for f in report["files"] if not f["matches"]]
    if bad:
        print(f"error: exported network(s) differ from torch beyond --rtol: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
