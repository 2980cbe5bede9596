"""Fitting an unrolled network: supervised, semi-supervised or unsupervised.

Adam with a cosine learning-rate schedule and gradient-norm clipping; validation every
epoch and the best weights kept; a guard that restores the epoch's starting weights and
halves the rate when the loss turns NaN/inf; atomic checkpoints (safetensors + JSON) that
a killed run resumes from. Shuffling is seeded per epoch, so a resumed run follows the
same path as an uninterrupted one.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
import json
import math
from pathlib import Path
import time

import torch
from tqdm.auto import tqdm

from ._validate import as_batch, choice, nonnegative_float, positive_int
from .defaults import AUTO, resolve
from .nets.base import load_tensors, save_tensors
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
    D = net.operator.detach().to(torch.float64)
    res = lasso(D, Y.detach().to(torch.float64), net.problem.lam, "fista", restart=True, tol=tol, max_iter=max_iter)
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


def train(net, Y, X=None, *, loss: str = "supervised", epochs: int | None = None, batch_size: int | None = None,
          lr: float | None = None, val=None, seed: int = 0, progress: bool = True, checkpoint=None,
          resume: bool = True, clip: float | None | str = AUTO, schedule: str = "cosine", depth: int | None = None,
          params=None, layer_weights=None, weight_decay: float = 0.0, checkpoint_every: int = 1) -> TrainHistory:
    """Fit ``net`` to measurements ``Y`` (and targets ``X``); the best weights are left in ``net``.

    loss: ``"supervised"`` — mean ‖x̂ − x‖² (xie2019 §2; sen2024 eq. 7); ``"semi-supervised"`` — the
    same with x the Lasso solution (computed if ``X`` is None); ``"unsupervised"`` — the problem's
    objective F_y(x̂) (Moreau talk, "LISTA – Training"). ``val``: ``(Y_val, X_val)`` or ``Y_val``.
    ``checkpoint``: file path; written atomically every epoch and resumed from if ``resume``.
    ``depth`` trains the first layers only; ``params`` restricts the trained parameters, as
    tensors or as groups ``{"params": [...], "lr": factor}`` whose rate is ``factor × lr``
    (e.g. steps and thresholds faster than matrices);
    ``layer_weights`` sums the loss over every layer's output with these weights.
    ``checkpoint_every``: epochs between checkpoints (the last epoch is always written).
    ``lr``, ``batch_size``, ``epochs``, ``params`` left at None and ``clip="auto"`` take the
    net family's defaults (:mod:`unrolled.defaults`).
    """
    lr, batch_size, epochs, clip, params = resolve(net, lr=lr, batch_size=batch_size, epochs=epochs, clip=clip,
                                                   params=params)
    choice(loss, "loss", LOSSES)
    choice(schedule, "schedule", ("cosine", "none"))
    epochs = positive_int(epochs, "epochs")
    checkpoint_every = positive_int(checkpoint_every, "checkpoint_every")
    batch_size = positive_int(batch_size, "batch_size")
    lr = nonnegative_float(lr, "lr", strict=True)
    if clip is not None:
        clip = nonnegative_float(clip, "clip", strict=True)
    depth = net.depth if depth is None else positive_int(depth, "depth")
    if layer_weights is not None and len(layer_weights) != depth:
        raise ValueError(f"layer_weights must have {depth} entries, got {len(layer_weights)}")
    if loss == "unsupervised" and getattr(net, "problem", None) is None:
        raise ValueError("unsupervised training needs net.problem (the objective to minimise)")

    Y_t, X_t = _prepare(net, Y, X, "", loss)
    val_data = None
    if val is not None:
        Yv, Xv = val if isinstance(val, (tuple, list)) else (val, None)
        val_data = _prepare(net, Yv, Xv, "val_", loss)
    groups = [{"params": list(net.parameters())}] if params is None else list(params)
    if groups and not isinstance(groups[0], dict):
        groups = [{"params": groups}]
    for g in groups:  # per-group rates are relative: the group's "lr" multiplies ``lr`` (default 1)
        g["params"] = list(g["params"])
        g["lr_factor"] = nonnegative_float(g.pop("lr", 1.0), "params group lr", strict=True)
    params = [p for g in groups for p in g["params"]]
    if not params:
        raise ValueError("no parameters to train")
    opt = torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
    loss_of = _loss_fn(net, loss, layer_weights)
    config = {"loss": loss, "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed, "clip": clip,
              "schedule": schedule, "depth": depth, "weight_decay": weight_decay,
              "layer_weights": list(layer_weights) if layer_weights is not None else None}

    hist, start_epoch, best_state = TrainHistory(), 0, None
    lr_scale = 1.0
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and resume and ckpt.exists():
        tensors, meta = load_tensors(ckpt)
        if meta.get("model", {}).get("class") != type(net).__name__ or meta["model"].get("fingerprint") != net.fingerprint \
                or meta["model"].get("config") != net.config:
            raise ValueError(f"checkpoint {ckpt} belongs to another model/operator; remove it or pass resume=False")
        if meta["train"] != json.loads(json.dumps(config)):
            raise ValueError(f"checkpoint {ckpt} was written with another training config: {meta['train']}")
        net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        best_state = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or None
        _restore_optim(opt, tensors, meta["optim_groups"])
        hist = TrainHistory(**meta["history"])
        start_epoch = hist.resumed_from = meta["epoch"]
        lr_scale = meta.get("lr_scale", 1.0)

    def evaluate(data):
        with torch.no_grad():
            Yd, Xd = data
            total = 0.0
            for i in range(0, Yd.shape[0], 4096):
                total += float(loss_of(Yd[i:i + 4096], Xd[i:i + 4096], depth)) * min(4096, Yd.shape[0] - i)
            return total / Yd.shape[0]

    t0 = time.perf_counter() - hist.seconds
    N = Y_t.shape[0]
    bar = tqdm(range(start_epoch, epochs), desc=f"train {type(net).__name__}", disable=not progress,
               initial=start_epoch, total=epochs)
    for epoch in bar:
        for attempt in range(MAX_BACKOFFS + 1):
            rate = lr * lr_scale * (0.5 * (1 + math.cos(math.pi * epoch / epochs)) if schedule == "cosine" else 1.0)
            for g in opt.param_groups:
                g["lr"] = rate * g["lr_factor"]
            snapshot = {k: v.detach().clone() for k, v in net.state_dict().items()}
            opt_snapshot = opt.state_dict()
            opt_snapshot = {"state": {i: {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in s.items()}
                                      for i, s in opt_snapshot["state"].items()},
                            "param_groups": opt_snapshot["param_groups"]}
            order = torch.randperm(N, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
            total, ok = 0.0, True
            for i in range(0, N, batch_size):
                idx = order[i:i + batch_size].to(Y_t.device)
                value = loss_of(Y_t[idx], X_t[idx], depth)
                if not torch.isfinite(value):
                    ok = False
                    break
                opt.zero_grad(set_to_none=True)
                value.backward()
                if clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, clip)
                opt.step()
                total += float(value.detach()) * len(idx)
            if ok and all(torch.isfinite(p).all() for p in params):
                break
            # divergence: back to the epoch's start, half the rate
            net.load_state_dict(snapshot)
            opt.load_state_dict(opt_snapshot)
            lr_scale *= 0.5
            hist.backoffs += 1
        else:
            raise RuntimeError(f"training diverged: loss not finite after {MAX_BACKOFFS} rate halvings")
        train_loss = total / N
        val_loss = evaluate(val_data) if val_data is not None else train_loss
        hist.train_loss.append(train_loss)
        hist.val_loss.append(val_loss if val_data is not None else None)
        hist.lr.append(rate)
        if val_loss < hist.best_loss:
            hist.best_loss, hist.best_epoch = val_loss, epoch
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        hist.seconds = time.perf_counter() - t0
        bar.set_postfix(loss=f"{train_loss:.4g}", val=f"{val_loss:.4g}" if val_data is not None else "-")
        if ckpt is not None and ((epoch + 1) % checkpoint_every == 0 or epoch + 1 == epochs):
            tensors = {f"model.{k}": v for k, v in net.state_dict().items()}
            tensors.update({f"best.{k}": v for k, v in (best_state or {}).items()})
            optim_tensors, groups = _optim_tensors(opt)
            tensors.update(optim_tensors)
            meta = {"model": net.metadata(), "train": config, "epoch": epoch + 1, "history": hist.to_dict(),
                    "optim_groups": groups, "lr_scale": lr_scale}
            save_tensors(ckpt, tensors, meta)
    bar.close()
    if best_state is not None:
        net.load_state_dict(best_state)
    hist.seconds = time.perf_counter() - t0
    return hist
