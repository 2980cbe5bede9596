"""sulam2018 §4 (Table 1, Fig. 3b): image classification with unfolded multi-layer pursuits.

Architecture (the paper's, MNIST): three non-negative convolutional layers of 64, 128 and 512
filters, kernels 6, 6, 4, strides 2, 2, 1 (no padding: 28 → 12 → 4 → 1), biases as thresholds
(ReLU(v + b)), a linear classifier on the 512 deepest codes, Adam on the cross-entropy, no
batch-norm or dropout. The same dictionaries, biases and head run as

* the feed-forward CNN (0 unfoldings, ``MLISTANet`` with depth 1),
* layered BP, ML-ISTA and ML-FISTA with 6 unfoldings (depth 7), all with the same parameters;
* ML-ISTA with 0, 1, 2, 4, 6 unfoldings (Fig. 3b).

ML-ISTA / ML-FISTA train with the relaxation ρ of Supplementary B moved from 0 to 1 along a
sigmoid over the epochs (:func:`unrolled.nets.rho_schedule`). 32 × 32 colour sets (SVHN,
CIFAR-10) take kernel 5 in the third layer (the paper's footnote 6 for SVHN); the 8×8 digits
take kernels 3, 3, 2 and strides 1, 2, 1.

Protocols (``SETTINGS``): ``paper`` — the full training and test sets, the paper's widths,
batch 128 and 100 epochs (the paper gives neither epochs nor rate; 100 epochs and Adam's 3e-3
with a cosine schedule, dictionaries drawn as torch draws a convolution's filters and scaled to
‖D_i‖₂ = 1, zero biases, are our choices); the default — widths halved (32, 64, 256), a fixed
training subset of 6 000 images, 2 000 test images, 6 epochs, 3 seeds, sized for 90 minutes on
two cores (README: how it was extrapolated); ``quick`` — widths quartered, 1 000 / 500 images,
2 epochs, one seed. Every protocol averages over seeds (the dictionaries' initialisation and
the batch order); the test accuracy of every epoch is recorded (``ur.train``'s validation
accuracy on the test images) and ``results.json`` is rewritten after every epoch of every model.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from ..data.images import IMAGE_SETS, load_image_set
from ..nets import Classifier, LayeredBPNet, MLFISTANet, MLISTANet, conv_dictionaries, rho_schedule
from ..training import train
from . import experiment, finish

SETTINGS = {
    "paper": {"widths": (64, 128, 512), "n_train": None, "n_test": None, "epochs": 100, "seeds": 3},
    "default": {"widths": (32, 64, 256), "n_train": 6_000, "n_test": 2_000, "epochs": 6, "seeds": 3},
    "quick": {"widths": (16, 32, 128), "n_train": 1_000, "n_test": 500, "epochs": 2, "seeds": 1},
}
LR, BATCH = 3e-3, 128
# (kernels, strides) by image side: the paper's MNIST net, its SVHN variant, and one for 8×8 digits
GEOMETRY = {28: ((6, 6, 4), (2, 2, 1)), 32: ((6, 6, 5), (2, 2, 1)), 8: ((3, 3, 2), (1, 2, 1))}
# name → (class, unfoldings); the first four are Table 1, the ML-ISTA ones Fig. 3b
MODELS = {
    "feed-forward": (MLISTANet, 0),
    "layered BP": (LayeredBPNet, 6),
    "ML-ISTA": (MLISTANet, 6),
    "ML-FISTA": (MLFISTANet, 6),
    "ML-ISTA-1": (MLISTANet, 1),
    "ML-ISTA-2": (MLISTANet, 2),
    "ML-ISTA-4": (MLISTANet, 4),
}
TABLE1 = ("feed-forward", "layered BP", "ML-ISTA", "ML-FISTA")
PAPER_MNIST = {"feed-forward": 98.79, "layered BP": 99.18, "ML-ISTA": 99.28, "ML-FISTA": 99.27}
CURVE = {"feed-forward": 0, "ML-ISTA-1": 1, "ML-ISTA-2": 2, "ML-ISTA-4": 4, "ML-ISTA": 6}


def _data_choice(data: dict | None) -> tuple[str, str | None]:
    """The one data set named by ``--data`` (default: Fashion-MNIST at its Debian path)."""
    if not data:
        return "fashion-mnist", None
    if len(data) != 1:
        raise ValueError(f"sulam-classify takes one --data set, got {', '.join(data)}")
    ((name, path),) = data.items()
    if name not in IMAGE_SETS:
        raise ValueError(f"--data {name}: sulam-classify reads {', '.join(IMAGE_SETS)}")
    return name, path


def _subset(X: np.ndarray, y: np.ndarray, count: int | None):
    """The first ``count`` images of a fixed permutation (the same for every seed and model)."""
    if count is None or count >= len(X):
        return X, y
    keep = np.random.default_rng(0).permutation(len(X))[:count]
    return X[keep], y[keep]


def _load(name: str, path, setting: dict):
    Xtr, ytr = _subset(*load_image_set(name, path, "train"), setting["n_train"])
    Xte, yte = _subset(*load_image_set(name, path, "test"), setting["n_test"])
    side = Xtr.shape[-1]
    if side not in GEOMETRY:
        raise ValueError(f"sulam-classify has an architecture for images of side {sorted(GEOMETRY)}, not {side}")
    return (Xtr.reshape(len(Xtr), -1), ytr), (Xte.reshape(len(Xte), -1), yte), Xtr.shape[1:]


def _classifier(model: str, image_shape, widths, seed: int, device: str) -> Classifier:
    cls, unfoldings = MODELS[model]
    kernels, strides = GEOMETRY[image_shape[-1]]
    Ds = conv_dictionaries(image_shape, widths, kernels, strides, seed=seed)
    extra = {"rho": 0.0} if cls is not LayeredBPNet and unfoldings else {}
    net = cls(Ds, unfoldings + 1, 0.0, nonneg=True, **extra)
    return Classifier(net, 10, seed=seed).to(device)


def _fit(model, clf, train_set, test_set, cfg, seed, record):
    """Train one model; ``record(history)`` after every epoch."""
    schedule = rho_schedule(cfg["epochs"]) if "rho" in clf.net.config and clf.depth > 1 else None

    def on_epoch(net, epoch, history):
        if schedule is not None:
            schedule(net, epoch, history)
        if epoch:
            record(history)

    hist = train(
        clf,
        *train_set,
        loss="cross-entropy",
        val=test_set,
        epochs=cfg["epochs"],
        batch_size=cfg["batch_size"],
        lr=LR,
        clip=None,
        seed=seed,
        progress=True,
        threads=torch.get_num_threads(),
        on_epoch=on_epoch,
    )
    record(hist)
    return hist


def _summary(runs: dict) -> dict:
    """Final-epoch test accuracy (%) per model over the seeds that finished: mean, std (ddof 1), n."""
    out = {}
    for model, by_seed in runs.items():
        final = [100 * r["test_accuracy"][-1] for r in by_seed.values() if r["done"]]
        if final:
            std = float(np.std(final, ddof=1)) if len(final) > 1 else 0.0
            out[model] = {"mean": float(np.mean(final)), "std": std, "n": len(final)}
    return out


def _table(summary: dict, runs: dict, params: dict, name: str) -> list:
    rows = [["model", "unfoldings", "parameters", f"test acc % ({name})", "paper MNIST %", "s/epoch"]]
    for model in MODELS:
        if model not in summary:
            continue
        s = summary[model]
        seconds = np.mean([r["seconds"] / len(r["test_accuracy"]) for r in runs[model].values() if r["done"]])
        rows.append(
            [
                model,
                MODELS[model][1],
                params[model],
                f"{s['mean']:.2f} ± {s['std']:.2f} (n={s['n']})",
                PAPER_MNIST.get(model, "-"),
                f"{seconds:.1f}",
            ]
        )
    return rows


def _figure(runs: dict, summary: dict, name: str):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, models, title in (
        (axes[0], TABLE1, "Table 1 nets (6 unfoldings)"),
        (axes[1], CURVE, "ML-ISTA over unfoldings (Fig. 3b)"),
    ):
        for model in models:
            curves = [r["test_accuracy"] for r in runs.get(model, {}).values() if r["done"]]
            if not curves:
                continue
            acc = 100 * np.array(curves)
            epochs = np.arange(1, acc.shape[1] + 1)
            label = f"{CURVE[model]} unfoldings" if ax is axes[1] else model
            ax.plot(epochs, acc.mean(0), marker="o", label=label)
            if len(acc) > 1:
                ax.fill_between(epochs, acc.mean(0) - acc.std(0), acc.mean(0) + acc.std(0), alpha=0.2)
        ax.set(xlabel="epoch", ylabel=f"test accuracy % ({name})", title=title)
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


@experiment(
    "sulam-classify",
    paper="sulam2018",
    what="classification: FF vs layered BP / ML-ISTA / ML-FISTA (6 unfoldings, same parameters); Fig. 3b",
)
def run(
    quick: bool,
    out: Path,
    seed: int,
    device: str = "cpu",
    data: dict | None = None,
    paper: bool = False,
    epochs: int | None = None,
    seeds: int | None = None,
    batch_size: int | None = None,
) -> dict:
    """Train the seven models (``MODELS``) for every seed and report the test accuracy.

    Options: ``device`` ("cpu" or "cuda"), ``data`` (one of ``IMAGE_SETS`` → path; default
    Fashion-MNIST), ``paper`` (the paper's protocol), and overrides of the protocol's ``epochs``,
    ``seeds`` and ``batch_size`` (default 128). Returns the results dict (also results.json).
    """
    started = time.perf_counter()
    if quick and paper:
        raise ValueError("--quick and --paper are exclusive")
    setting = dict(SETTINGS["paper" if paper else "quick" if quick else "default"])
    for key, value in (("epochs", epochs), ("seeds", seeds), ("batch_size", batch_size)):
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"--{key.replace('_', '-')} must be a positive integer, got {value!r}")
            setting[key] = value
    setting.setdefault("batch_size", BATCH)
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    name, path = _data_choice(data)
    train_set, test_set, image_shape = _load(name, path, setting)
    if name == "digits":
        setting["widths"] = tuple(max(4, w // 4) for w in setting["widths"])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = {
        "data": name,
        "setting": {**setting, "lr": LR, "n_train": len(train_set[0]), "n_test": len(test_set[0]), "device": device},
        "paper_mnist": PAPER_MNIST,
    }
    runs: dict = {m: {} for m in MODELS}
    params: dict = {}

    def save_partial():
        summary = _summary(runs)
        partial = {**base, "runs": runs, "parameters": params, "summary": summary}
        (out / "results.json").write_text(json.dumps(partial, indent=1, default=float))

    seed_list = [seed + i for i in range(setting["seeds"])]
    # Table 1's models for every seed first, then Fig. 3b's: a cut-off run still has the comparison
    order = [(m, s) for group in (TABLE1, [m for m in MODELS if m not in TABLE1]) for s in seed_list for m in group]
    for model, s in order:
        clf = _classifier(model, image_shape, setting["widths"], s, device)
        params[model] = sum(p.numel() for p in clf.parameters())
        entry = runs[model][str(s)] = {"test_accuracy": [], "train_loss": [], "seconds": 0.0, "done": False}

        def record(history, entry=entry):
            entry.update(
                test_accuracy=list(history.val_accuracy), train_loss=list(history.train_loss), seconds=history.seconds
            )
            save_partial()

        _fit(model, clf, train_set, test_set, setting, s, record)
        entry["done"] = True
        save_partial()
    if len(set(params.values())) != 1:
        raise RuntimeError(f"the models' parameter counts differ: {params}")
    summary = _summary(runs)
    ff = summary["feed-forward"]
    margins = {
        m: {"gain": summary[m]["mean"] - ff["mean"], "spread": max(summary[m]["std"], ff["std"])} for m in TABLE1[1:]
    }
    results = {
        **base,
        "runs": runs,
        "parameters": params,
        "summary": summary,
        "margins_over_feed_forward": margins,
        "table": _table(summary, runs, params, name),
    }
    return finish(out, "sulam-classify", results, {"accuracy": _figure(runs, summary, name)}, started=started)
