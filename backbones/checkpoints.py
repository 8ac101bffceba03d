"""The backbone inside a checkpoint: its config is config["backbone"] (classification) or
config["model"]["backbone"] (trackers); its parameters are the "backbone."-prefixed keys of "model"."""
from __future__ import annotations

from pathlib import Path

from common.checkpoints import CheckpointError, load_checkpoint, load_weights


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
