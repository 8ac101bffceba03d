"""Result archives for the benchmarks whose test ground truth is withheld (evaluation servers).

GOT-10k: the archive the got10k toolkit's ``ExperimentGOT10k.report`` makes for the test set
(``shutil.make_archive`` of the tracker's result folder): per sequence ``<seq>/<seq>_001.txt``
(x,y,w,h per frame, "%.3f", comma separated) and ``<seq>/<seq>_time.txt`` (seconds per frame,
"%.8f").
TrackingNet: one ``<seq>.txt`` per sequence at the top of the zip (x,y,w,h per frame, comma
separated).
"""
from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import numpy as np

from common.atomic import write_bytes_atomic

__all__ = ["SUBMISSION_FORMATS", "submission_archive", "write_submission"]

SUBMISSION_FORMATS = ("got10k", "trackingnet")


def _table(values: np.ndarray, fmt: str) -> str:
    text = io.StringIO()
    np.savetxt(text, values, fmt=fmt, delimiter=",")
    return text.getvalue()


def submission_archive(fmt: str, results: dict) -> bytes:
    """The zip archive (bytes) of one tracker's ``results`` {sequence: SequenceResult}."""
    if fmt not in SUBMISSION_FORMATS:
        raise ValueError(f"unknown submission format {fmt!r} (use {', '.join(SUBMISSION_FORMATS)})")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, result in results.items():
            boxes = np.asarray(result.boxes, dtype=np.float64).reshape(-1, 4)
            if not np.isfinite(boxes).all():
                raise ValueError(f"sequence {name}: the tracker gave a non-finite box, which "
                                 "the evaluation server does not accept")
            if fmt == "got10k":
                times = np.asarray(result.times, dtype=np.float64).reshape(-1, 1)
                archive.writestr(f"{name}/{name}_001.txt", _table(boxes, "%.3f"))
                archive.writestr(f"{name}/{name}_time.txt", _table(times, "%.8f"))
            else:
                archive.writestr(f"{name}.txt", _table(boxes, "%.4f"))
    return buffer.getvalue()


def write_submission(fmt: str, label: str, results: dict, out_dir) -> Path:
    """Write ``<out_dir>/<label>-<fmt>-submission.zip`` atomically; returns its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9._@=,+-]+", "_", label)
    path = out_dir / f"{safe}-{fmt}-submission.zip"
    write_bytes_atomic(path, submission_archive(fmt, results))
    return path
