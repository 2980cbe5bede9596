"""Reproductions for the Moreau talk "Learning step sizes for unfolded sparse coding"
(Ablin, Moreau, Massias & Gramfort 2019).

moreau-simulated        objective gap F(z⁽ᵗ⁾) − F* against layers: ISTA, FISTA, OISTA vs LISTA, LISTA-CP,
                        ALISTA, SLISTA trained unsupervised (D ∈ R^{64×256} uniform on the sphere, x ∈ B∞)
moreau-digits           the same with 8×8 digit images as atoms and signals
moreau-coupling         40-layer LISTA-CP (the talk's φ_θ) on 10×20, λ = 0.1: ‖(α/β)W⁽ᵗ⁾ − D‖/‖D‖ per layer
moreau-marchenko-pastur L_S/L on Gaussian D vs ((1+√(ζγ))/(1+√γ))², and SLISTA's steps vs 1/L_S

moreau-simulated trains each net with 3 seeds in its full run (``seeds``) and reports the mean
gap and its spread. The measured numbers are in the README's reproduction table.
(chen-cpss, Chen et al. 2018's benchmark, is in chen2018.py.)
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from . import experiment, finish

PAPER = "moreau talk (Ablin et al. 2019)"


# -- shared pieces ---------------------------------------------------------------------------


def _reference_gaps(D, Y, lam, F_star, iters: int, methods=("ista", "fista", "oista")) -> dict:
    """Mean objective gap after k = 0..iters iterations of the classical solvers (float64)."""
    import unrolled as ur

    out = {}
    for m in methods:
        res = ur.lasso(D, Y, lam, m, tol=0.0, max_iter=iters, check_every=1, history="full")
        obj = torch.as_tensor(np.asarray(res.history["objective"]))
        out[m] = (obj - F_star[None]).mean(1).clamp_min(0).tolist()
    return out


def _first_below(curve, value) -> int | None:
    """Smallest k ≥ 1 with curve[k] ≤ value (None if never)."""
    for k, v in enumerate(curve):
        if k and v <= value:
            return k
    return None


def _scalar_params(net):
    return [p for plist in (net.a, net.b) if plist is not None for p in plist]


def max_log_step(net) -> float | None:
    """The largest sensible log-step of a net whose layers are z − α (zDᵀ − y) G (SLISTA: G = D;
    ALISTA: G = W̃), in the net's unit s₀: log(1 / (s₀ min_j g_jᵀd_j)).

    1/(g_jᵀd_j) is the exact minimising step along coordinate j, the largest 1/L_S over the
    supports S ≠ ∅ (Ablin et al. 2019: SLISTA learns α⁽ᵗ⁾ ≈ 1/L_S). A larger step overshoots on every
    support: it is the step of a layer z⁺ ≈ α ST(Dᵀ(y − Dz), λ) that fits the training set and
    blows up on inputs far from convergence. None for the nets whose matrices carry the scale."""
    if net.parametrization not in ("steps", "alista"):
        return None
    D = net.dense().A.to(torch.float64)
    curv = (net.layer_matrix(0).to(torch.float64) * D).sum(0)
    return math.log(1.0 / (float(net.s0) * float(curv.min())))


def project_steps(net) -> None:
    """Clamp the log-steps to :func:`max_log_step` (a projection after each training run)."""
    cap = max_log_step(net)
    if cap is not None:
        with torch.no_grad():
            for p in net.a:
                p.clamp_(max=cap)


def _fit_unsupervised(
    net,
    Ytr,
    Yval,
    *,
    epochs_scalar: int,
    epochs_all: int,
    lr_scalar: float = 0.05,
    lr_all: float = 1e-3,
    batch_size: int = 200,
    seed: int = 0,
) -> dict:
    """Two calls of ``ur.train`` (unsupervised loss F_x(z), the Lasso objective):

    1. the per-layer steps/thresholds only, at ``lr_scalar`` (they are log-parametrized, so this
       is a relative rate: SLISTA and ALISTA are fully trained here), both end to end and with
       the staged schedule over depths ``SCALAR_STAGES`` (each from the same start; the better
       on the validation set is kept: either alone sometimes stalls);
    2. every parameter (only for nets with matrices: LISTA, LISTA-CP), in the family's parameter
       groups of :mod:`unrolled.defaults` (steps/thresholds at 10 × ``lr_all``, matrices at ``lr_all``).

    After each run the steps of SLISTA / ALISTA are projected onto α ≤ 1/min_j g_jᵀd_j
    (:func:`project_steps`): unbounded, a few layers learned steps of 40–60/L at λ = 0.1 that
    fitted the training set and blew up on a few test inputs (test gap 4× ISTA's, and a
    different answer with another thread count).

    Model selection on the validation set: the analytic initialisation (= ISTA) is kept if
    training does not beat it.
    """
    from ..defaults import parameter_groups, recipe_for
    from ..staged import evaluate_layers, train_staged
    from ..training import train

    def val_obj():
        return evaluate_layers(net, Yval)["objective"][-1]

    best = (val_obj(), {k: v.clone() for k, v in net.state_dict().items()}, "init")
    scal = _scalar_params(net)
    phases = [("scalars", scal, lr_scalar, epochs_scalar)]
    if len(scal) < len(list(net.parameters())):
        phases.append(("all", parameter_groups(net, recipe_for(net)), lr_all, epochs_all))
    log = {}
    for name, params, lr, ep in phases:
        if not ep:
            continue
        t0 = time.perf_counter()
        start = {k: t.clone() for k, t in net.state_dict().items()}
        runs = ["e2e", "staged"] if name == "scalars" and SCALAR_STAGES else ["e2e"]
        for how in runs:
            net.load_state_dict(start)
            if how == "staged":
                # progressive depths (the staged schedule on the steps/thresholds): new layers, then all
                stages = [s for s in SCALAR_STAGES if s < net.depth] + [net.depth]
                e_new = max(1, ep // 5)
                train_staged(
                    net,
                    Ytr,
                    loss="unsupervised",
                    stages=stages,
                    epochs_new=e_new,
                    epochs_all=(max(1, e_new // 2),) * 2,
                    lr=lr,
                    refine_lrs=(1.0, 0.2),
                    val=Yval,
                    seed=seed,
                    batch_size=batch_size,
                    layer_params=lambda t: [q[t] for q in (net.a, net.b) if q is not None],
                )
            else:
                train(
                    net,
                    Ytr,
                    loss="unsupervised",
                    epochs=ep,
                    batch_size=batch_size,
                    lr=lr,
                    val=Yval,
                    seed=seed,
                    params=params,
                    progress=False,
                )
            project_steps(net)
            v = val_obj()
            log[f"{name}/{how}"] = {"epochs": ep, "lr": lr, "val_objective": v}
            if v < best[0]:
                best = (v, {k: t.clone() for k, t in net.state_dict().items()}, f"{name}/{how}")
        log[name] = {"seconds": round(time.perf_counter() - t0, 1)}
        net.load_state_dict(best[1])
    log["kept"] = best[2]
    return log


NET_NAMES = ("LISTA", "LISTA-CP", "ALISTA", "SLISTA")
SCALAR_STAGES = (2, 5, 10, 15)  # depths of the staged scalar phase (plus the full depth); () = end to end


def _make_net(name, D, depth, lam, **kw):
    from ..nets import ALISTA, LISTA, LISTA_CP, SLISTA

    cls = {"LISTA": LISTA, "LISTA-CP": LISTA_CP, "ALISTA": ALISTA, "SLISTA": SLISTA}[name]
    return cls(D, depth, lam, **kw)


def _lasso_comparison(D, Ytr, Yval, Yte, lams, depth, *, epochs_scalar, epochs_all, seeds, match_iters):
    """Train the four nets per λ, once per training seed in ``seeds`` (same data), and compare
    per-layer test gaps with ISTA/FISTA/OISTA. A net's ``gap`` is the mean over the seeds;
    ``gap_final`` lists each seed's gap at the last layer, with its mean and standard deviation."""
    import unrolled as ur

    from ..metrics import lasso_optimum
    from ..staged import evaluate_layers

    D64 = D.to(torch.float64)
    per_lam = {}
    for lam in lams:
        t_lam = time.perf_counter()
        _, F_star = lasso_optimum(ur.Lasso(ur.DenseOperator(D64), lam), Yte)
        ref = _reference_gaps(D64, Yte, lam, F_star, depth)
        long = _reference_gaps(D64, Yte, lam, F_star, match_iters, methods=("ista", "fista"))
        nets = {}
        for name in NET_NAMES:
            t0 = time.perf_counter()
            curves, logs, steps = [], [], []
            for seed in seeds:
                torch.manual_seed(seed)
                net = _make_net(name, D.to(torch.float32), depth, lam)
                logs.append(
                    _fit_unsupervised(
                        net, Ytr.float(), Yval.float(), epochs_scalar=epochs_scalar, epochs_all=epochs_all, seed=seed
                    )
                )
                curves.append(evaluate_layers(net, Yte, F_star=F_star)["gap"])
                steps.append((net.steps() * net.op.lipschitz).tolist())
            finals = [c[-1] for c in curves]
            g = max(float(np.mean(finals)), 0.0)
            nets[name] = {
                "gap": np.mean(curves, axis=0).tolist(),
                "gap_final": finals,
                "gap_final_mean": float(np.mean(finals)),
                "gap_final_std": float(np.std(finals)),
                "seeds": list(seeds),
                "train": logs,
                "seconds": round(time.perf_counter() - t0, 1),
                "steps_times_L": steps[0],
                "steps_times_L_per_seed": steps,
                "ista_iters_to_match": _first_below(long["ista"], g),
                "fista_iters_to_match": _first_below(long["fista"], g),
            }
        per_lam[str(lam)] = {
            "reference": ref,
            "nets": nets,
            "F_star_mean": float(F_star.mean()),
            "seconds": round(time.perf_counter() - t_lam, 1),
        }
    return per_lam


def _comparison_table(per_lam, depth, match_iters):
    rows = [
        [
            "lambda",
            "method",
            f"gap@{depth}",
            "std over seeds",
            "vs ISTA",
            "vs FISTA",
            "ISTA its to match",
            "FISTA its to match",
        ]
    ]
    for lam, r in per_lam.items():
        ista, fista = r["reference"]["ista"][depth], r["reference"]["fista"][depth]
        for m in ("ista", "fista", "oista"):
            g = r["reference"][m][depth]
            rows.append([lam, m.upper(), g, "", ista / max(g, 1e-300), fista / max(g, 1e-300), "", ""])
        for name, nr in r["nets"].items():
            g = max(nr["gap"][-1], 1e-16)  # a gap below F*'s own accuracy (≈1e-10 relative) reads as 1e-16
            fmt = lambda k: k if k is not None else f">{match_iters}"  # noqa: E731
            rows.append(
                [
                    lam,
                    name,
                    g,
                    nr["gap_final_std"],
                    ista / g,
                    fista / g,
                    fmt(nr["ista_iters_to_match"]),
                    fmt(nr["fista_iters_to_match"]),
                ]
            )
    return rows


def _comparison_figure(per_lam, depth, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(per_lam), figsize=(6 * len(per_lam), 4.2), squeeze=False)
    for ax, (lam, r) in zip(axes[0], per_lam.items()):
        ks = np.arange(0, depth + 1)
        for m, style in (("ista", "k--"), ("fista", "k:"), ("oista", "k-.")):
            ax.semilogy(ks, np.maximum(r["reference"][m], 1e-16), style, label=m.upper())
        for name, nr in r["nets"].items():
            ax.semilogy(np.arange(1, depth + 1), np.maximum(nr["gap"], 1e-16), "o-", ms=3, label=name)
        ax.set_xlabel("layers / iterations")
        ax.set_ylabel("F(z⁽ᵗ⁾) − F(z*)  (test mean)")
        ax.set_title(f"{title}, λ = {lam}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# -- moreau-simulated -----------------------------------------------------------------------------


@experiment(
    "moreau-simulated",
    paper=PAPER,
    what="test objective gap vs layers: ISTA/FISTA/OISTA vs LISTA, LISTA-CP, ALISTA, SLISTA (unsupervised), "
    "D 64×256 uniform on the sphere, x in the equiregularization set, λ ∈ {0.1, 0.8}",
)
def simulated(quick: bool, out: Path, seed: int = 0, seeds=None) -> dict:
    """``seeds``: the training seeds (same data for all); default ``seed`` alone for the quick run,
    ``seed, seed + 1, seed + 2`` for the full one, whose table reports the mean and its spread."""
    from ..data.lasso import equiregularization, sphere_dictionary

    seeds = tuple(seeds) if seeds is not None else ((seed,) if quick else (seed, seed + 1, seed + 2))
    t0 = time.perf_counter()
    depth = 8 if quick else 20
    n_train, n_test = (300, 200) if quick else (2000, 1000)
    D = torch.as_tensor(sphere_dictionary(64, 256, seed=seed))
    Ytr = torch.as_tensor(equiregularization(D, n_train, seed=seed + 1))
    Yval = torch.as_tensor(equiregularization(D, n_test // 2, seed=seed + 2))
    Yte = torch.as_tensor(equiregularization(D, n_test, seed=seed + 3))
    match_iters = 300 if quick else 3000
    per_lam = _lasso_comparison(
        D,
        Ytr,
        Yval,
        Yte,
        (0.1, 0.8),
        depth,
        epochs_scalar=10 if quick else 100,
        epochs_all=5 if quick else 60,
        seeds=seeds,
        match_iters=match_iters,
    )
    claims = {}  # ids: beats_ista10_and_fista.<net>.lam<λ> (mean gap at the last layer ≤ ISTA/10 and < FISTA)
    for lam, r in per_lam.items():
        ista, fista = r["reference"]["ista"][depth], r["reference"]["fista"][depth]
        for name in ("LISTA-CP", "ALISTA", "SLISTA"):
            g = r["nets"][name]["gap_final_mean"]
            claims[f"beats_ista10_and_fista.{name}.lam{lam}"] = bool(g <= ista / 10 and g < fista)
        s = r["nets"]["SLISTA"]["steps_times_L"]
        claims[f"slista_mean_step_gt_1_over_L.lam{lam}"] = bool(np.mean(s) > 1)
    results = {
        "depth": depth,
        "n_train": n_train,
        "n_test": n_test,
        "seeds": list(seeds),
        "per_lambda": per_lam,
        "claims": claims,
        "table": _comparison_table(per_lam, depth, match_iters),
    }
    fig = _comparison_figure(per_lam, depth, "simulated 64×256")
    return finish(out, "moreau-simulated", results, {"gap_vs_layers": fig}, started=t0)


# -- moreau-digits ------------------------------------------------------------------------------------


@experiment(
    "moreau-digits",
    paper=PAPER,
    what="the same comparison on 8×8 digits: atoms = 256 centred digit images, signals = other digits "
    "scaled into the equiregularization set, λ ∈ {0.1, 0.8}",
)
def digits(quick: bool, out: Path, seed: int = 0) -> dict:
    from ..data.images import digits_lasso_data

    t0 = time.perf_counter()
    depth = 8 if quick else 20
    n_train, n_val, n_test = (400, 100, 200) if quick else (1000, 241, 300)
    D, Yall, Yte = map(torch.as_tensor, digits_lasso_data(256, n_train + n_val, n_test, seed=seed))
    Ytr, Yval = Yall[:n_train], Yall[n_train:]
    match_iters = 300 if quick else 3000
    per_lam = _lasso_comparison(
        D,
        Ytr,
        Yval,
        Yte,
        (0.1, 0.8),
        depth,
        epochs_scalar=10 if quick else 100,
        epochs_all=5 if quick else 60,
        seeds=(seed,),
        match_iters=match_iters,
    )
    results = {
        "depth": depth,
        "n_train": n_train,
        "n_test": n_test,
        "per_lambda": per_lam,
        "table": _comparison_table(per_lam, depth, match_iters),
    }
    fig = _comparison_figure(per_lam, depth, "digits 64×256")
    return finish(out, "moreau-digits", results, {"gap_vs_layers": fig}, started=t0)


COUPLING = {"perturb": 0.2, "refine": False, "stages": lambda depth: None}


# -- moreau-coupling ------------------------------------------------------------------------------------


@experiment(
    "moreau-coupling",
    paper=PAPER,
    what="40-layer LISTA-CP (layer φ_θ(z,x) = ST(z − αWᵀ(Dz − x), λβ)) on 10×20, λ = 0.1, trained "
    "unsupervised layer by layer (nested) from a perturbed W: ‖(α/β)W⁽ᵗ⁾ − D‖/‖D‖ and α/β per layer",
)
def coupling(quick: bool, out: Path, seed: int = 0) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..data.lasso import equiregularization, sphere_dictionary
    from ..nets import LISTA_CP
    from ..staged import train_staged

    t0 = time.perf_counter()
    depth = 10 if quick else 40
    lam, perturb = 0.1, COUPLING["perturb"]
    D = torch.as_tensor(sphere_dictionary(10, 20, seed=seed))
    Ytr = torch.as_tensor(equiregularization(D, 500 if quick else 2000, seed=seed + 1)).float()
    Yval = torch.as_tensor(equiregularization(D, 500, seed=seed + 2)).float()
    net = LISTA_CP(D.float(), depth, lam)
    g = torch.Generator().manual_seed(seed + 5)
    with torch.no_grad():  # start away from the coupled point: W = D + noise (relative RMS `perturb`)
        for p in net.W:
            p.add_(perturb * torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype))

    def distances():
        Dm = net.operator.to(torch.float64)
        d, r = [], []
        for t in range(depth):
            ratio = float((net._alpha(t) / net._beta(t)).detach())
            W = net.layer_matrix(t).to(torch.float64)
            d.append(float((ratio * W - Dm).norm() / Dm.norm()))
            r.append(ratio)
        return d, r

    d0, _ = distances()
    records = train_staged(
        net,
        Ytr,
        loss="unsupervised",
        epochs_new=15 if quick else 40,
        lr=1e-2,
        val=Yval,
        batch_size=200,
        seed=seed,
        refine=COUPLING["refine"],
        epochs_all=(5, 5) if quick else (10, 10),
        stages=COUPLING["stages"](depth),
    )
    dist, ratio = distances()
    half = depth // 2
    first, last = float(np.mean(dist[:half])), float(np.mean(dist[half:]))
    rho = float(np.corrcoef(np.arange(depth), dist)[0, 1])
    claims = {
        "distance_decreases": bool(last < first),  # mean of the last half < mean of the first half
        "distance_depth_corr_negative": bool(rho < 0),
    }
    rows = [["layer", "‖(α/β)W − D‖/‖D‖ (init)", "‖(α/β)W − D‖/‖D‖ (trained)", "α/β"]]
    for t in range(depth):
        rows.append([t + 1, d0[t], dist[t], ratio[t]])
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    ax[0].semilogy(np.arange(1, depth + 1), d0, "k--", label="initial (perturbed)")
    ax[0].semilogy(np.arange(1, depth + 1), dist, "o-", ms=3, label="trained (nested, layer-wise)")
    ax[0].set_xlabel("layer t")
    ax[0].set_ylabel("‖(α/β)W⁽ᵗ⁾ − D‖_F / ‖D‖_F")
    ax[0].legend()
    ax[0].grid(True, which="both", alpha=0.3)
    ax[1].plot(np.arange(1, depth + 1), ratio, "o-", ms=3)
    ax[1].set_xlabel("layer t")
    ax[1].set_ylabel("α⁽ᵗ⁾ / β⁽ᵗ⁾")
    ax[1].grid(True, alpha=0.3)
    fig.suptitle(f"LISTA-CP, {depth} layers, D 10×20, λ = {lam}")
    fig.tight_layout()
    results = {
        "depth": depth,
        "lam": lam,
        "perturbation": perturb,
        "distance_init": d0,
        "distance": dist,
        "alpha_over_beta": ratio,
        "mean_distance_first_half": first,
        "mean_distance_last_half": last,
        "corr_distance_depth": rho,
        "claims": claims,
        "final_val_objective": records[-1]["histories"][-1]["best_loss"],
        "table": rows,
    }
    return finish(out, "moreau-coupling", results, {"coupling": fig}, started=t0)


# -- moreau-marchenko-pastur ----------------------------------------------------------------------


def mp_ratio(zeta: float, gamma: float) -> float:
    """lim L_S/L = ((1 + √(ζγ))/(1 + √γ))² for D ∈ R^{n×m} Gaussian, γ = m/n, ζ = |S|/m
    (Moreau talk, "Acceleration quantification with Marchenko-Pastur", eq. 1)."""
    return ((1 + math.sqrt(zeta * gamma)) / (1 + math.sqrt(gamma))) ** 2


@experiment(
    "moreau-marchenko-pastur",
    paper=PAPER,
    what="L_S/L on Gaussian D against ((1+√(ζγ))/(1+√γ))² over ζ, γ, n; SLISTA's learned steps against the "
    "distribution of 1/L_S over the supports of the Lasso solutions",
)
def marchenko_pastur(quick: bool, out: Path, seed: int = 0) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import unrolled as ur

    from ..algorithms.lasso import support_lipschitz
    from ..data.lasso import equiregularization, sphere_dictionary
    from ..metrics import lasso_optimum
    from ..nets import SLISTA

    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    ns = (64, 256) if quick else (64, 128, 256, 512, 1024)
    gammas = (2.0, 4.0)
    zetas = (0.05, 0.1, 0.2, 0.5)
    draws = 3 if quick else 8

    def top_eig(M):  # ‖M‖₂² as the top eigenvalue of the smaller Gram matrix
        G = M @ M.T if M.shape[0] <= M.shape[1] else M.T @ M
        return float(torch.linalg.eigvalsh(G)[-1])

    rows = [["n", "gamma", "zeta", "L_S/L measured", "formula", "rel. error"]]
    mp = []
    for n in ns:
        for gamma in gammas:
            m = int(gamma * n)
            vals = {z: [] for z in zetas}
            for _ in range(draws):
                D = torch.randn(n, m, generator=gen, dtype=torch.float64)
                L = top_eig(D)
                for zeta in zetas:
                    S = torch.randperm(m, generator=gen)[: max(1, int(round(zeta * m)))]
                    vals[zeta].append(top_eig(D[:, S]) / L)
            for zeta in zetas:
                meas, form = float(np.mean(vals[zeta])), mp_ratio(zeta, gamma)
                mp.append(
                    {
                        "n": n,
                        "gamma": gamma,
                        "zeta": zeta,
                        "measured": meas,
                        "formula": form,
                        "rel_error": abs(meas - form) / form,
                    }
                )
                rows.append([n, gamma, zeta, meas, form, abs(meas - form) / form])
    big = [r["rel_error"] for r in mp if r["n"] >= 256]
    claims = {"mp_within_5pct": bool(max(big) <= 0.05)}  # L_S/L within 5 % of the formula for n ≥ 256

    # SLISTA's learned steps vs 1/L_S on the supports of the Lasso solutions
    depth = 8 if quick else 20
    lam = 0.1
    D = torch.as_tensor(sphere_dictionary(64, 256, seed=seed))
    Ytr = torch.as_tensor(equiregularization(D, 400 if quick else 2000, seed=seed + 1))
    Yval = torch.as_tensor(equiregularization(D, 200 if quick else 500, seed=seed + 2))
    Yte = torch.as_tensor(equiregularization(D, 200 if quick else 1000, seed=seed + 3))
    net = SLISTA(D.float(), depth, lam)
    log = _fit_unsupervised(net, Ytr.float(), Yval.float(), epochs_scalar=10 if quick else 100, epochs_all=0, seed=seed)
    L = ur.DenseOperator(D).lipschitz
    steps_L = (net.steps().double() * L).numpy()
    Zs, _ = lasso_optimum(ur.Lasso(ur.DenseOperator(D), lam), Yte)
    LS = support_lipschitz(D, Zs != 0)
    inv = (L / LS[LS > 0]).numpy()  # (1/L_S) in units of 1/L
    # the supports met along the way: those of the trained net's own iterates
    with torch.no_grad():
        outs = net(Yte.float(), return_all=True)
    inv_layer = []
    for Z in outs:
        ls = support_lipschitz(D, Z.double() != 0)
        ls = ls[ls > 0]
        inv_layer.append(float(torch.median(L / ls)) if ls.numel() else float("nan"))
    q = np.quantile(inv, [0.05, 0.25, 0.5, 0.75, 0.95]).tolist()
    med_step = float(np.median(steps_L))
    ok = np.isfinite(inv_layer)
    corr = float(np.corrcoef(steps_L[ok], np.asarray(inv_layer)[ok])[0, 1]) if ok.sum() > 2 else float("nan")
    claims.update(
        {
            "slista_mean_step_gt_1_over_L": bool(steps_L.mean() > 1),
            # median step within a factor 2 of the median 1/L_S on supp(z*)
            "slista_median_step_near_1_over_LS": bool(q[2] / 2 <= med_step <= 2 * q[2]),
            # steps correlate positively with 1/L_S of the layers' own supports
            "slista_steps_track_1_over_LS": bool(corr > 0),
        }
    )
    rows += [["", "", "", "", "", ""], ["SLISTA layer", "step × L", "median L/L_S of its iterates", "", "", ""]]
    rows += [[t + 1, float(steps_L[t]), inv_layer[t], "", "", ""] for t in range(depth)]
    rows.append(["1/L_S (z*) quantiles 5/25/50/75/95 %", *[round(v, 3) for v in q]])
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for gamma in gammas:
        for n in ns:
            pts = [r for r in mp if r["gamma"] == gamma and r["n"] == n]
            ax[0].plot([r["zeta"] for r in pts], [r["measured"] for r in pts], "o", ms=4, label=f"n={n}, γ={gamma}")
        zz = np.linspace(0.01, 0.6, 100)
        ax[0].plot(zz, [mp_ratio(z, gamma) for z in zz], "k-", lw=1)
    ax[0].set_xlabel("ζ = |S|/m")
    ax[0].set_ylabel("L_S / L")
    ax[0].legend(fontsize=7)
    ax[0].set_title("Marchenko–Pastur limit (lines) vs measured")
    ax[1].hist(inv, bins=40, density=True, alpha=0.5, label="1/L_S on supp(z*) (×L)")
    ax[1].plot(
        steps_L, np.linspace(0, ax[1].get_ylim()[1] * 0.9, depth), "ro", ms=4, label="SLISTA steps (×L), layer ↑"
    )
    ax[1].axvline(1.0, color="k", ls="--", label="1/L")
    ax[1].set_xlabel("step × L")
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    results = {
        "mp": mp,
        "max_rel_error_n_ge_256": max(big),
        "slista_steps_times_L": steps_L.tolist(),
        "median_step_times_L": med_step,
        "corr_step_vs_iterate_inv_LS": corr,
        "inv_LS_quantiles_times_L": q,
        "median_inv_LS_of_iterates": inv_layer,
        "slista_train": log,
        "claims": claims,
        "table": rows,
    }
    return finish(out, "moreau-marchenko-pastur", results, {"marchenko_pastur": fig}, started=t0)
