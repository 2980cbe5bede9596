"""Chen, Liu, Wang & Yin 2018 (LISTA-CP / LISTA-CPSS), with ALISTA (Liu, Chen, Wang & Yin 2019).

chen-cpss   supervised NMSE (dB) against layers 1..16 of LISTA, LISTA-CP, LISTA-CPSS and ALISTA,
            beside ISTA/FISTA, on Chen et al.'s §5 setting: A ∈ R^{250×500} Gaussian with unit
            columns, codes Bernoulli(0.1)–Gaussian, noiseless and SNR 40 dB.

Training as in Chen et al. 2018 §5 (and ALISTA's code, which follows it): every step draws a
fresh batch of (code, measurement) pairs from the generator (no fixed training set; Chen et al.
draw 64, the full run here 512: see ``FULL``); the
network is grown layer by layer, and stage t trains layer t alone at the base rate, then
layers 1..t at 0.2× and 0.02× the base rate; each phase stops when the validation NMSE (1000
fixed pairs) has not improved for ``patience`` checks, or after its step budget, and keeps its
best weights. Steps and thresholds (log-parametrized, see ``nets.lista``) get their own, higher
rate than the matrices (parameter groups found by name). ALISTA is trained supervised on the
codes, as in Liu et al. 2019, with support selection (its paper's ALISTA includes it).

``unrolled reproduce chen-cpss --device cuda`` keeps every tensor on the GPU (dictionary, fresh
batches, validation and test sets, nets, ISTA/FISTA references) and rewrites ``results.json``
after every depth of every net, so a run cut by a timeout still reports what it trained.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from . import experiment, finish

LOG = logging.getLogger(__name__)

SCALAR_NAMES = ("a.", "b.")  # state-dict prefixes of the per-layer steps / thresholds
NETS = {
    "LISTA-CPSS": ("LISTA-CP", {"support_selection": True}),
    "LISTA-CP": ("LISTA-CP", {}),
    "ALISTA": ("ALISTA", {"support_selection": True}),
    "LISTA": ("LISTA", {}),
}
REFINE = (0.2, 0.02)  # Chen et al.: after the new layer, all layers at these × the base rate

# The full protocol is sized for a GPU, where a step of these nets costs the same for a batch of
# 64 or 512 (kernel launches dominate): 8× Chen et al.'s fresh samples per step, up to 900 steps per
# depth (500 for the new layer, 200 per refinement), so that the 8 trainings (4 nets, 2 settings) fit
# in about 5 minutes. (The earlier CPU protocol, batch 64 and 400 steps, ran every LISTA-CP phase to
# its step budget: LISTA-CP was short of training, not of capacity.)
FULL = {
    "m": 250,
    "n": 500,
    "depth": 16,
    "batch": 512,
    "n_val": 1000,
    "n_test": 500,
    "steps_new": 500,
    "steps_refine": 200,
    "check_every": 50,
    "patience": 4,
    "lr_scalar": 1e-1,
    "lr_matrix": 5e-2,
    "settings": {"noiseless": None, "SNR 40 dB": 40.0},
}
QUICK = {
    "m": 50,
    "n": 100,
    "depth": 4,
    "batch": 64,
    "n_val": 300,
    "n_test": 300,
    "steps_new": 60,
    "steps_refine": 30,
    "check_every": 15,
    "patience": 4,
    "lr_scalar": 1e-1,
    "lr_matrix": 5e-2,
    "settings": {"noiseless": None, "SNR 40 dB": 40.0},
}


class FreshPairs:
    """Draws (Y, Z) batches: z Bernoulli(p)–Gaussian, y = Az + w, w white at ``snr_db``
    (E‖Az‖² / E‖w‖² = 10^{snr/10}, signal power of the batch; None: noiseless). Float32."""

    def __init__(self, A, *, p: float = 0.1, snr_db: float | None = None, seed: int = 0, device=None):
        self.A = torch.as_tensor(A, dtype=torch.float64, device=device)
        self.p, self.snr_db = p, snr_db
        self.gen = torch.Generator(device=self.A.device).manual_seed(seed)

    def __call__(self, batch: int):
        n, kw = self.A.shape[1], {"generator": self.gen, "dtype": torch.float64, "device": self.A.device}
        mask = torch.rand(batch, n, **kw) < self.p
        Z = mask * torch.randn(batch, n, **kw)
        Y = Z @ self.A.T
        if self.snr_db is not None:
            noise = torch.randn(Y.shape, **kw)
            Y = Y + noise * torch.sqrt(Y.pow(2).mean() / 10 ** (self.snr_db / 10))
        return Y.float(), Z.float()


def _groups(net, layers, lr_scalar: float, lr_matrix: float) -> list[dict]:
    """Adam groups for the parameters of ``layers``: steps/thresholds (named a.t / b.t) at
    ``lr_scalar``, matrices at ``lr_matrix``."""
    wanted = {id(p) for t in layers for p in net.layer_parameters(t)}
    scal, mats = [], []
    for name, p in net.named_parameters():
        if id(p) in wanted:
            (scal if name.startswith(SCALAR_NAMES) else mats).append(p)
    return [g for g in ({"params": scal, "lr": lr_scalar}, {"params": mats, "lr": lr_matrix}) if g["params"]]


def _val_nmse(net, val, depth: int) -> float:
    from ..metrics import nmse_db

    with torch.no_grad():
        return nmse_db(net(val[0], depth=depth), val[1])


def fit_phase(net, draw, groups, *, depth: int, steps: int, batch: int, val, check_every: int, patience: int) -> dict:
    """Adam on fresh batches ``draw(batch)`` with loss mean ‖ẑ⁽ᵈᵉᵖᵗʰ⁾ − z‖² (Chen et al. 2018 §5);
    validation NMSE every ``check_every`` steps, stop after ``patience`` checks without
    improvement; the best weights are kept. Returns {"steps", "val_nmse_db"}."""
    opt = torch.optim.Adam(groups)
    best = _val_nmse(net, val, depth)
    best_state = {k: v.clone() for k, v in net.state_dict().items()}
    bad, done = 0, 0
    for done in range(1, steps + 1):
        Y, Z = draw(batch)
        loss = (net(Y, depth=depth) - Z).pow(2).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if done % check_every == 0:
            v = _val_nmse(net, val, depth)
            if math.isfinite(v) and v < best:
                best, bad = v, 0
                best_state = {k: t.clone() for k, t in net.state_dict().items()}
            else:
                bad += 1
                if bad >= patience:
                    break
    net.load_state_dict(best_state)
    return {"steps": done, "val_nmse_db": best}


def train_chen(net, draw, val, cfg: dict, on_stage=None) -> list[dict]:
    """Chen et al.'s staged schedule: for t = 1..depth, layer t alone, then layers 1..t at
    ``REFINE`` × the rates (each phase by :func:`fit_phase`); progress goes to :data:`LOG`.
    ``on_stage(records)`` is called after each depth's phases (e.g. to save partial results)."""
    records = []
    for k in range(1, net.depth + 1):
        phases = [(range(k - 1, k), 1.0, cfg["steps_new"])] + [(range(k), f, cfg["steps_refine"]) for f in REFINE]
        for layers, f, steps in phases:
            groups = _groups(net, layers, f * cfg["lr_scalar"], f * cfg["lr_matrix"])
            rec = fit_phase(
                net,
                draw,
                groups,
                depth=k,
                steps=steps,
                batch=cfg["batch"],
                val=val,
                check_every=cfg["check_every"],
                patience=cfg["patience"],
            )
            records.append({"depth": k, "rate_factor": f, **rec})
            LOG.info("  depth %2d x%-5g %5d steps  val %.2f dB", k, f, rec["steps"], rec["val_nmse_db"])
        if on_stage is not None:
            on_stage(records)
    return records


def nmse_curve(A, Y, Z, lam: float, method: str, iters: int) -> list[float]:
    """NMSE (dB) of ISTA/FISTA iterates k = 0..iters against the true codes (k = 0: z = 0 → 0 dB)."""
    from ..algorithms.lasso import FISTA, ISTA
    from ..metrics import nmse_db
    from ..operators import DenseOperator
    from ..problems import Lasso

    prob = Lasso(DenseOperator(A.to(torch.float64)), lam)
    meth = (ISTA if method == "ista" else FISTA)(prob)
    state = meth.init(Y.to(torch.float64), None)
    curve = [0.0]
    with torch.no_grad():
        for k in range(1, iters + 1):
            meth.step(state, k)
            curve.append(nmse_db(state["x"], Z))
    return curve


def _first_below(curve, value) -> int | None:
    for k, v in enumerate(curve):
        if k and v <= value:
            return k
    return None


def _save_partial(out, per: dict, running: dict) -> None:
    """``out/results.json`` with the nets finished so far (their test curves) and the one in
    training (its validation NMSE after each depth done), marked ``"partial": true``: a run cut
    by a timeout still reports. :func:`finish` overwrites it at the end."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    brief = {
        s: {label: {k: nr[k] for k in ("nmse_db", "seconds", "train_steps")} for label, nr in r["nets"].items()}
        for s, r in per.items()
    }
    doc = {"experiment": "chen-cpss", "partial": True, "per_setting": brief, "in_training": running}
    (out / "results.json").write_text(json.dumps(doc, indent=1))


def _claims(per: dict, depth: int) -> dict:
    """Ids: ``below_fista.<net>.<setting>`` (NMSE at the last layer below FISTA's after as many
    iterations), ``cpss_below_cp.<setting>`` (support selection helps, Chen et al. 2018 Fig. 3)."""
    claims = {}
    for sname, r in per.items():
        key = sname.replace(" ", "")
        fista = r["reference"]["fista"][depth]
        for label, nr in r["nets"].items():
            claims[f"below_fista.{label}.{key}"] = bool(nr["nmse_db"][-1] < fista)
        if {"LISTA-CP", "LISTA-CPSS"} <= set(r["nets"]):
            claims[f"cpss_below_cp.{key}"] = bool(
                r["nets"]["LISTA-CPSS"]["nmse_db"][-1] < r["nets"]["LISTA-CP"]["nmse_db"][-1]
            )
    return claims


def _figure(per: dict, depth: int, m: int, n: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(per), figsize=(6 * len(per), 4.2), squeeze=False)
    for ax, (sname, r) in zip(axes[0], per.items()):
        ks = np.arange(0, depth + 1)
        ax.plot(ks, r["reference"]["ista"], "k--", label="ISTA")
        ax.plot(ks, r["reference"]["fista"], "k:", label="FISTA")
        for label, nr in r["nets"].items():
            ax.plot(np.arange(1, depth + 1), nr["nmse_db"], "o-", ms=3, label=label)
        ax.set_xlabel("layers / iterations")
        ax.set_ylabel("NMSE (dB)")
        ax.set_title(f"{m}×{n}, {sname}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


@experiment(
    "chen-cpss",
    paper="Chen et al. 2018 (LISTA-CP/CPSS); ALISTA (Liu et al. 2019)",
    what="supervised NMSE (dB) vs layers 1..16 for LISTA, LISTA-CP, LISTA-CPSS, ALISTA and ISTA/FISTA, "
    "A 250×500 Gaussian, Bernoulli(0.1)–Gaussian codes, noiseless and SNR 40 dB; trained on fresh "
    "samples every step, layer by layer with decreasing rates",
)
def chen_cpss(quick: bool, out: Path, seed: int = 0, nets=None, device: str = "cpu") -> dict:
    """``device``: every tensor (dictionary, fresh batches, validation/test sets, nets, the
    ISTA/FISTA references) lives there; ``results.json`` is rewritten after every depth of every net."""
    from ..data.lasso import gaussian_dictionary, sparse_measurements
    from ..metrics import nmse_db
    from .moreau import _make_net

    t0 = time.perf_counter()
    cfg = QUICK if quick else FULL
    dev = torch.device(device)
    m, n, depth, lam = cfg["m"], cfg["n"], cfg["depth"], 0.05
    A = torch.as_tensor(gaussian_dictionary(m, n, seed=seed)).to(dev)
    match_iters = 500 if quick else 1000
    per = {}
    for i, (sname, snr) in enumerate(cfg["settings"].items()):
        Yval, Zval = (
            torch.as_tensor(t).to(dev)
            for t in sparse_measurements(A.cpu(), cfg["n_val"], snr_db=snr, seed=seed + 12 + 100 * i)
        )
        Yte, Zte = (
            torch.as_tensor(t).to(dev)
            for t in sparse_measurements(A.cpu(), cfg["n_test"], snr_db=snr, seed=seed + 13 + 100 * i)
        )
        ref = {meth: nmse_curve(A, Yte, Zte, lam, meth, match_iters) for meth in ("ista", "fista")}
        rows = {}
        for label in nets or NETS:
            kind, kw = NETS[label]
            torch.manual_seed(seed)
            net = _make_net(kind, A.cpu().float(), depth, lam, **kw).to(dev)
            t1 = time.perf_counter()
            LOG.info("%s %s", sname, label)
            draw = FreshPairs(A, snr_db=snr, seed=seed + 1000 + 100 * i, device=dev)

            def on_stage(records, label=label, rows=rows, sname=sname, t1=t1):
                done = [r["val_nmse_db"] for r in records if r["rate_factor"] == REFINE[-1]]
                running = {"setting": sname, "net": label, "val_nmse_db_by_depth": done}
                running["seconds"] = round(time.perf_counter() - t1, 1)
                _save_partial(out, {**per, sname: {"nets": rows}}, running)

            records = train_chen(net, draw, (Yval.float(), Zval.float()), cfg, on_stage=on_stage)
            with torch.no_grad():
                curve = [nmse_db(Zh, Zte) for Zh in net(Yte.float(), return_all=True)]
            rows[label] = {
                "nmse_db": curve,
                "seconds": round(time.perf_counter() - t1, 1),
                "train_steps": sum(r["steps"] for r in records),
                "phases": records,
                "ista_iters_to_match": _first_below(ref["ista"], curve[-1]),
                "fista_iters_to_match": _first_below(ref["fista"], curve[-1]),
            }
            LOG.info("%s %s: NMSE@%d %.2f dB in %s s", sname, label, depth, curve[-1], rows[label]["seconds"])
        per[sname] = {
            "reference": {k: v[: depth + 1] for k, v in ref.items()},
            "reference_best": {k: min(v) for k, v in ref.items()},
            "nets": rows,
        }
    table = [["setting", "method", f"NMSE dB @{depth}", "ISTA its to match", "FISTA its to match"]]
    for sname, r in per.items():
        for meth in ("ista", "fista"):
            table.append([sname, meth.upper(), r["reference"][meth][depth], "", ""])
        for label, nr in r["nets"].items():
            fmt = lambda k: k if k is not None else f">{match_iters}"  # noqa: E731
            table.append(
                [sname, label, nr["nmse_db"][-1], fmt(nr["ista_iters_to_match"]), fmt(nr["fista_iters_to_match"])]
            )
    results = {
        "m": m,
        "n": n,
        "depth": depth,
        "lam": lam,
        "config": {k: v for k, v in cfg.items() if k != "settings"},
        "device": str(dev),
        "per_setting": per,
        "claims": _claims(per, depth),
        "table": table,
    }
    return finish(out, "chen-cpss", results, {"nmse_vs_layers": _figure(per, depth, m, n)}, started=t0)
