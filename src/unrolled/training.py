"""Fitting an unrolled network: supervised, semi-supervised or unsupervised.

Adam with a cosine learning-rate schedule and gradient-norm clipping; validation every
epoch and the best weights kept; a guard that restores the epoch's starting weights and
halves the rate when the loss turns NaN/inf; atomic checkpoints (safetensors + JSON) that
a killed run resumes from. Shuffling is seeded per epoch, so a resumed run follows the
same path as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ._threads import default_threads
from ._threads import threads as torch_threads
from ._validate import as_batch, choice, nonnegative_float, positive_int
from .defaults import AUTO, resolve, warmup_stages
from .nets.base import load_tensors, remove_stale_temps, save_tensors
from .operators import LearnedOperator, as_operator
from .problems import Lasso

LOSSES = ("supervised", "semi-supervised", "unsupervised")
MAX_BACKOFFS = 8


@dataclass
class TrainHistory:
    """Per-epoch record of a training run."""

    train_loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
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


def _loss_fn(net, loss: str, layer_weights):
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
    dtype, device = net.operator.dtype, net.operator.device
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
    return Y_t, X_t


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
    """sha256 over the dtype, shape and bytes of each array (None counts as absent)."""
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"none")
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


def _pass(opt, params, loss_of, Y_t, X_t, cfg: dict, seed: int, epoch: int) -> float | None:
    """One pass over the data in the epoch's seeded order; the mean loss, or None if it turned NaN/inf."""
    N, batch = Y_t.shape[0], cfg["batch_size"]
    order = torch.randperm(N, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    total = 0.0
    for i in range(0, N, batch):
        idx = order[i : i + batch].to(Y_t.device)
        value = loss_of(Y_t[idx], X_t[idx], cfg["depth"])
        if not torch.isfinite(value):
            return None
        opt.zero_grad(set_to_none=True)
        value.backward()
        if cfg["clip"] is not None:
            torch.nn.utils.clip_grad_norm_(params, cfg["clip"])
        opt.step()
        total += float(value.detach()) * len(idx)
    if not all(torch.isfinite(p).all() for p in params):
        return None
    return total / N


def _epoch(net, opt, params, loss_of, data, cfg: dict, seed: int, epoch: int, lr_scale: float, hist):
    """Train one epoch; on divergence restore its starting weights and halve the rate (up to
    ``MAX_BACKOFFS`` times). Returns (mean training loss, rate used, new rate scale)."""
    for _ in range(MAX_BACKOFFS + 1):
        rate = _rate(cfg, epoch, lr_scale)
        for g in opt.param_groups:
            g["lr"] = rate * g["lr_factor"]
        weights, opt_state = _snapshot(net, opt)
        train_loss = _pass(opt, params, loss_of, *data, cfg, seed, epoch)
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
    with torch.no_grad():
        Yd, Xd = data
        total = 0.0
        for i in range(0, Yd.shape[0], 4096):
            total += float(loss_of(Yd[i : i + 4096], Xd[i : i + 4096], depth)) * min(4096, Yd.shape[0] - i)
        return total / Yd.shape[0]


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
) -> TrainHistory:
    """Fit ``net`` to measurements ``Y`` (and targets ``X``); the best weights are left in ``net``.

    Adam on mini-batches in a seeded order per epoch, with a cosine rate schedule and
    gradient-norm clipping; the weights with the lowest validation loss are kept.

    Parameters
    ----------
    net : UnrolledNet
        The network to fit, in place.
    Y : array or tensor, shape (N, m)
        Training measurements, one signal per row.
    X : array or tensor, shape (N, n), optional
        Targets; required for ``loss="supervised"``, computed (the Lasso solutions) for
        ``"semi-supervised"`` when None, unused for ``"unsupervised"``.
    loss : {"supervised", "semi-supervised", "unsupervised"}, optional
        Default: ``"unsupervised"`` when ``X`` is None and the net has a problem, else
        ``"supervised"``. ``"supervised"``: mean ‖x̂ − x‖² (xie2019 §2; sen2024 eq. 7); ``"semi-supervised"``: the
        same with x the Lasso solution; ``"unsupervised"``: the problem's objective F_y(x̂)
        (Moreau talk, "LISTA – Training").
    epochs, batch_size, lr : int, int, float, optional
        Passes over the data, rows per step, and Adam's initial rate; None takes the net
        family's default (:mod:`unrolled.defaults`). A family with a depth curriculum (LPGD,
        LAPGD, Vanilla) first trains depths 1, …, K − 1 (``defaults.warmup_stages``) when the
        whole net is trained afresh.
    val : (Y_val, X_val) or Y_val, optional
        Validation data, shapes (N_val, m) and (N_val, n); without it the training loss
        chooses the best epoch.
    seed : int
        Seeds the per-epoch shuffling, so a resumed run follows an uninterrupted one.
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

    Returns
    -------
    TrainHistory
        Per-epoch training/validation loss and rate, best epoch and loss, rate halvings
        after divergence, the epoch resumed from, and the seconds spent.
    """
    if loss is None:  # no targets: the problem's objective, if the net has one
        loss = "unsupervised" if X is None and getattr(net, "problem", None) is not None else "supervised"
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
    if threads is None:
        threads = default_threads(cfg["batch_size"], net.m, net.n)
    with torch_threads(threads):
        data = _prepare(net, Y, X, "", loss)
        val_data, Xv = None, None
        if val is not None:
            Yv, Xv = val if isinstance(val, (tuple, list)) else (val, None)
            val_data = _prepare(net, Yv, Xv, "val_", loss)
        given = [data[0], data[1] if X is not None else None]  # computed targets are not part of the input
        if val_data is not None:
            given += [val_data[0], val_data[1] if Xv is not None else None]
        groups = _param_groups(net, params)
        opt = torch.optim.Adam(groups, lr=cfg["lr"], weight_decay=weight_decay)
        config = {
            k: cfg[k] for k in ("loss", "epochs", "batch_size", "lr", "clip", "schedule", "depth", "layer_weights")
        }
        config.update(seed=seed, weight_decay=weight_decay)
        identity = _identity(net, config, data_fingerprint(*given), run)
        ckpt = Path(checkpoint) if checkpoint is not None else None
        return _loop(
            net, opt, _loss_fn(net, loss, layer_weights), data, val_data, cfg, seed, ckpt, resume, identity, progress
        )


def _loop(net, opt, loss_of, data, val_data, cfg, seed, ckpt, resume, identity, progress) -> TrainHistory:
    """The epochs from the checkpoint's (or 0) to the last; checkpoints; the best weights left in ``net``."""
    params = [p for g in opt.param_groups for p in g["params"]]
    hist, start, best_state, lr_scale = TrainHistory(), 0, None, 1.0
    if ckpt is not None:
        remove_stale_temps(ckpt)
        if resume and ckpt.exists():
            hist, start, best_state, lr_scale = _resume(ckpt, net, opt, identity)
    t0 = time.perf_counter() - hist.seconds
    epochs = cfg["epochs"]
    bar = tqdm(
        range(start, epochs), desc=f"train {type(net).__name__}", disable=not progress, initial=start, total=epochs
    )
    for epoch in bar:
        train_loss, rate, lr_scale = _epoch(net, opt, params, loss_of, data, cfg, seed, epoch, lr_scale, hist)
        val_loss = _evaluate(loss_of, val_data, cfg["depth"]) if val_data is not None else train_loss
        hist.train_loss.append(train_loss)
        hist.val_loss.append(val_loss if val_data is not None else None)
        hist.lr.append(rate)
        if val_loss < hist.best_loss:
            hist.best_loss, hist.best_epoch = val_loss, epoch
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        hist.seconds = time.perf_counter() - t0
        bar.set_postfix(loss=f"{train_loss:.4g}", val=f"{val_loss:.4g}" if val_data is not None else "-")
        if ckpt is not None and ((epoch + 1) % cfg["checkpoint_every"] == 0 or epoch + 1 == epochs):
            _write_checkpoint(ckpt, net, opt, best_state, identity, epoch + 1, hist, lr_scale)
    bar.close()
    if best_state is not None:
        net.load_state_dict(best_state)
    hist.seconds = time.perf_counter() - t0
    return hist
