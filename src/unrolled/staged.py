"""Layer-wise schedules for deep unrolled networks, built on :func:`unrolled.training.train`.

* greedy nested training (``refine=False``): stage k trains only the new layers, the first
  ones stay frozen, so the depth-k prefix after stage k is the k-layer network; this is the
  nested setting of the Moreau talk's Theorem 4.4 (Φ_Θ⁽ᵗ⁾ = φ_θ⁽ᵗ⁾ ∘ Φ_Θ⁽ᵗ⁻¹⁾);
* the staged schedule of the LISTA papers (Chen et al. 2018 §5; Liu et al. 2019): train the
  new layer at ``lr``, then all layers so far at ``lr × refine_lrs`` (0.2, 0.02).

Every stage is an ordinary ``train(net, ..., depth=k, params=...)`` call: no second loop.
Semi-supervised targets (the Lasso solutions) are computed once and reused by every stage.
"""

from __future__ import annotations

import torch

from ._validate import choice, positive_int
from .metrics import nmse_db
from .training import LOSSES, lasso_targets, train


def _layer_params(net, layers, select=None) -> list:
    seen, out = set(), []
    for t in layers:
        for p in (select or net.layer_parameters)(t):
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def _stages(stages, depth):
    if stages is None:
        return list(range(1, depth + 1))
    stages = [positive_int(s, "stages") for s in stages]
    if any(b <= a for a, b in zip(stages, stages[1:])) or stages[-1] > depth:
        raise ValueError(f"stages must be increasing depths ≤ {depth}, got {stages}")
    return stages


def train_staged(
    net,
    Y,
    X=None,
    *,
    loss: str = "supervised",
    stages=None,
    epochs_new: int = 10,
    epochs_all=(5, 5),
    lr: float = 1e-3,
    refine_lrs=(0.2, 0.02),
    refine: bool = True,
    val=None,
    on_stage=None,
    progress: bool = False,
    layer_params=None,
    **train_kw,
) -> list[dict]:
    """Train ``net`` stage by stage; stage k trains layers up to depth k (``stages``: the depths,
    default 1, 2, …, depth). The network must provide ``layer_parameters(t)``.

    With ``refine`` each stage continues with every layer so far, at ``lr·f`` for f in
    ``refine_lrs`` for ``epochs_all`` epochs each. ``on_stage(k, net)`` is called after each
    stage; its return value is stored in the record. ``layer_params(t)`` chooses the trained
    parameters of layer t (default ``net.layer_parameters``). Returns one record per stage:
    {"depth", "histories", "result"}.
    """
    choice(loss, "loss", LOSSES)
    if not hasattr(net, "layer_parameters"):
        raise TypeError(f"{type(net).__name__} has no layer_parameters(t); staged training needs it")
    stages = _stages(stages, net.depth)
    if isinstance(epochs_all, int):
        epochs_all = (epochs_all,) * len(refine_lrs)
    if len(epochs_all) != len(refine_lrs):
        raise ValueError("epochs_all and refine_lrs must have the same length")
    Y_t = Y if isinstance(Y, torch.Tensor) else torch.as_tensor(Y)
    if loss == "semi-supervised":  # cache the Lasso solutions once for all stages
        if X is None:
            X = lasso_targets(net, Y_t.to(net.operator.dtype))
        if val is not None and not isinstance(val, (tuple, list)):
            val = (val, lasso_targets(net, torch.as_tensor(val).to(net.operator.dtype)))
    records, prev = [], 0
    for k in stages:
        hists = [
            train(
                net,
                Y_t,
                X,
                loss=loss,
                depth=k,
                params=_layer_params(net, range(prev, k), layer_params),
                epochs=positive_int(epochs_new, "epochs_new"),
                lr=lr,
                val=val,
                progress=progress,
                **train_kw,
            )
        ]
        if refine:
            for f, e in zip(refine_lrs, epochs_all):
                if e:
                    hists.append(
                        train(
                            net,
                            Y_t,
                            X,
                            loss=loss,
                            depth=k,
                            params=_layer_params(net, range(k), layer_params),
                            epochs=e,
                            lr=lr * f,
                            val=val,
                            progress=progress,
                            **train_kw,
                        )
                    )
        rec = {"depth": k, "histories": [h.to_dict() for h in hists]}
        if on_stage is not None:
            rec["result"] = on_stage(k, net)
        records.append(rec)
        prev = k
    return records


def train_layerwise(net, Y, X=None, **kw) -> list[dict]:
    """Greedy nested training: :func:`train_staged` with ``refine=False`` (each stage trains only
    its new layers; earlier layers stay as trained)."""
    kw["refine"] = False
    return train_staged(net, Y, X, **kw)


def evaluate_layers(net, Y, X=None, *, F_star=None, batch: int = 4096) -> dict:
    """Per-layer metrics of ``net`` on rows ``Y``: ``gap`` (mean F(z⁽ᵗ⁾) − F*, with F the net's
    Lasso objective, in float64) when ``F_star`` is given, ``objective`` (mean F(z⁽ᵗ⁾)), and
    ``nmse_db`` against ``X`` when given."""
    out = {"objective": [], "gap": [], "nmse_db": []}
    prob = net.problem
    with torch.no_grad():
        Yd = torch.as_tensor(Y).to(net.operator.dtype)
        outs = [[] for _ in range(net.depth)]
        for i in range(0, Yd.shape[0], batch):
            for t, Z in enumerate(net(Yd[i : i + batch], return_all=True)):
                outs[t].append(Z)
        Y64 = Yd.to(torch.float64)
        from .metrics import _as_float64

        p64 = _as_float64(prob)
        for t in range(net.depth):
            Z = torch.cat(outs[t]).to(torch.float64)
            F = p64.objective(Z, Y64)
            out["objective"].append(float(F.mean()))
            if F_star is not None:
                out["gap"].append(float((F - torch.as_tensor(F_star, dtype=torch.float64)).mean()))
            if X is not None:
                out["nmse_db"].append(nmse_db(Z, X))
    return {k: v for k, v in out.items() if v}


__all__ = ["train_staged", "train_layerwise", "evaluate_layers"]
