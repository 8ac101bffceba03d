"""Weights in and out of tracker training: a run starts from a tracker checkpoint or from a public
model's files (``train.init_from``: NanoTrack v3's ONNX folder), and ends in a small inference
checkpoint (:func:`export_weights`)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from common.checkpoints import CheckpointError, load_checkpoint, save_atomic
from tracker.models import build_model

__all__ = ["initialize_from", "export_weights"]


def initialize_from(model: nn.Module, path: str | Path) -> dict:
    """Start ``model`` from the weights of a tracker checkpoint (fine-tuning).

    Every backbone tensor must be there with the same shape (same backbone config); head and neck
    tensors are taken where names and shapes match and otherwise keep their fresh initialisation
    (e.g. a SiamRPN head on SiamFC weights). Returns which tensors were loaded and which were not.
    """
    if Path(path).is_dir():
        state = _imported_weights(model, Path(path))
    else:
        state = load_checkpoint(path, "cpu").get("model")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: no model weights to start from")
    own = model.state_dict()
    missing = [k for k in own if k.startswith("backbone.") and
               (k not in state or tuple(state[k].shape) != tuple(own[k].shape))]
    if missing:
        raise CheckpointError(f"train.init_from {path}: its backbone does not match the config's "
                              f"({len(missing)} tensors differ, e.g. {missing[0]}); use a checkpoint of the same "
                              "backbone name, group and width")
    loaded = {k: state[k].to(own[k].dtype) for k in own if k in state and tuple(state[k].shape) == tuple(own[k].shape)}
    model.load_state_dict(loaded, strict=False)
    return {"loaded": len(loaded), "fresh": sorted(set(own) - set(loaded))}


def _imported_weights(model: nn.Module, folder: Path) -> dict:
    """The weights of a pretrained tracker's files in ``folder`` (NanoTrack v3's two ONNX files,
    ``nanotrackv3_backbone.onnx`` and ``nanotrackv3_head.onnx``) as a state dict of ``model``."""
    from tracker.nanotrack import import_nanotrack_v3

    if getattr(model.config, "type", None) != "nanotrack":
        raise CheckpointError(f"train.init_from {folder}: a folder of NanoTrack v3 files starts a nanotrack "
                              f"model, not a {model.config.type} model")
    try:
        imported = import_nanotrack_v3(folder / "nanotrackv3_backbone.onnx", folder / "nanotrackv3_head.onnx",
                                       group=model.config.backbone.group)
    except (FileNotFoundError, ValueError) as exc:
        raise CheckpointError(f"train.init_from: {exc}") from None
    return imported.state_dict()



def export_weights(checkpoint: str | Path, out_path: str | Path, half: bool = False) -> dict:
    """Write a small inference checkpoint: {"config", "model"} (+ a brief training record).

    ``half``: store floating-point weights as float16 (load_state_dict casts them back to float32).
    Loadable by ``tracker.build_tracker(name, checkpoint=out_path)`` (it reads config["model"]).
    """
    ckpt = load_checkpoint(checkpoint)
    if "model" not in ckpt["config"]:
        raise CheckpointError(f"{checkpoint}: its config has no [model] section (not a tracker checkpoint)")
    build_model(ckpt["config"]["model"]).load_state_dict(ckpt["model"])   # check it loads
    state = {k: (v.detach().to("cpu", torch.float16) if half and v.is_floating_point() else v.detach().cpu())
             for k, v in ckpt["model"].items()}
    epochs = ckpt.get("history", {}).get("epochs", []) if isinstance(ckpt.get("history"), dict) else []
    exported = {
        "config": ckpt["config"],
        "model": state,
        "trained": {"epochs": ckpt.get("epoch"), "steps": ckpt.get("step"),
                    "last_epoch": epochs[-1] if epochs else None,
                    "dtype": "float16" if half else "float32"},
    }
    save_atomic(exported, out_path)
    return {"export": str(out_path), "bytes": Path(out_path).stat().st_size, "dtype": exported["trained"]["dtype"]}
