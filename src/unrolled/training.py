"""Fitting an unrolled network: supervised, semi-supervised or unsupervised.

Adam with a cosine learning-rate schedule and gradient-norm clipping; validation every
epoch and the best weights kept; a guard that restores the epoch's starting weights and
halves the rate when the loss turns NaN/inf; atomic checkpoints (safetensors + JSON) that
a killed run resumes from. Shuffling is seeded per epoch, so a resumed run follows the
same path as an uninterrupted one.

The rows come from tensors, a ``torch.utils.data`` Dataset / IterableDataset or a
memory-mapped array (:mod:`unrolled.datasets`). Under ``torchrun`` every rank takes its share
of each global batch and the gradients are summed over the ranks (:mod:`unrolled.distributed`);
rank 0 validates, shows progress and writes the checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import distributed
from ._threads import default_threads
from ._threads import threads as torch_threads
from ._validate import as_batch, choice, nonnegative_float, positive_int
from .datasets import TensorRows, array_fingerprint, dataset_fingerprint, is_data_source, source
from .defaults import AUTO, resolve, warmup_stages
from .nets.base import load_tensors, remove_stale_temps, save_tensors
from .operators import LearnedOperator, as_operator
from .problems import Lasso

LOSSES = ("supervised", "semi-supervised", "unsupervised", "cross-entropy")
MAX_BACKOFFS = 8


@dataclass
class TrainHistory:
    """Per-epoch record of a training run."""

    train_loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    best_epoch: int = -1
    best_loss: float = math.inf
    backoffs: int = 0
    resumed_from: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def lasso_targets(net, Y: torch.Tensor, tol: float = 1e-10, max_iter: int = 100_000) -> torch.Tensor:
    """z*(y) for every row, by our FISTA (with restart) to a relative duality gap ≤ ``tol``."""
    from .solvers import lasso

    if not isinstance(net.problem, Lasso):
        raise ValueError("semi-supervised training needs a network whose problem is a Lasso (net.problem)")
    op = net.problem.op
    D = op.frozen() if isinstance(op, LearnedOperator) else op  # the current weights, without autograd
    res = lasso(
        as_operator(D, dtype=torch.float64),
        Y.detach().to(torch.float64),
        net.problem.lam,
        "fista",
        restart=True,
        tol=tol,
        max_iter=max_iter,
    )
    return res.x.to(Y.dtype)


class _CrossEntropy:
    """Mean cross-entropy of the logits ``net(Y)`` against one-hot targets (sulam2018 §4). Called
    without gradients (validation), it also counts the correct predictions (``accuracy``)."""

    def __init__(self, net):
        self.net = net
        self.reset()

    def reset(self) -> None:
        self.correct, self.seen = 0, 0

    def __call__(self, Yb, Xb, depth):
        logits = self.net(Yb, depth=depth)
        if not torch.is_grad_enabled():
            self.correct += int((logits.argmax(1) == Xb.argmax(1)).sum())
            self.seen += Xb.shape[0]
        return F.cross_entropy(logits, Xb)

    @property
    def accuracy(self) -> float | None:
        """The fraction of correct predictions since the last ``reset`` (None if none were made)."""
        return self.correct / self.seen if self.seen else None


def one_hot_labels(labels, n_classes: int, name: str = "labels") -> torch.Tensor:
    """Integer class labels (N,) in [0, n_classes) as float64 one-hot rows (N, n_classes)."""
    lab = labels.detach().cpu() if isinstance(labels, torch.Tensor) else torch.as_tensor(np.asarray(labels))
    if lab.dtype.is_floating_point or lab.dtype.is_complex or lab.dtype == torch.bool:
        raise TypeError(f"{name} must be integer class labels, got dtype {lab.dtype}")
    if lab.dim() != 1 or lab.numel() == 0:
        raise ValueError(f"{name} must be a non-empty vector of class labels, got shape {tuple(lab.shape)}")
    if int(lab.min()) < 0 or int(lab.max()) >= n_classes:
        raise ValueError(f"{name} must lie in [0, {n_classes}), got [{int(lab.min())}, {int(lab.max())}]")
    return F.one_hot(lab.long(), n_classes).to(torch.float64)


def _loss_fn(net, loss: str, layer_weights):
    if loss == "cross-entropy":
        return _CrossEntropy(net)

    def per_output(Xh, Yb, Xb):
        if loss == "unsupervised":
            return net.problem.objective(Xh, Yb).mean()
        return (Xh - Xb).pow(2).sum(1).mean()

    def fn(Yb, Xb, depth):
        if layer_weights is None:
            return per_output(net(Yb, depth=depth), Yb, Xb)
        outs = net(Yb, depth=depth, return_all=True)
        return sum(w * per_output(o, Yb, Xb) for w, o in zip(layer_weights, outs) if w)

    return fn


def _prepare(net, Y, X, name, loss):
    """The rows of ``Y`` (and ``X``) as a source: checked tensors, or a lazily read dataset / memmap."""
    dtype, device = net.operator.dtype, net.operator.device
    if is_data_source(Y):
        if loss == "semi-supervised" and X is None and isinstance(Y, np.memmap):
            raise ValueError(f"{name}X is required for semi-supervised training from a memory-mapped {name}Y")
        return source(Y, X, name=name, m=net.m, n=net.n, needs_x=loss != "unsupervised", dtype=dtype, device=device)
    Y_t, _ = as_batch(Y, f"{name}Y", net.m, dtype=dtype, device=device)
    if loss == "semi-supervised" and X is None:
        X_t = lasso_targets(net, Y_t)
    elif loss == "unsupervised":
        X_t = Y_t.new_zeros(Y_t.shape[0], 0)
    else:
        if X is None:
            raise ValueError(f"{name}X is required for {loss} training")
        X_t, _ = as_batch(X, f"{name}X", net.n, dtype=dtype, device=device)
    if loss != "unsupervised" and X_t.shape[0] != Y_t.shape[0]:
        raise ValueError(f"{name}X has {X_t.shape[0]} rows but {name}Y has {Y_t.shape[0]}")
    return TensorRows(Y_t, X_t, given_x=X is not None)


def _optim_tensors(opt) -> tuple[dict, list]:
    sd = opt.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            tensors[f"optim.{idx}.{key}"] = val if isinstance(val, torch.Tensor) else torch.tensor(val)
    return tensors, sd["param_groups"]


def _restore_optim(opt, tensors: dict, groups: list):
    state: dict = {}
    for name, val in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = val
    opt.load_state_dict({"state": state, "param_groups": groups})


def _check_options(net, *, loss, schedule, epochs, checkpoint_every, batch_size, lr, clip, depth, layer_weights):
    choice(loss, "loss", LOSSES)
    choice(schedule, "schedule", ("cosine", "none"))
    depth = net.depth if depth is None else positive_int(depth, "depth")
    if layer_weights is not None and len(layer_weights) != depth:
        raise ValueError(f"layer_weights must have {depth} entries, got {len(layer_weights)}")
    if loss == "unsupervised" and getattr(net, "problem", None) is None:
        raise ValueError("unsupervised training needs net.problem (the objective to minimise)")
    if loss == "cross-entropy" and not hasattr(net, "n_classes"):
        raise ValueError("cross-entropy training needs a classifier: unrolled.nets.Classifier(net, n_classes)")
    if loss == "cross-entropy" and layer_weights is not None:
        raise ValueError("layer_weights is not available with loss='cross-entropy' (one head, on the last layer)")
    return {
        "loss": loss,
        "epochs": positive_int(epochs, "epochs"),
        "batch_size": positive_int(batch_size, "batch_size"),
        "lr": nonnegative_float(lr, "lr", strict=True),
        "schedule": schedule,
        "depth": depth,
        "clip": None if clip is None else nonnegative_float(clip, "clip", strict=True),
        "checkpoint_every": positive_int(checkpoint_every, "checkpoint_every"),
        "layer_weights": list(layer_weights) if layer_weights is not None else None,
    }


def _param_groups(net, params) -> list[dict]:
    """Optimiser groups; a group's "lr" is a factor of the run's rate (default 1)."""
    groups = [{"params": list(net.parameters())}] if params is None else list(params)
    if groups and not isinstance(groups[0], dict):
        groups = [{"params": groups}]
    for g in groups:
        g["params"] = list(g["params"])
        g["lr_factor"] = nonnegative_float(g.pop("lr", 1.0), "params group lr", strict=True)
    if not any(g["params"] for g in groups):
        raise ValueError("no parameters to train")
    return groups


def data_fingerprint(*arrays) -> str:
    """sha256 over the dtype, shape and bytes of each array (None counts as absent; a string, e.g.
    a dataset's or memory-mapped file's own fingerprint (:mod:`unrolled.datasets`), as its text)."""
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        if is_data_source(a):
            a = dataset_fingerprint(a) if not isinstance(a, np.memmap) else array_fingerprint(a)
        if isinstance(a, str):
            h.update(a.encode())
            continue
        t = torch.as_tensor(a).detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _differences(old, new, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two JSON-like dicts, as "key: old -> new"."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for k in keys for d in _differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [f"{prefix[:-1] or 'value'}: {old!r} -> {new!r}"]


def resume_conflict(checkpoint, identity: dict) -> str | None:
    """What differs between a checkpoint's recorded run and ``identity`` (None if nothing or no file).

    ``identity`` holds what determines the result ({"model": ..., "train": ..., "data": ...,
    and whatever the caller adds, e.g. the whole resolved config}); a key the checkpoint does
    not record (written by an older version) is not compared.
    """
    ckpt = Path(checkpoint)
    if not ckpt.exists():
        return None
    _, meta = load_tensors(ckpt)
    recorded = {
        "model": {k: meta.get("model", {}).get(k) for k in ("class", "fingerprint", "config")},
        "train": meta.get("train"),
        "data": meta.get("data"),
        "run": meta.get("run"),
    }
    current = json.loads(json.dumps(identity))
    diffs = [
        d
        for key in current
        if recorded.get(key) is not None
        for d in _differences(recorded[key], current[key], f"{key}.")
    ]
    if not diffs:
        return None
    return f"checkpoint {ckpt} was written by another run ({'; '.join(diffs[:4])}{'; …' if len(diffs) > 4 else ''})"


def _identity(net, config, data, run) -> dict:
    ident = {
        "model": {"class": type(net).__name__, "fingerprint": net.fingerprint, "config": net.config},
        "train": config,
        "data": data,
    }
    if run is not None:
        ident["run"] = run
    return ident


def _resume(ckpt: Path, net, opt, identity: dict):
    """(history, start epoch, best state, rate scale) from ``ckpt``; the model and optimiser are loaded."""
    conflict = resume_conflict(ckpt, identity)
    if conflict:
        raise ValueError(f"{conflict}; remove it, pass resume=False or use another checkpoint path")
    tensors, meta = load_tensors(ckpt)
    net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    best_state = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or None
    _restore_optim(opt, tensors, meta["optim_groups"])
    hist = TrainHistory(**meta["history"])
    hist.resumed_from = meta["epoch"]
    return hist, meta["epoch"], best_state, meta.get("lr_scale", 1.0)


def _write_checkpoint(ckpt: Path, net, opt, best_state, identity: dict, epoch: int, hist, lr_scale: float) -> None:
    tensors = {f"model.{k}": v for k, v in net.state_dict().items()}
    tensors.update({f"best.{k}": v for k, v in (best_state or {}).items()})
    optim_tensors, groups = _optim_tensors(opt)
    tensors.update(optim_tensors)
    meta = {
        "model": net.metadata(),
        "train": identity["train"],
        "data": identity["data"],
        "epoch": epoch,
        "history": hist.to_dict(),
        "optim_groups": groups,
        "lr_scale": lr_scale,
    }
    if "run" in identity:
        meta["run"] = identity["run"]
    save_tensors(ckpt, tensors, meta)


def _rate(cfg: dict, epoch: int, lr_scale: float) -> float:
    cosine = 0.5 * (1 + math.cos(math.pi * epoch / cfg["epochs"])) if cfg["schedule"] == "cosine" else 1.0
    return cfg["lr"] * lr_scale * cosine


def _snapshot(net, opt) -> tuple[dict, dict]:
    state = opt.state_dict()
    opt_state = {
        "state": {
            i: {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in s.items()}
            for i, s in state["state"].items()
        },
        "param_groups": state["param_groups"],
    }
    return {k: v.detach().clone() for k, v in net.state_dict().items()}, opt_state


def _batches(data, cfg: dict, seed: int, epoch: int):
    """This rank's (Y, X) of each global batch of the epoch: in the epoch's seeded order of the
    rows (every rank draws the same order and keeps its share; None for an empty share), or in
    a stream's own order."""
    if data.rows is None:
        data.set_epoch(epoch)
        yield from data.stream(cfg["batch_size"])
        return
    N, batch = data.rows, cfg["batch_size"]
    order = torch.randperm(N, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    for i in range(0, N, batch):
        share = distributed.shard(order[i : i + batch])
        yield data.take(share) if len(share) else None


def _update(opt, params, cfg: dict) -> None:
    if cfg["clip"] is not None:
        torch.nn.utils.clip_grad_norm_(params, cfg["clip"])
    opt.step()


def _local_step(opt, params, loss_of, batch, cfg: dict):
    """One step on ``batch`` in this process: (loss × rows, rows); (0, 0) without a batch, None if not finite."""
    if batch is None:
        return 0.0, 0
    value = loss_of(*batch, cfg["depth"])
    if not torch.isfinite(value):
        return None
    opt.zero_grad(set_to_none=True)
    value.backward()
    _update(opt, params, cfg)
    return float(value.detach()) * batch[0].shape[0], batch[0].shape[0]


def _reduced_step(opt, params, loss_of, batch, cfg: dict):
    """One step on the global batch whose share ``batch`` (or None) this rank holds.

    Each rank's gradient of its mean loss is weighted by its row count; one all-reduce sums
    them with the loss sums, the counts and which parameters got a gradient, so the step is
    the one-process step on the whole batch, however the rows were dealt (even none).
    Returns (loss × rows, rows) over all ranks: (0, 0) when every rank is out of data, None
    if the loss is not finite on some rank.
    """
    opt.zero_grad(set_to_none=True)
    n = 0 if batch is None else batch[0].shape[0]
    value = loss_of(*batch, cfg["depth"]) if n else None
    if value is not None:
        value.backward()
    grads = [p.grad for p in params]
    flat = [(g * n if g is not None else torch.zeros_like(p)).reshape(-1).double() for p, g in zip(params, grads)]
    tail = [float(g is not None) for g in grads] + [float(value.detach()) * n if n else 0.0, float(n)]
    buffer = distributed.all_reduce_(torch.cat([*flat, torch.tensor(tail, dtype=torch.float64, device=flat[0].device)]))
    total, rows = float(buffer[-2]), int(buffer[-1])
    if not rows:
        return 0.0, 0
    if not math.isfinite(total):
        return None
    offset, got = 0, buffer[-2 - len(params) : -2]
    for p, has in zip(params, got):
        if has > 0:
            p.grad = (buffer[offset : offset + p.numel()] / rows).view_as(p).to(p.dtype)
        offset += p.numel()
    _update(opt, params, cfg)
    return total, rows


def _pass(opt, params, loss_of, data, cfg: dict, seed: int, epoch: int) -> float | None:
    """One pass over the data in the epoch's seeded order; the mean loss, or None if it turned NaN/inf."""
    step = _reduced_step if distributed.active() else _local_step
    batches = _batches(data, cfg, seed, epoch)
    total, count = 0.0, 0
    while True:
        done = step(opt, params, loss_of, next(batches, None), cfg)
        if done is None:
            return None
        if not done[1]:
            break
        total, count = total + done[0], count + done[1]
    if not count:
        raise ValueError("the training data gave no rows this epoch")
    if not all(torch.isfinite(p).all() for p in params):
        return None
    return total / count


def _epoch(net, opt, params, loss_of, data, cfg: dict, seed: int, epoch: int, lr_scale: float, hist):
    """Train one epoch; on divergence restore its starting weights and halve the rate (up to
    ``MAX_BACKOFFS`` times). Returns (mean training loss, rate used, new rate scale)."""
    for _ in range(MAX_BACKOFFS + 1):
        rate = _rate(cfg, epoch, lr_scale)
        for g in opt.param_groups:
            g["lr"] = rate * g["lr_factor"]
        weights, opt_state = _snapshot(net, opt)
        train_loss = _pass(opt, params, loss_of, data, cfg, seed, epoch)
        if train_loss is not None:
            return train_loss, rate, lr_scale
        net.load_state_dict(weights)
        opt.load_state_dict(opt_state)
        lr_scale *= 0.5
        hist.backoffs += 1
    raise RuntimeError(
        f"training diverged at epoch {epoch + 1}: loss not finite after {MAX_BACKOFFS} rate "
        "halvings; lower lr or normalise the data"
    )


def _evaluate(loss_of, data, depth: int) -> float:
    """The mean loss over all the rows of ``data`` (every rank's, unsharded)."""
    with torch.no_grad():
        total, count = 0.0, 0
        for Yd, Xd in data.chunks(4096):
            total += float(loss_of(Yd, Xd, depth)) * Yd.shape[0]
            count += Yd.shape[0]
        if not count:
            raise ValueError("the validation data gave no rows")
        return total / count


def _validation_loss(loss_of, data, depth: int, device) -> float:
    """Rank 0 evaluates; the other ranks wait for its answer."""
    value = _evaluate(loss_of, data, depth) if distributed.rank() == 0 else math.nan
    if not distributed.active():
        return value
    return float(distributed.broadcast_(torch.tensor([value], dtype=torch.float64, device=device)))


def train(
    net,
    Y,
    X=None,
    *,
    loss: str | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    val=None,
    seed: int = 0,
    progress: bool = True,
    checkpoint=None,
    resume: bool = True,
    clip: float | None | str = AUTO,
    schedule: str = "cosine",
    depth: int | None = None,
    params=None,
    layer_weights=None,
    weight_decay: float = 0.0,
    checkpoint_every: int = 1,
    threads: int | None = None,
    run: dict | None = None,
    on_epoch=None,
) -> TrainHistory:
    """Fit ``net`` to measurements ``Y`` (and targets ``X``); the best weights are left in ``net``.

    Adam on mini-batches in a seeded order per epoch, with a cosine rate schedule and
    gradient-norm clipping; the weights with the lowest validation loss are kept.

    Parameters
    ----------
    net : UnrolledNet
        The network to fit, in place.
    Y : array or tensor, shape (N, m); memory-mapped array; Dataset or IterableDataset
        Training measurements, one signal per row. A memory-mapped array (``np.load(path,
        mmap_mode="r")``) is read a batch of rows at a time; a ``torch.utils.data.Dataset``
        gives items y, shape (m,), or (y, x); an ``IterableDataset`` (e.g.
        :class:`unrolled.datasets.FreshSamples`) is read once per epoch in its own order,
        each rank reading its own items under ``torchrun``.
    X : array or tensor, shape (N, n), optional
        Targets; required for ``loss="supervised"``, computed (the Lasso solutions) for
        ``"semi-supervised"`` when None (in-memory ``Y`` only), unused for ``"unsupervised"``;
        for ``"cross-entropy"`` the integer class labels, shape (N,) (in-memory ``Y`` only).
        None when ``Y`` is a dataset (its items carry x).
    loss : {"supervised", "semi-supervised", "unsupervised", "cross-entropy"}, optional
        Default: ``"unsupervised"`` when ``X`` is None, ``Y`` is in memory and the net has a
        problem, else ``"supervised"``. ``"supervised"``: mean ‖x̂ − x‖² (xie2019 §2; sen2024
        eq. 7); ``"semi-supervised"``: the same with x the Lasso solution; ``"unsupervised"``:
        the problem's objective F_y(x̂) (Moreau talk, "LISTA – Training"); ``"cross-entropy"``:
        the mean cross-entropy of a :class:`~unrolled.nets.Classifier`'s logits against the
        labels (sulam2018 §4), with the validation accuracy recorded every epoch.
    epochs, batch_size, lr : int, int, float, optional
        Passes over the data, rows per step, and Adam's initial rate; None takes the net
        family's default (:mod:`unrolled.defaults`). A family with a depth curriculum (LPGD,
        LAPGD, Vanilla) first trains depths 1, …, K − 1 (``defaults.warmup_stages``) when the
        whole net is trained afresh.
    val : (Y_val, X_val) or Y_val, optional
        Validation data, shapes (N_val, m) and (N_val, n) (labels (N_val,)), of the kinds ``Y``
        and ``X`` take; without it the training loss chooses the best epoch.
    seed : int
        Seeds the per-epoch shuffling, so a resumed run follows an uninterrupted one (with
        any number of ``torchrun`` processes: ``batch_size`` is the global batch).
    progress : bool
        Show a progress bar.
    checkpoint : path, optional
        File written atomically every ``checkpoint_every`` epochs (and after the last);
        a run finds it and resumes when ``resume``. A checkpoint of another model, training
        configuration, data or ``run`` is refused with a message naming what changed.
    resume : bool
        Continue from ``checkpoint`` if it exists (False: start afresh and overwrite it).
    clip : float, None or "auto"
        Maximum gradient norm (None: no clipping; "auto": the family's default).
    schedule : {"cosine", "none"}
        Rate schedule over the epochs.
    depth : int, optional
        Train (and evaluate) the first ``depth`` layers only.
    params : list of tensors or of groups {"params": [...], "lr": factor}, optional
        The trained parameters; a group's rate is ``factor × lr``. Default: the family's
        groups (e.g. steps and thresholds faster than matrices), all parameters.
    layer_weights : sequence of float, length ``depth``, optional
        Sum the loss over every layer's output with these weights.
    weight_decay : float
        Adam's weight decay.
    checkpoint_every : int
        Epochs between checkpoints.
    threads : int, optional
        Torch threads for the call (restored after); default one thread for small batches.
    run : dict, optional
        JSON-able description of the run (e.g. the whole config it came from), recorded in
        the checkpoint and compared on resume.
    on_epoch : callable, optional
        ``on_epoch(net, epoch, history)`` before every epoch's training (also the epochs of a
        resumed run), ``history`` the :class:`TrainHistory` of the epochs done: e.g.
        :func:`unrolled.nets.mlbp.rho_schedule` for the ρ relaxation of sulam2018 Supplementary B,
        or saving partial results. Not recorded in the checkpoint: a resumed run must pass the same one.

    Returns
    -------
    TrainHistory
        Per-epoch training/validation loss, validation accuracy (``"cross-entropy"``; None
        otherwise) and rate, best epoch and loss, rate halvings after divergence, the epoch
        resumed from, and the seconds spent.
    """
    if loss is None:  # no targets: the problem's objective, if the net has one (a dataset's items carry x)
        no_targets = X is None and not is_data_source(Y)
        loss = "unsupervised" if no_targets and getattr(net, "problem", None) is not None else "supervised"
    resuming = checkpoint is not None and resume and Path(checkpoint).exists()
    stages = warmup_stages(
        net, depth=depth, epochs=epochs, layer_weights=layer_weights, params=params, resuming=resuming
    )
    for d, ep in stages:  # the family's depth curriculum (defaults.py)
        kw = dict(batch_size=batch_size, lr=lr, val=val, clip=clip, schedule=schedule, weight_decay=weight_decay)
        train(net, Y, X, loss=loss, epochs=ep, depth=d, seed=seed, progress=progress, threads=threads, **kw)
    lr, batch_size, epochs, clip, params = resolve(
        net, lr=lr, batch_size=batch_size, epochs=epochs, clip=clip, params=params
    )
    cfg = _check_options(
        net,
        loss=loss,
        schedule=schedule,
        epochs=epochs,
        checkpoint_every=checkpoint_every,
        batch_size=batch_size,
        lr=lr,
        clip=clip,
        depth=depth,
        layer_weights=layer_weights,
    )
    if on_epoch is not None and not callable(on_epoch):
        raise TypeError(f"on_epoch must be callable as on_epoch(net, epoch, history), got {on_epoch!r}")
    if threads is None:
        threads = default_threads(cfg["batch_size"], net.m, net.n)
    with torch_threads(threads):
        distributed.init(net.operator.device)
        data = _prepare(net, Y, _targets(net, X, "X", loss), "", loss)
        val_data, Xv = None, None
        if val is not None:
            Yv, Xv = val if isinstance(val, (tuple, list)) else (val, None)
            val_data = _prepare(net, Yv, _targets(net, Xv, "val_X", loss), "val_", loss)
        given = data.fingerprint() + (val_data.fingerprint() if val_data is not None else [])
        groups = _param_groups(net, params)
        opt = torch.optim.Adam(groups, lr=cfg["lr"], weight_decay=weight_decay)
        config = {
            k: cfg[k] for k in ("loss", "epochs", "batch_size", "lr", "clip", "schedule", "depth", "layer_weights")
        }
        config.update(seed=seed, weight_decay=weight_decay)
        identity = _identity(net, config, data_fingerprint(*given), run)
        ckpt = Path(checkpoint) if checkpoint is not None else None
        loss_of = _loss_fn(net, loss, layer_weights)
        return _loop(net, opt, loss_of, data, val_data, cfg, seed, ckpt, resume, identity, progress, on_epoch)


def _targets(net, X, name: str, loss: str):
    """``X`` as ``_prepare`` takes it: class labels become one-hot rows for ``"cross-entropy"``."""
    if loss != "cross-entropy" or X is None:
        return X
    return one_hot_labels(X, net.n_classes, name)


def _loop(net, opt, loss_of, data, val_data, cfg, seed, ckpt, resume, identity, progress, on_epoch) -> TrainHistory:
    """The epochs from the checkpoint's (or 0) to the last; checkpoints; the best weights left in ``net``."""
    params = [p for g in opt.param_groups for p in g["params"]]
    hist, start, best_state, lr_scale = TrainHistory(), 0, None, 1.0
    lead = distributed.rank() == 0  # logs, validates and writes; the other ranks wait for it
    if ckpt is not None:
        if lead:
            remove_stale_temps(ckpt)
        distributed.barrier()
        if resume and ckpt.exists():
            hist, start, best_state, lr_scale = _resume(ckpt, net, opt, identity)
    distributed.broadcast_module(net)
    t0 = time.perf_counter() - hist.seconds
    epochs = cfg["epochs"]
    bar = tqdm(
        range(start, epochs),
        desc=f"train {type(net).__name__}",
        disable=not (progress and lead),
        initial=start,
        total=epochs,
    )
    for epoch in bar:
        if on_epoch is not None:
            on_epoch(net, epoch, hist)
        train_loss, rate, lr_scale = _epoch(net, opt, params, loss_of, data, cfg, seed, epoch, lr_scale, hist)
        if hasattr(loss_of, "reset"):
            loss_of.reset()
        val_loss = (
            _validation_loss(loss_of, val_data, cfg["depth"], net.operator.device)
            if val_data is not None
            else train_loss
        )
        accuracy = getattr(loss_of, "accuracy", None) if val_data is not None else None
        hist.train_loss.append(train_loss)
        hist.val_loss.append(val_loss if val_data is not None else None)
        hist.val_accuracy.append(accuracy)
        hist.lr.append(rate)
        if val_loss < hist.best_loss:
            hist.best_loss, hist.best_epoch = val_loss, epoch
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        hist.seconds = time.perf_counter() - t0
        bar.set_postfix(
            loss=f"{train_loss:.4g}",
            val=f"{val_loss:.4g}" if val_data is not None else "-",
            **({"acc": f"{accuracy:.4f}"} if accuracy is not None else {}),
        )
        if ckpt is not None and ((epoch + 1) % cfg["checkpoint_every"] == 0 or epoch + 1 == epochs):
            if lead:
                _write_checkpoint(ckpt, net, opt, best_state, identity, epoch + 1, hist, lr_scale)
            distributed.barrier()
    bar.close()
    if best_state is not None:
        net.load_state_dict(best_state)
    hist.seconds = time.perf_counter() - t0
    return hist
