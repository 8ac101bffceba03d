"""Speed measurements of trackers, the FPS benchmark's machinery (``tools/benchmark_fps.py``):
per-frame ``update()`` times of one tracker, trackers run side by side frame by frame (interleaved,
so load changes hit all of them alike), a backbone's forward alone and a SiamFC correlation alone
(``torch.utils.benchmark``), and the machine facts the times depend on. Medians and quartiles in
ms, FPS = 1 / median."""
from __future__ import annotations

import time

import numpy as np

__all__ = ["BenchmarkError", "timing_stats", "time_tracker", "time_backbone", "time_interleaved", "time_correlation",
           "machine_info"]


class BenchmarkError(ValueError):
    """Bad input to the benchmark."""


def _sync(device) -> None:
    import torch
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timing_stats(seconds) -> dict:
    """Median, quartiles (ms) and FPS = 1 / median of per-call times in seconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    q25, median, q75 = np.percentile(ms, [25, 50, 75])
    return {"median_ms": float(median), "q25_ms": float(q25), "q75_ms": float(q75),
            "iqr_ms": float(q75 - q25), "fps": float(1000.0 / median) if median > 0 else None,
            "mean_fps": float(np.mean(1000.0 / ms[ms > 0])) if (ms > 0).any() else None,
            "n": int(ms.size)}


def time_tracker(tracker, frames: list, init_box, warmup: int, count: int,
                 device=None) -> dict:
    """Per-frame update() time of a got10k tracker on ``frames`` (PIL images, cycled)."""
    if count < 1 or warmup < 0:
        raise BenchmarkError("need --frames >= 1 and --warmup >= 0")
    if len(frames) < 2:
        raise BenchmarkError("the benchmark sequence needs at least 2 frames")
    tracker.init(frames[0], np.asarray(init_box, dtype=np.float64))
    # A hand-written loop, not torch.utils.benchmark.Timer: update() is stateful (each call moves
    # the target), so every call must see the next frame, once, in order; a library timer repeats
    # one statement as often as it likes.
    times = []
    for i in range(warmup + count):
        image = frames[1 + i % (len(frames) - 1)]
        start = time.perf_counter()
        tracker.update(image)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return timing_stats(times)


def time_backbone(backbone, size: int, warmup: int, min_run_time: float, forward=None) -> dict:
    """Forward time of ``backbone`` alone on a (1, 3, size, size) input, batch 1, measured by
    ``torch.utils.benchmark.Timer.blocked_autorange`` (blocks of calls for at least
    ``min_run_time`` seconds, on torch's current thread count, CUDA synchronised) after
    ``warmup`` untimed calls; ``forward`` (e.g. a tracker's backend feature extractor) is what
    runs instead of ``backbone`` if given. Statistics are over the blocks' per-call times."""
    import torch
    from torch.utils.benchmark import Timer

    try:
        param = next(backbone.parameters())
        device, dtype = param.device, param.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    x = torch.rand(1, 3, size, size, device=device, dtype=dtype) * 255.0
    call = forward or backbone

    @torch.inference_mode()
    def run_once():
        call(x)

    was_training = backbone.training
    backbone.eval()
    try:
        timer = Timer(stmt="run_once()", globals={"run_once": run_once}, num_threads=torch.get_num_threads(),
                      label="backbone", description=f"1x3x{size}x{size}")
        if warmup > 0:
            timer.timeit(warmup)
        measurement = timer.blocked_autorange(min_run_time=min_run_time)
    finally:
        backbone.train(was_training)
    stats = timing_stats(measurement.times)
    stats.update({"input": [1, 3, size, size],
                  "calls": int(measurement.number_per_run * len(measurement.times)),
                  "calls_per_block": int(measurement.number_per_run),
                  "timer": "torch.utils.benchmark.blocked_autorange"})
    return stats


def machine_info() -> dict:
    """What the timing depends on: CPU, cores, load, threads and library versions."""
    import os
    import platform

    import cv2
    import torch

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    try:
        from importlib.metadata import PackageNotFoundError, version
        onnxruntime = version("onnxruntime")
    except PackageNotFoundError:
        onnxruntime = None
    return {"cpu": cpu, "cores": os.cpu_count(), "load_average": load, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "opencv": cv2.__version__,
            "opencv_threads": cv2.getNumThreads(), "onnxruntime": onnxruntime, "numpy": np.__version__,
            "python": platform.python_version()}


def time_interleaved(trackers: dict, sequences, warmup: int) -> dict:
    """End-to-end times of trackers run side by side: for each sequence every tracker is
    initialised, then each frame (decoded once, not timed) goes to every tracker in an order that
    rotates from frame to frame, so load changes hit all of them alike. ``warmup`` untimed updates
    on the first sequence come first. Returns per tracker: frames, total seconds (init + updates),
    FPS = frames / total, and the median / IQR of the update times."""
    # Timed by hand, per call: a library timer (torch.utils.benchmark) repeats one statement, but
    # each tracker's update is stateful and must see every frame once, in order, interleaved.
    labels = list(trackers)
    first = True
    times = {label: [] for label in labels}
    totals = {label: 0.0 for label in labels}
    frames_done = 0
    for _name, frames, box in sequences:
        if first and warmup > 0:
            for label in labels:
                trackers[label].init(frames[0], box.copy())
                for i in range(warmup):
                    trackers[label].update(frames[1 + i % (len(frames) - 1)])
        first = False
        for t, frame in enumerate(frames):
            order = labels[t % len(labels):] + labels[:t % len(labels)]
            for label in order:
                start = time.perf_counter()
                if t == 0:
                    trackers[label].init(frame, box.copy())
                else:
                    trackers[label].update(frame)
                elapsed = time.perf_counter() - start
                totals[label] += elapsed
                if t > 0:
                    times[label].append(elapsed)
        frames_done += len(frames)
    return {label: {"frames": frames_done, "total_s": totals[label],
                    "fps": frames_done / totals[label] if totals[label] > 0 else None,
                    "update": timing_stats(times[label])} for label in labels}


def time_correlation(tracker, frame: np.ndarray, min_run_time: float) -> dict | None:
    """A SiamFC tracker's correlation alone, conv2d (:func:`tracker.heads.xcorr_bank`, the model's
    own) against one GEMM and a shifted sum (:func:`tracker.heads.xcorr_gemm`), on the tracker's
    own template bank and its search features of ``frame`` at its current state (call after
    updates), each by ``blocked_autorange``; None for trackers without a template bank."""
    import torch
    from torch.utils.benchmark import Timer

    template, correlates_by_gemm = getattr(tracker, "template", None), getattr(tracker, "correlates_by_gemm", None)
    if not isinstance(template, torch.Tensor) or correlates_by_gemm is None:
        return None
    from tracker.heads import xcorr_bank, xcorr_gemm

    with torch.inference_mode():
        search = tracker.features(tracker._tensor(tracker.search_crops(frame)))
        difference = (xcorr_bank(template, search) - xcorr_gemm(template, search)).abs().max().item()
    result = {"template": list(template.shape), "search": list(search.shape),
              "used": "gemm" if correlates_by_gemm() else "conv2d", "max_abs_difference": difference}
    for label, correlate in (("conv2d", xcorr_bank), ("gemm", xcorr_gemm)):
        timer = Timer(stmt="correlate(z, x)", globals={"correlate": correlate, "z": template, "x": search},
                      num_threads=torch.get_num_threads(), label="correlation", description=label)
        with torch.inference_mode():
            measurement = timer.blocked_autorange(min_run_time=min_run_time)
        result[f"{label}_ms"] = measurement.median * 1e3
    result["gemm_speedup"] = result["conv2d_ms"] / result["gemm_ms"]
    return result
