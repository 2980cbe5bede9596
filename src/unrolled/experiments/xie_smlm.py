"""xie2019 §3.3: non-stationary super-resolution of single-molecule frames by LPGD-7 and LAPGD-7.

The paper trains 7-layer LPGD and LAPGD on 8000 frames of the ISBI 2013 SMLM challenge (32×32
pixels of 200 nm) and super-resolves the other 4000 onto a 64×64 grid, after subtracting the
training set's mean intensity (Fig. 4). Here the frames are simulated
(:func:`unrolled.data.smlm.simulate`: filaments, ``per_frame`` emitters per frame on average,
300–2000 photons, 100 background photons per pixel, Poisson and Gaussian read noise (σ = 5), a PSF
whose width grows from 150 nm at the centre to 250 nm in the corners, astigmatic along the
diagonals), so that the truth is known and the ISBI metrics can be computed: Jaccard index, recall
and precision of the detections at a ``TOLERANCE_NM`` = 150 nm tolerance and the RMSE of the paired
ones (:mod:`unrolled.data.isbi`); detections are 3×3 local maxima of the recovered grid holding at
least ``THRESHOLD_PHOTONS`` photons in their 3×3 neighbourhood, the same rule for every method. The
baselines are APGD (the paper's, γ = 0.9, step 1/‖A‖₂², x₀ = 0) at 7 and at 700 iterations on the
same mean-subtracted frames. ``--quick`` runs a 16×16 camera (32×32 grid) on 1000 + 500 frames.

Training recipe. The nets start from the analytic init (LPGD-7 = PGD-7, LAPGD-7 = APGD-7): the
paper's i.i.d. U[0, 0.001] start needs far more than the few epochs of 4096×4096 matrices that a
30-minute CPU budget allows (``RECIPES``). Adam on mean ‖x̂ − x‖², x the emitters' photons split
bilinearly over their 4 nearest grid nodes, photons in units of ``UNIT``. The measured numbers are
in results.json and the README.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .._validate import positive_int
from . import experiment, finish

GAMMA = 0.9
UNIT = 1000.0  # photons per unit of x and y in training
THRESHOLD_PHOTONS = 200.0
TOLERANCE_NM = 150.0

RECIPES = {
    "full": {
        "camera": [32, 32],
        "n_train": 8000,
        "n_test": 4000,
        "n_filaments": 4,
        "per_frame": 3.0,
        "photons": [300.0, 2000.0],
        "background": 100.0,
        "read_noise": 5.0,
        "depth": 7,
        "long_iterations": 700,
        "epochs": 3,
        "batch_size": 50,
        "lr": 3e-4,
    },
    "quick": {
        "camera": [16, 16],
        "n_train": 1000,
        "n_test": 500,
        "n_filaments": 2,
        "per_frame": 1.5,
        "photons": [300.0, 2000.0],
        "background": 100.0,
        "read_noise": 5.0,
        "depth": 7,
        "long_iterations": 700,
        "epochs": 4,
        "batch_size": 50,
        "lr": 3e-4,
    },
}


def _device(device) -> torch.device:
    dev = torch.device(device or "cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available here")
    return dev


def simulated(recipe: dict, seed: int):
    """(psf, frames, positions, curves) for the training and the test frames together."""
    from ..data.smlm import psf_operator, simulate

    psf = psf_operator(tuple(recipe["camera"]))
    n = recipe["n_train"] + recipe["n_test"]
    sim = {k: recipe[k] for k in ("n_filaments", "per_frame", "photons", "background", "read_noise")}
    frames, positions, curves = simulate(n, psf, **sim, seed=seed)
    return psf, frames.reshape(n, -1), positions, curves


def apgd_iterates(psf, Y: torch.Tensor, stops: list[int], *, chunk: int = 1000, progress: bool = True) -> dict:
    """APGD's iterates x_k at each k in ``stops`` (γ = 0.9, x₀ = 0, step 1/‖A‖₂²), rows of ``Y``."""
    from ..algorithms.nnls import APGD
    from ..problems import NNLS

    method = APGD(NNLS(psf), gamma=GAMMA, momentum="constant")
    out = {k: [] for k in stops}
    bar = tqdm(total=max(stops) * len(Y), desc="APGD", unit="frame-it", leave=False, disable=not progress)
    with torch.no_grad():
        for s in range(0, len(Y), chunk):
            state = method.init(Y[s : s + chunk], None)
            for k in range(1, max(stops) + 1):
                method.step(state, k)
                if k in out:
                    out[k].append(state["x"].cpu())
                bar.update(len(state["x"]))
    bar.close()
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def evaluate(X_hat, truth: np.ndarray, grid_shape, grid_nm: float) -> dict:
    """The ISBI metrics of the detections in ``X_hat`` (photons / UNIT per node) against ``truth``."""
    from ..data.isbi import isbi_metrics, localize

    detected = localize(np.asarray(X_hat), grid_shape, grid_nm, THRESHOLD_PHOTONS / UNIT)
    return isbi_metrics(detected, truth, TOLERANCE_NM)


def predict(net, Y: torch.Tensor, *, chunk: int = 1000) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([net(Y[s : s + chunk]).cpu() for s in range(0, len(Y), chunk)]).numpy()


def _save_stage(out: Path, results: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float))


def _figure(images: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(images), figsize=(3.2 * len(images), 3.4))
    for ax, (title, img) in zip(axes, images.items()):
        ax.imshow(img, cmap="hot", vmax=np.percentile(img, 99.7) or None)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("xie2019 Fig. 4: sums over the test frames")
    return fig


def _row(name: str, m: dict, seconds: float) -> list:
    return [name, m["jaccard"], m["rmse_nm"], m["recall"], m["precision"], seconds]


def _run(recipe: dict, out: Path, seed: int, device: torch.device, *, progress: bool = True) -> dict:
    """The experiment on ``recipe``; results.json is rewritten after every stage."""
    import unrolled as ur

    from ..data.smlm import grid_truth
    from ..nets import LAPGD, LPGD

    t0 = time.perf_counter()
    out = Path(out)
    psf, frames, positions, curves = simulated(recipe, seed)
    n_train = recipe["n_train"]
    mean = float(frames[:n_train].mean())  # the training set's average intensity (xie2019 §3.3)
    Y = torch.as_tensor((frames - mean) / UNIT, dtype=torch.float32)
    X = torch.as_tensor(grid_truth(positions, len(frames), psf.grid_shape, psf.grid_nm) / UNIT, dtype=torch.float32)
    test_truth = positions[positions[:, 0] >= n_train] - [n_train, 0, 0, 0]
    Y_test = Y[n_train:].to(device)
    results = {
        "recipe": recipe,
        "device": str(device),
        "unit_photons": UNIT,
        "mean_intensity_subtracted": mean,
        "threshold_photons": THRESHOLD_PHOTONS,
        "tolerance_nm": TOLERANCE_NM,
        "emitters_test": len(test_truth),
        "metrics": {},
        "seconds_per_method": {},
    }
    op = psf.to(device=device)
    long = recipe["long_iterations"]
    t = time.perf_counter()
    classical = apgd_iterates(op, Y_test, [recipe["depth"], long], progress=progress)
    secs = round(time.perf_counter() - t, 1)
    depth = recipe["depth"]
    recovered = {f"APGD-{depth}": classical[depth], f"APGD-{long}": classical[long]}
    for name, Xh in recovered.items():
        results["metrics"][name] = evaluate(Xh, test_truth, psf.grid_shape, psf.grid_nm)
    results["seconds_per_method"][f"APGD-{long}"] = secs
    results["stage"] = "classical"
    _save_stage(out, results)
    for kind, cls in (("LPGD", LPGD), ("LAPGD", LAPGD)):
        options = {"gamma": GAMMA} if kind == "LAPGD" else {}
        net = cls(op, depth, init="analytic", seed=seed, **options)
        hist = ur.train(
            net,
            Y[:n_train],
            X[:n_train],
            epochs=recipe["epochs"],
            batch_size=recipe["batch_size"],
            lr=recipe["lr"],
            seed=seed,
            clip=None,
            progress=progress,
        )
        name = f"{kind}-{depth}"
        recovered[name] = predict(net, Y_test)
        results["metrics"][name] = evaluate(recovered[name], test_truth, psf.grid_shape, psf.grid_nm)
        results["seconds_per_method"][name] = round(hist.seconds, 1)
        results.setdefault("train_loss", {})[name] = hist.train_loss
        net.save(out / f"{name}.safetensors")
        results["stage"] = name
        _save_stage(out, results)
    return _summarise(results, recovered, frames[n_train:], X[n_train:].numpy(), psf, out, t0)


def _summarise(results, recovered, test_frames, test_grid, psf, out, t0) -> dict:
    m = results["metrics"]
    names = list(m)
    apgd_short, apgd_long = names[0], names[1]
    learned = names[2:]
    results["learned_beat_short_apgd"] = all(
        m[k]["jaccard"] > m[apgd_short]["jaccard"] and m[k]["rmse_nm"] < m[apgd_short]["rmse_nm"] for k in learned
    )
    results["learned_reach_long_apgd"] = {
        k: {
            "jaccard": m[k]["jaccard"] >= m[apgd_long]["jaccard"],
            "rmse": m[k]["rmse_nm"] <= m[apgd_long]["rmse_nm"],
        }
        for k in learned
    }
    header = ["method", "Jaccard", "RMSE (nm)", "recall", "precision", "seconds"]
    results["table"] = [header] + [_row(k, m[k], results["seconds_per_method"].get(k, "-")) for k in names]
    results["stage"] = "done"
    grid = psf.grid_shape
    images = {"diffraction-limited sum (32×32)": test_frames.reshape(-1, *psf.camera_shape).sum(0)}
    images["truth (64×64)"] = test_grid.reshape(-1, *grid).sum(0)
    images.update({k: np.clip(v, 0, None).reshape(-1, *grid).sum(0) for k, v in recovered.items()})
    if grid != (64, 64):
        images = {k.replace("(32×32)", "").replace("(64×64)", ""): v for k, v in images.items()}
    return finish(out, "xie-smlm", results, {"fig4": _figure(images)}, started=t0)


@experiment("xie-smlm", paper="xie2019", what="§3.3 SMLM super-resolution: LPGD-7, LAPGD-7 vs APGD-7/700, ISBI metrics")
def run(quick: bool, out: Path, seed: int = 0, device: str | None = None, epochs: int | None = None) -> dict:
    """``epochs``: the nets' training epochs instead of the recipe's (``--epochs``; e.g. more on a GPU)."""
    recipe = dict(RECIPES["quick" if quick else "full"])
    if epochs is not None:
        recipe["epochs"] = positive_int(epochs, "epochs")
    return _run(recipe, out, seed, _device(device))
