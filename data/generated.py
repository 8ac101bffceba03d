"""Generated sequences on disk: the GOT-10k layout writer and the cached embedded default datasets.

``generate_dataset`` writes sequences of :func:`data.synthetic.generate_sequence` in the GOT-10k
layout (read back by ``data.load_sequences`` and by the got10k toolkit); ``default_dataset`` is
the cached, embedded default used by training, evaluation and the demo, keyed by its spec (the
generator version included), so a changed generator never reuses a stale cache.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from common.atomic import replaced_directory, temp_path_beside, write_text_atomic
from common.threads import max_workers

from .sprites import _COLOR_PHOTOS, _GRAY_PHOTOS, GeneratorInputError, _list_images
from .synthetic import (
    _DEFAULT_FRAME_SIZE,
    _DEFAULT_SPECS,
    GENERATOR_VERSION,
    GeneratedSequence,
    GeneratorOptions,
    _check_arguments,
    _check_seed,
    generate_sequence,
)

__all__ = ["generate_dataset", "write_sequence", "default_dataset", "default_dataset_spec", "sequence_seed",
           "MAX_SEQUENCES"]

MAX_SEQUENCES = 100_000     # sequences of one generated dataset (one folder each, listed in list.txt)


# ------------------------------------------------------------------------------------------------
# GOT-10k layout writer
def sequence_seed(seed: int, index: int) -> int:
    """Seed of sequence ``index`` of a dataset generated with ``seed`` (independent per sequence)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint32)[0])


def _sequence_name(subset: str, index: int) -> str:
    return f"SYN_{subset}_{index + 1:05d}"


def write_sequence(sequence: GeneratedSequence, folder, jpeg_quality: int = 90) -> Path:
    """Write a GeneratedSequence as a GOT-10k sequence folder (written to a temp folder, then renamed)."""
    folder = Path(folder)
    with replaced_directory(folder) as tmp:
        for t, frame in enumerate(sequence.frames):
            path = tmp / f"{t + 1:08d}.jpg"
            if not cv2.imwrite(str(path), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]):
                raise OSError(f"cannot write {path}")
        np.savetxt(tmp / "groundtruth.txt", sequence.boxes, fmt="%.2f", delimiter=",")
        np.savetxt(tmp / "absence.label", sequence.absent.astype(int), fmt="%d")
        np.savetxt(tmp / "cover.label", sequence.cover.astype(int), fmt="%d")
        cut = sequence.cut_by_image if sequence.cut_by_image is not None else np.zeros(len(sequence), bool)
        np.savetxt(tmp / "cut_by_image.label", np.asarray(cut).astype(int), fmt="%d")
        np.savetxt(tmp / "angle.txt", sequence.angles, fmt="%.3f")
        np.savetxt(tmp / "polygon.txt", sequence.polygons, fmt="%.2f", delimiter=",")
        lines = ["[METAINFO]"]
        for key, value in sequence.meta.items():
            # got10k's reader splits lines on ': ', so values use compact JSON (no ': ' inside)
            lines.append(f"{key}: {json.dumps(value, separators=(',', ':'))}" if isinstance(value, (dict, list))
                         else f"{key}: {value}")
        lines.append(f"resolution: ({sequence.frames[0].shape[1]}, {sequence.frames[0].shape[0]})")
        (tmp / "meta_info.ini").write_text("\n".join(lines) + "\n")
    return folder


def _generate_and_write(job: tuple) -> str:
    folder, seq_seed, index, kwargs = job
    sequence = generate_sequence(seq_seed, **kwargs)
    sequence.meta["sequence_index"] = index
    write_sequence(sequence, folder)
    return folder.name


def generate_dataset(root, num_sequences: int, seed: int = 0, subset: str = "train", num_frames: int = 100,
                     frame_size=(320, 240), rotating: bool = True, object_dir=None, background_dir=None,
                     workers: int = 1, rotation_speed=(0.5, 4.0), overwrite: bool = False, progress: bool = False,
                     **options) -> Path:
    """Generate ``num_sequences`` sequences in GOT-10k layout under ``root/<subset>``; returns that folder.

    Files per sequence: 00000001.jpg ..., groundtruth.txt (x,y,w,h, '%.2f'), absence.label,
    cover.label, cut_by_image.label, angle.txt (deg CCW, cumulative), polygon.txt (x1,y1,...,x4,y4),
    meta_info.ini. Sequence i uses ``sequence_seed(seed, i)``, so it does not depend on the others.
    list.txt is written last: a folder without it is an interrupted run. An existing non-empty
    subset folder is an error unless ``overwrite``.
    """
    GeneratorOptions.from_kwargs(options)        # reject bad input before any work
    seed = _check_seed(seed)
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= max_workers():
        raise GeneratorInputError(f"workers must be a whole number from 1 to {max_workers()} (a few per CPU of this "
                                  f"machine), got {workers!r}")
    if isinstance(num_sequences, bool) or not isinstance(num_sequences, (int, np.integer)) \
            or not 1 <= num_sequences <= MAX_SEQUENCES:
        raise GeneratorInputError(f"num_sequences must be a whole number from 1 to {MAX_SEQUENCES}, "
                                  f"got {num_sequences!r}")
    # generating is CPU-bound: no more processes than CPUs (or sequences)
    processes = min(workers, os.cpu_count() or 1, int(num_sequences))
    _check_arguments(num_frames, frame_size, rotation_speed, sequences_at_once=processes)
    for folder in (object_dir, background_dir):
        if folder is not None:
            _list_images(folder, "object" if folder is object_dir else "background")
    if not subset or "/" in subset or subset.startswith("."):
        raise GeneratorInputError(f"bad subset name {subset!r}")
    out = Path(root) / subset
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise GeneratorInputError(f"output folder is not empty: {out} (pass overwrite=True / --overwrite to replace it)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    kwargs = dict(num_frames=num_frames, frame_size=tuple(frame_size), rotating=rotating,
                  rotation_speed=tuple(rotation_speed),
                  object_dir=None if object_dir is None else str(object_dir),
                  background_dir=None if background_dir is None else str(background_dir), **options)
    jobs = [(out / _sequence_name(subset, i), sequence_seed(seed, i), i, kwargs) for i in range(int(num_sequences))]
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(jobs), desc=f"generating {subset}", unit="seq")
    if processes > 1:
        with ProcessPoolExecutor(max_workers=processes) as pool:
            for _ in pool.map(_generate_and_write, jobs):
                bar is not None and bar.update()
    else:
        for job in jobs:
            _generate_and_write(job)
            bar is not None and bar.update()
    if bar is not None:
        bar.close()
    write_text_atomic(out / "list.txt", "\n".join(job[0].name for job in jobs) + "\n")
    return out


# ------------------------------------------------------------------------------------------------
# the embedded default datasets
def default_dataset_spec(split: str = "train", rotating: bool = True) -> dict:
    """The exact arguments of the default dataset of ``split`` (what its cache key is made of)."""
    if split not in _DEFAULT_SPECS:
        raise GeneratorInputError(f"unknown default split {split!r} (use train or test)")
    spec = dict(_DEFAULT_SPECS[split])
    spec.update(frame_size=list(_DEFAULT_FRAME_SIZE), rotating=bool(rotating), rotation_speed=[0.5, 4.0],
                generator_version=GENERATOR_VERSION, options=dataclasses.asdict(GeneratorOptions()),
                photos=list(_COLOR_PHOTOS + _GRAY_PHOTOS), split=split)
    return spec


def _cache_root(root) -> Path:
    if root is not None:
        return Path(root)
    env = os.environ.get("IEN_CACHE")
    return (Path(env) if env else Path.home() / ".cache" / "ien-tracking") / "generated"


def _cached_dataset(root: Path, spec: dict, workers: int = 1) -> Path:
    """Generate ``spec`` once under ``root/<split>-<rot|static>-<hash>`` (atomically) and return its subset folder."""
    key = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    name = f"{spec['split']}-{'rot' if spec['rotating'] else 'static'}-{key}"
    final = root / name
    subset_dir = final / spec["subset"]
    if (subset_dir / "list.txt").is_file():
        return subset_dir
    root.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_beside(final, directory=True)        # a killed run's folder is removed next time
    try:
        generate_dataset(tmp, spec["num_sequences"], seed=spec["seed"], subset=spec["subset"],
                         num_frames=spec["num_frames"], frame_size=tuple(spec["frame_size"]),
                         rotating=spec["rotating"], rotation_speed=tuple(spec["rotation_speed"]), workers=workers,
                         **spec["options"])
        write_text_atomic(tmp / "spec.json", json.dumps(spec, indent=1, sort_keys=True) + "\n")
        if final.exists() and not (subset_dir / "list.txt").is_file():
            shutil.rmtree(final)                         # not ours: a complete folder has list.txt
        try:
            os.rename(tmp, final)
        except OSError:
            if not (subset_dir / "list.txt").is_file():   # not a concurrent run that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return subset_dir


def default_dataset(split: str = "train", rotating: bool = True, root=None, workers: int = 1) -> Path:
    """The embedded default dataset (GOT-10k layout subset folder), generated once and cached.

    split "train": 40 sequences x 100 frames; "test": 12 x 120 frames (subset folder named "val"
    so that got10k's ExperimentGOT10k can evaluate it locally). Fixed seeds, the test seeds
    disjoint from the train seeds; rotating=False is the non-rotating twin (same seeds and content).
    Cached under ``root`` (default ``$IEN_CACHE/generated`` or ``~/.cache/ien-tracking/generated``)
    in a folder named after a hash of the generator version and all options, so a change
    regenerates. Generated in a temp folder and renamed: an interrupted run leaves nothing that
    is taken as complete.
    """
    return _cached_dataset(_cache_root(root), default_dataset_spec(split, rotating), workers=workers)
