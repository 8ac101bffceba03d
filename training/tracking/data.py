"""The pairs of a tracker training run: one pair sampler per source of ``[data]`` (video folders,
photos, the generated sequences) mixed by weight, the held-out validation pairs, and the batches of
each optimizer step (the same pairs whatever the number of processes; every random choice a
function of the seed and the step, so a run resumes exactly)."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from .config import DataConfig, RunConfig, SourceConfig

__all__ = ["load_pairs", "load_validation_pairs", "StepBatches", "seed_worker", "step_seed", "worker_error_message"]


def load_pairs(config: RunConfig, workers: int = 1):
    """The pair dataset of a run config: one PairSampler (the embedded generated dataset or a
    GOT-10k/OTB folder), or a MixedPairs of the config's [[data.sources]]."""
    data = config.data
    sources = data.sources or [_lone_source(data)]
    samplers = [_source_pairs(config, source, k, workers) for k, source in enumerate(sources)]
    if not data.sources:
        return samplers[0]
    from training.tracking.pairs import MixedPairs

    return MixedPairs(samplers, [s.weight for s in sources], config.train.pairs_per_epoch, config.train.seed,
                      names=[f"{s.kind}:{s.path}" if s.path else s.kind for s in sources])


def load_validation_pairs(config: RunConfig, workers: int = 1, videos: str = "held-out"):
    """The held-out pairs of ``train.val_every``: ``train.val_pairs`` pairs of the sources' held-out
    videos (``data.val_fraction``), without augmentation and with fixed seeds (``data.val_seed``),
    so every pass sees the same crops. None when no source holds videos out.

    ``videos="training"``: as many pairs drawn the same way from the videos the run trains on, of
    the same sources, the other side of the generalisation gap (``Trainer.fit_gap``)."""
    if videos not in ("held-out", "training"):
        raise ValueError(f"videos must be 'held-out' or 'training', got {videos!r}")
    data = config.data
    sources = data.sources or [_lone_source(data)]
    samplers, weights, names = [], [], []
    for k, source in enumerate(sources):
        if not _is_split(config, source):
            continue
        seen, held = _source_sequences(config, source, workers)
        if held:
            items = held if videos == "held-out" else seen
            samplers.append(_sampler(config, source, k, items, config.train.val_pairs, validation=True))
            weights.append(source.weight)
            names.append(f"{source.kind}:{source.path}" if source.path else source.kind)
    if not samplers:
        return None
    if len(samplers) == 1:
        return samplers[0]
    from training.tracking.pairs import MixedPairs

    return MixedPairs(samplers, weights, config.train.val_pairs, data.val_seed, names=names)


def _lone_source(data: DataConfig) -> SourceConfig:
    return SourceConfig(kind="generated" if data.path == "generated" else "video", path=data.path)


def _is_split(config: RunConfig, source: SourceConfig) -> bool:
    """Whether ``source`` holds videos out: video sources, and the lone generated default."""
    if config.data.val_fraction <= 0:
        return False
    return source.kind == "video" or (source.kind == "generated" and not config.data.sources)


def _source_sequences(config: RunConfig, source: SourceConfig, workers: int) -> tuple[list, list]:
    """(training, held-out) sequences of a video or generated source."""
    from data import load_sequences, split_by_source

    data = config.data
    if source.kind == "generated":
        from data.generated import default_dataset

        root = default_dataset("train", workers=max(1, workers))
    else:
        root = Path(source.path).expanduser()
    sequences = load_sequences(root, layout=data.layout, subset=data.subset or None)
    if _is_split(config, source):
        return split_by_source(sequences, data.val_fraction, data.val_seed)
    return sequences, []


def _sampler(config: RunConfig, source: SourceConfig, index: int, items, pairs: int, validation: bool = False):
    from training.tracking.pairs import FrameFilter, PairSampler, PhotoPairSampler

    data, m = config.data, config.model
    # the sources of a mix draw independently; a lone source keeps the run's own seed
    seed = (data.val_seed if validation else config.train.seed) + 1000 * index
    rotation = source.max_rotation_deg
    if rotation < 0:                     # unset: photos turn any way, the rest as data.max_rotation_deg
        rotation = 180.0 if source.kind == "photos" else data.max_rotation_deg
    common = dict(exemplar_size=m.exemplar_size, instance_size=m.instance_size, context=m.context,
                  augment=data.augment and not validation, max_rotation_deg=rotation, seed=seed)
    common.update({name: getattr(source, name) for name in ("max_shift", "max_stretch") if getattr(source, name) >= 0})
    if config.train.distill_weight > 0 and not validation:   # the teacher sees the unturned search crop
        common["upright_twin"] = True
    if not data.sources:                 # the single-folder form keeps SiamFC's frame filter
        rules = FrameFilter()
    else:
        rules = FrameFilter(min_side=source.min_side, max_relative=source.max_relative)
    if source.kind == "photos":
        return PhotoPairSampler(items, pairs, frame_filter=rules, **common)
    return PairSampler(items, pairs, frame_range=data.frame_range, frame_filter=rules, **common)


def _source_pairs(config: RunConfig, source: SourceConfig, index: int, workers: int):
    if source.kind == "photos":
        from data.photos import load_photos

        items = load_photos(Path(source.path).expanduser())
    else:
        items = _source_sequences(config, source, workers)[0]
    return _sampler(config, source, index, items, config.train.pairs_per_epoch)


class StepBatches(torch.utils.data.Sampler):
    """Batches of pair indices, one per optimizer step from ``start_step`` on.

    Global step s covers pairs [s·B, (s+1)·B); process ``rank`` of ``world`` takes its contiguous
    share, so a step sees the same pairs whatever the number of processes.
    """

    def __init__(self, steps: int, batch_size: int, rank: int = 0, world: int = 1, start_step: int = 0):
        self.steps, self.batch_size, self.start_step = steps, batch_size, start_step
        self.local = batch_size // world
        self.offset = rank * self.local

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step)

    def __iter__(self):
        for s in range(self.start_step, self.steps):
            first = s * self.batch_size + self.offset
            yield list(range(first, first + self.local))


def seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def step_seed(seed: int, step: int, rank: int) -> int:
    """A seed for the random parts of one step (IEN transforms, RPN anchor sampling)."""
    return int(np.random.SeedSequence([int(seed), int(step), int(rank)]).generate_state(1, np.uint32)[0])


def worker_error_message(exc: BaseException) -> str:
    """The original message of an exception re-raised by a DataLoader worker (no traceback)."""
    text = str(exc)
    if "DataLoader worker" not in text:
        return text
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else text
    head, sep, tail = last.partition(": ")
    return tail if sep and (head.endswith("Error") or head.endswith("Exception")) else last
