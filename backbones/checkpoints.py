"""The checkpoint convention shared by every training loop of the toolkit.

A checkpoint is a dict saved with torch.save: {"config": {..., "backbone": BackboneConfig dict},
"model": state_dict, ...} (tracker checkpoints nest it: config["model"]["backbone"]); the
backbone's parameters are the "backbone."-prefixed keys of "model".
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unreadable or not one of this toolkit's."""


def save_atomic(obj, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # corrupt, truncated or not a torch file
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from None
    if not isinstance(ckpt, dict) or "config" not in ckpt or "model" not in ckpt:
        raise CheckpointError(f"{path} is not a checkpoint of this toolkit (needs 'config' and 'model')")
    return ckpt


def backbone_config_of(ckpt: dict, path="checkpoint") -> dict:
    """The BackboneConfig dict of a checkpoint: config["backbone"], or config["model"]["backbone"]
    for tracker checkpoints."""
    config = ckpt["config"] if isinstance(ckpt.get("config"), dict) else {}
    cfg = config.get("backbone")
    if cfg is None and isinstance(config.get("model"), dict):
        cfg = config["model"].get("backbone")
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: its config has no 'backbone' section")
    return cfg


def backbone_from_checkpoint(path: str | Path, map_location="cpu"):
    """Rebuild the backbone stored in a checkpoint and load its weights."""
    from . import build_backbone

    ckpt = load_checkpoint(path, map_location)
    cfg = backbone_config_of(ckpt, path)
    backbone = build_backbone(cfg)
    state = {k[len("backbone."):]: v for k, v in ckpt["model"].items() if k.startswith("backbone.")}
    # e2cnn holds its expanded filters as buffers only in eval mode: load in train mode without them.
    state = {k: v for k, v in state.items() if not k.endswith((".filter", ".expanded_bias"))}
    backbone.train()
    if not state:
        raise CheckpointError(f"{path}: no 'backbone.' weights in its model state")
    load_weights(backbone, state, f"{path}: backbone weights")
    return backbone, ckpt


def load_weights(module: torch.nn.Module, state: dict, what: str) -> None:
    """load_state_dict that names the first mismatching key (or shape) in a CheckpointError."""
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:          # same names, other shapes: torch lists every one
        first = next((ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln), str(exc).splitlines()[0])
        raise CheckpointError(f"{what} do not match its config ({first})") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{what} do not match its config "
            f"(missing {len(missing)}, unexpected {len(unexpected)}: e.g. {(missing or unexpected)[0]})"
        )
