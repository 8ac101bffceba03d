"""Equivariance diagnostics: how far a backbone's pooled features are from rotating with the input.

For each watched layer j and group element T: ‖P f_j(Tx) − T P f_j(x)‖ / ‖P f_j(x)‖, summed over a
batch of real image crops. For non-multiples of 90° the norms are taken inside the inscribed disc.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .cnn import Backbone
from .groups import group_max_pool
from .transforms import BatchTransform, GroupElement, group_elements

DEFAULT_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")


class ImageError(ValueError):
    """An image file that cannot be read."""


def load_crops(paths: list[str] | None, size: int, per_image: int = 2, seed: int = 0) -> torch.Tensor:
    """Square crops (N,3,size,size), float 0..255 RGB, from image files or scikit-image's photos."""
    import cv2

    rng = np.random.default_rng(seed)
    images = []
    if paths:
        for p in paths:
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is None:
                raise ImageError(f"cannot read image {p}")
            images.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    else:
        from skimage import data

        for name in DEFAULT_PHOTOS:
            img = getattr(data, name)()
            if img.ndim == 2:
                img = np.stack([img] * 3, -1)
            images.append(np.ascontiguousarray(img[..., :3]))
    crops = []
    for img in images:
        h, w = img.shape[:2]
        side = min(h, w)
        for _ in range(per_image):
            s = int(rng.integers(side // 2, side + 1))
            y0 = int(rng.integers(0, h - s + 1))
            x0 = int(rng.integers(0, w - s + 1))
            crop = cv2.resize(img[y0 : y0 + s, x0 : x0 + s], (size, size), interpolation=cv2.INTER_AREA)
            crops.append(crop)
    arr = np.stack(crops).astype(np.float32).transpose(0, 3, 1, 2)
    return torch.from_numpy(arr)


@torch.no_grad()
def equivariance_errors(
    backbone: Backbone,
    images: torch.Tensor,
    elements: list[GroupElement] | None = None,
    normalize=None,
) -> dict:
    """Relative equivariance error per watched layer and group element (eval mode).

    Returns {"layers": [...], "elements": [...], "errors": {layer: {element: error}}}.
    ``normalize``: optional callable applied to the images before the backbone.
    """
    was_training = backbone.training
    backbone.eval()
    elements = elements or group_elements(backbone.spec, include_identity=False)
    prep = normalize or (lambda t: t)
    device = next(backbone.parameters()).device
    x = images.to(device)
    base = [group_max_pool(f, backbone.spec) for f in backbone(prep(x)).watched]
    errors: dict[str, dict[str, float]] = {name: {} for name in backbone.watched_names}
    for g in elements:
        t = BatchTransform([g] * x.shape[0])
        moved = [group_max_pool(f, backbone.spec) for f in backbone(prep(t.apply(x))).watched]
        for name, p_x, p_tx in zip(backbone.watched_names, base, moved):
            expected = t.apply(p_x)
            mask = t.valid_mask(*p_tx.shape[-2:], device=p_tx.device, dtype=p_tx.dtype, frame="target")
            diff, ref = p_tx - expected, p_x
            if mask is not None:
                diff, ref = diff * mask, t.apply(p_x) * mask
            errors[name][str(g)] = float(diff.norm() / ref.norm().clamp_min(1e-12))
    backbone.train(was_training)
    return {"layers": list(backbone.watched_names), "elements": [str(g) for g in elements], "errors": errors}


def save_error_plot(result: dict, path: str | Path, title: str = "") -> None:
    """Error per layer, one line per group element (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    layers = result["layers"]
    for el in result["elements"]:
        ax.plot(range(len(layers)), [max(result["errors"][ly][el], 1e-9) for ly in layers], marker="o", label=el)
    ax.set_xticks(range(len(layers)), layers, rotation=30)
    ax.set_yscale("log")
    ax.set_ylabel("relative equivariance error")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from common.atomic import write_with_atomic  # umask mode, no partial file, no link replaced

    try:
        write_with_atomic(path, lambda f: fig.savefig(f, dpi=120, format="png"))
    finally:
        plt.close(fig)


def comparison_figure(results: list[dict], title: str = ""):
    """One line per network (its ``result["model"]`` in the legend): the error per watched layer,
    averaged over that network's group elements, with the min–max over the elements shaded.

    Layers are matched by position (the k-th watched layer of each network); a tick shows the
    layer name, or the names joined by " / " where the networks name it differently. Returns a
    ``matplotlib.figure.Figure`` (no pyplot state).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    depth = max(len(r["layers"]) for r in results)
    for result in results:
        layers, elements = result["layers"], result["elements"]
        per_layer = np.array([[max(result["errors"][ly][el], 1e-9) for el in elements] for ly in layers])
        xs = np.arange(len(layers))
        (line,) = ax.plot(xs, per_layer.mean(1), marker="o", label=str(result.get("model", "?")))
        ax.fill_between(xs, per_layer.min(1), per_layer.max(1), color=line.get_color(), alpha=0.15, linewidth=0)
    ticks = []
    for k in range(depth):
        names = list(dict.fromkeys(r["layers"][k] for r in results if k < len(r["layers"])))
        ticks.append(" / ".join(names))
    ax.set_xticks(range(depth), ticks, rotation=30)
    ax.set_yscale("log")
    ax.set_ylabel("relative equivariance error\n(mean over group elements)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def save_comparison_plot(results: list[dict], path: str | Path, title: str = ""):
    """:func:`comparison_figure` as a PNG, written atomically; returns the figure."""
    from common.atomic import write_with_atomic  # umask mode, no partial file, no link replaced

    fig = comparison_figure(results, title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_with_atomic(path, lambda f: fig.savefig(f, dpi=120, format="png"))
    return fig
