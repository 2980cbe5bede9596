"""The ISBI 2013 SMLM challenge: its data layout, detection on a recovered grid, and its metrics.

Layout: a TIFF stack of frames (N, H, W) and a CSV of the true positions, one emitter a row,
columns ``frame, x, y, intensity`` (frame counted from 1, x / y in nm from the field's
top-left corner, x along the columns), with a header line naming them (``frame``, ``x`` or
``xnano``, ``y`` or ``ynano``, ``intensity``; any other columns, e.g. ``id`` or ``z``, are
ignored) or without a header in that order.

Metrics (Sage et al., "Quantitative evaluation of software packages for single-molecule
localization microscopy", Nat. Methods 2015, the challenge's report): detections are paired with
true emitters of the same frame by an optimal assignment (minimum total distance) restricted to
pairs closer than a tolerance; the paired ones are true positives. Jaccard index TP/(TP+FP+FN),
recall TP/(TP+FN), precision TP/(TP+FP), and the lateral RMSE over the true positives.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

COLUMNS = {"frame": ("frame",), "x": ("x", "xnano", "x_nm"), "y": ("y", "ynano", "y_nm"), "intensity": ("intensity",)}


def _existing(path, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} file not found: {p}")
    return p


def _tifffile():
    try:
        import tifffile
    except ImportError:
        raise ImportError("reading a TIFF stack needs tifffile: pip install 'unrolled[data]'") from None
    return tifffile


def _read_positions(path: Path) -> np.ndarray:
    with open(path, newline="") as fh:
        rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    if not rows:
        return np.zeros((0, 4))
    try:
        float(rows[0][0])
        cols, body = [0, 1, 2, 3], rows
    except ValueError:
        header = [c.strip().lower() for c in rows[0]]
        cols = []
        for key, names in COLUMNS.items():
            found = [i for i, h in enumerate(header) if h in names]
            if not found:
                raise ValueError(f"{path}: no {key!r} column in the header {rows[0]}") from None
            cols.append(found[0])
        body = rows[1:]
    try:
        table = np.array([[float(r[c]) for c in cols] for r in body], dtype=np.float64).reshape(-1, 4)
    except (ValueError, IndexError):
        raise ValueError(f"{path}: every row needs numbers in the columns frame, x, y, intensity") from None
    table[:, 0] -= 1  # the challenge counts frames from 1
    return table


def load_isbi(frames_path, positions_path) -> tuple[np.ndarray, np.ndarray]:
    """Read a challenge-style data set.

    Parameters
    ----------
    frames_path : path to the TIFF stack (N, H, W) (one 2-D image: N = 1).
    positions_path : path to the CSV of true positions (module docstring).

    Returns
    -------
    frames : float64 array (N, H, W)
    positions : float64 array (K, 4), columns (frame counted from 0, x_nm, y_nm, intensity)
    """
    frames_path = _existing(frames_path, "frames (TIFF stack)")
    positions_path = _existing(positions_path, "positions (CSV)")
    frames = np.asarray(_tifffile().imread(frames_path), dtype=np.float64)
    if frames.ndim == 2:
        frames = frames[None]
    if frames.ndim != 3:
        raise ValueError(f"{frames_path}: expected a stack of 2-D frames, got shape {frames.shape}")
    positions = _read_positions(positions_path)
    if len(positions) and not (0 <= positions[:, 0].min() and positions[:, 0].max() < len(frames)):
        raise ValueError(f"{positions_path}: frame numbers outside 1..{len(frames)}")
    return frames, positions


def save_isbi(frames_path, positions_path, frames, positions) -> None:
    """Write ``frames`` (N, H, W) as a float32 TIFF stack and ``positions`` (K, 4; frames from 0)
    as the challenge's CSV (with a header, frames from 1)."""
    _tifffile().imwrite(frames_path, np.asarray(frames, dtype=np.float32))
    with open(positions_path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["frame", "x", "y", "intensity"])
        for f, x, y, i in np.asarray(positions, dtype=np.float64).reshape(-1, 4):
            out.writerow([int(f) + 1, repr(float(x)), repr(float(y)), repr(float(i))])


def localize(X, grid_shape, grid_nm: float, threshold: float, *, window: int = 3) -> np.ndarray:
    """Detections in recovered grids: local maxima (3×3) whose ``window``×``window`` neighbourhood
    holds at least ``threshold`` photons, placed at the neighbourhood's intensity-weighted centroid.

    Parameters
    ----------
    X : array or tensor (N, Gh·Gw) or (N, Gh, Gw), photons per node (negatives count as 0)
    grid_shape : (Gh, Gw)
    grid_nm : float
        Node spacing; node (p, q) sits at ((q + ½)h, (p + ½)h) nm.
    threshold : float
    window : odd int
        Side of the neighbourhood that gives the intensity and the centroid (default 3).

    Returns
    -------
    array (K, 4), columns (frame, x_nm, y_nm, photons of the neighbourhood)
    """
    if isinstance(window, bool) or not isinstance(window, int) or window < 1 or window % 2 == 0:
        raise ValueError(f"window must be an odd positive integer, got {window!r}")
    G = torch.as_tensor(np.asarray(X), dtype=torch.float64).reshape(-1, 1, *grid_shape).clamp_min(0)
    h = window // 2
    mass = F.avg_pool2d(G, window, stride=1, padding=h, count_include_pad=True) * window**2
    peaks = (G == F.max_pool2d(G, 3, stride=1, padding=1)) & (mass >= threshold) & (G > 0)
    f, _, p, q = peaks.nonzero(as_tuple=True)
    offsets = torch.arange(-h, h + 1, dtype=torch.float64)
    padded = F.pad(G, (h, h, h, h))[:, 0]
    windows = torch.stack([padded[f, p + h + dp, q + h + dq] for dp in range(-h, h + 1) for dq in range(-h, h + 1)], 1)
    windows = windows.reshape(-1, window, window)
    total = windows.sum((1, 2))
    dy = (windows.sum(2) * offsets).sum(1) / total
    dx = (windows.sum(1) * offsets).sum(1) / total
    x = (q + 0.5 + dx) * grid_nm
    y = (p + 0.5 + dy) * grid_nm
    return torch.stack([f.to(torch.float64), x, y, total], 1).numpy()


def match(detected: np.ndarray, truth: np.ndarray, tolerance_nm: float) -> np.ndarray:
    """Pairs (i_detected, i_truth, distance) of the optimal frame-by-frame assignment within the tolerance, (P, 3)."""
    pairs = []
    for frame in np.intersect1d(detected[:, 0], truth[:, 0]):
        di, ti = np.flatnonzero(detected[:, 0] == frame), np.flatnonzero(truth[:, 0] == frame)
        d = np.linalg.norm(detected[di, None, 1:3] - truth[None, ti, 1:3], axis=2)
        cost = np.where(d <= tolerance_nm, d, 1e3 * tolerance_nm + d.max())  # a pair beyond it never helps
        r, c = linear_sum_assignment(cost)
        ok = d[r, c] <= tolerance_nm
        pairs += [(di[a], ti[b], d[a, b]) for a, b in zip(r[ok], c[ok])]
    return np.array(pairs, dtype=np.float64).reshape(-1, 3)


def isbi_metrics(detected, truth, tolerance_nm: float = 150.0) -> dict:
    """The challenge's detection and accuracy metrics.

    Parameters
    ----------
    detected, truth : arrays (K, ≥3), columns (frame, x_nm, y_nm, ...)
    tolerance_nm : float
        Largest distance at which a detection can be a true positive.

    Returns
    -------
    dict with ``jaccard``, ``recall``, ``precision`` (fractions), ``rmse_nm`` (over the true
    positives; nan without any), ``tp``, ``fp``, ``fn``, ``tolerance_nm``.
    """
    detected = np.asarray(detected, dtype=np.float64).reshape(-1, np.shape(detected)[-1] if len(detected) else 4)
    truth = np.asarray(truth, dtype=np.float64).reshape(-1, np.shape(truth)[-1] if len(truth) else 4)
    pairs = match(detected, truth, float(tolerance_nm))
    tp = len(pairs)
    fp, fn = len(detected) - tp, len(truth) - tp
    return {
        "jaccard": tp / max(tp + fp + fn, 1),
        "recall": tp / max(tp + fn, 1),
        "precision": tp / max(tp + fp, 1),
        "rmse_nm": float(np.sqrt(np.mean(pairs[:, 2] ** 2))) if tp else float("nan"),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tolerance_nm": float(tolerance_nm),
    }


__all__ = ["isbi_metrics", "load_isbi", "localize", "match", "save_isbi"]
