"""certified-inference (issue #13): the certificate of a trained network's answers in and out of its
training distribution, and the cost of refining them to a certified solution.

Two networks: LAPGD-3 in xie2019's setting (A ∈ R^{10×20} U[0, 1], 1–3 non-zeros U[0, 100], trained
supervised with :func:`unrolled.experiments.xie2019.train_net`) and SLISTA-10 in the Moreau talk's
setting (D ∈ R^{64×256} on the sphere, λ = 0.1, signals on the equiregularization set, trained
unsupervised). Each is applied to its own test distribution and to three shifted ones (another
sparsity, another noise level, another operator scale); :func:`unrolled.certified.certify` gives the
histograms, :func:`unrolled.refine` the refinement cost to a relative certificate of 1e-6.
:func:`bench_refine` is the ``certified`` set of ``unrolled bench``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from . import experiment, finish, threads

TOL = 1e-6
LAM = 0.1
RECIPES = {  # training budgets: full ~ minutes on one core, bench ~ 1 min, quick ~ 15 s
    "full": {
        "xie_train": 10_000,
        "xie_epochs": 200,
        "xie_warm": 20,
        "lasso_train": 4000,
        "lasso_epochs": 100,
        "n_test": 2000,
    },
    "bench": {
        "xie_train": 5000,
        "xie_epochs": 100,
        "xie_warm": 10,
        "lasso_train": 2000,
        "lasso_epochs": 40,
        "n_test": 2000,
    },
    "quick": {
        "xie_train": 2000,
        "xie_epochs": 30,
        "xie_warm": 5,
        "lasso_train": 500,
        "lasso_epochs": 10,
        "n_test": 300,
    },
}


def trained_lapgd(recipe: dict, seed: int = 0):
    """(LAPGD-3 trained as in xie2019 (paper init, curriculum), A (10, 20)); in float64, so that its problem
    (``net.problem``, which ``refine`` certifies) is the data's own, not that of a rounded A."""
    from ..data import sparse_nonnegative
    from ..nets import LAPGD
    from .xie2019 import GAMMA, train_net

    A, Y, X = sparse_nonnegative(recipe["xie_train"], seed=seed)
    net = LAPGD(A, 3, init="paper", gamma=GAMMA, seed=seed)
    train_net(
        net, (Y, X), {"warm_epochs": recipe["xie_warm"], "batch_size": 500, "lr": 1e-2}, recipe["xie_epochs"], seed
    )
    return net, A


def trained_slista(recipe: dict, seed: int = 0):
    """(SLISTA-10 trained unsupervised (its steps and thresholds, the Lasso objective), D (64, 256)), float64."""
    from ..data import equiregularization, sphere_dictionary
    from ..nets import SLISTA
    from ..training import train

    D = sphere_dictionary(64, 256, seed=seed)
    Y = equiregularization(D, recipe["lasso_train"], seed=seed + 1)
    net = SLISTA(D, 10, LAM)
    cut = len(Y) * 4 // 5
    train(
        net,
        Y[:cut],
        loss="unsupervised",
        epochs=recipe["lasso_epochs"],
        batch_size=100,
        lr=0.05,
        val=Y[cut:],
        seed=seed,
        progress=False,
    )
    return net, D


def _noisy(Y, snr_db: float, rng):
    noise = rng.standard_normal(Y.shape)
    return Y + noise * np.sqrt((Y**2).mean() / 10 ** (snr_db / 10))


def xie_sets(A, n: int, seed: int) -> dict:
    """The xie2019 test distribution and its shifts (measurements y, rows)."""
    from ..data import sparse_nonnegative

    rng = np.random.default_rng(seed + 77)
    Y = sparse_nonnegative(n, A=A, seed=seed + 10_000)[1]
    return {
        "in distribution": Y,
        "sparsity 6–8": sparse_nonnegative(n, A=A, sparsities=(6, 7, 8), seed=seed + 20_000)[1],
        "noise 20 dB": _noisy(Y, 20.0, rng),
        "operator ×10": 10.0 * Y,
    }


def moreau_sets(D, n: int, seed: int) -> dict:
    """The Moreau-talk test distribution (equiregularization set, λ_max = 1) and its shifts."""
    from ..data import equiregularization, sparse_measurements
    from ..data.lasso import scale_to_equiregularization

    rng = np.random.default_rng(seed + 77)
    Y = equiregularization(D, n, seed=seed + 3)
    sparse = sparse_measurements(D, n, p=0.02, seed=seed + 4)[0]
    sparse = scale_to_equiregularization(D, sparse[np.abs(sparse).sum(1) > 0])  # (codes with no atom dropped)
    return {
        "in distribution": Y,
        "sparse codes (~5 of 256)": sparse,
        "noise 0 dB": scale_to_equiregularization(D, _noisy(Y, 0.0, rng)),
        "operator ×3": 3.0 * Y,
    }


def refinement_cost(net, Y, tol: float = TOL):
    """(time (network included) and work of ``ur.refine`` to ``tol``, where rows were certified; the Result)."""
    from ..certified import refine

    t0 = time.perf_counter()
    res = refine(net, Y, tol=tol)
    seconds = time.perf_counter() - t0
    its = np.asarray(res.n_iter)
    cost = {
        "seconds": seconds,
        "certified": float(np.mean(res.converged)),
        "by_net": float(np.mean(its == 0)),
        "by_support": float(np.mean(its == 1)),
        "mean_iterations": float(its.mean()),
    }
    return cost, res


DETECTED = 10.0  # a shift counts as detected when the median certificate is at least this many times worse


def _study(net, sets: dict) -> dict:
    """Per test set: the net's certificates, their median and worst, the refinement cost, and the net's
    objective excess over the certified optimum that ``refine`` reaches, (f(x_net) − f*)/½‖y‖²."""
    out = {}
    for name, Y in sets.items():
        got = net.certify(Y)
        cost, res = refinement_cost(net, Y)
        excess = (np.asarray(got.objective) - np.asarray(res.objective)) / (0.5 * (np.asarray(Y) ** 2).sum(1))
        cert = np.asarray(got.certificate)
        out[name] = {
            "certificates": cert,
            "median": float(np.median(cert)),
            "worst": float(cert.max()),
            "median_excess": float(np.median(excess)),
            "refine": cost,
        }
    base = out["in distribution"]
    for r in out.values():
        r["median_vs_in_distribution"] = r["median"] / base["median"]
        r["excess_vs_in_distribution"] = r["median_excess"] / base["median_excess"]
        r["detected"] = bool(r["median_vs_in_distribution"] >= DETECTED)
    return out


def _histogram(ax, study: dict, title: str) -> None:
    allc = np.concatenate([r["certificates"] for r in study.values()])
    bins = np.logspace(np.log10(max(allc.min(), 1e-16)), np.log10(max(allc.max(), 1e-15)), 40)
    for (name, r), style in zip(study.items(), ("-", "--", ":", "-.")):  # (coinciding sets stay visible)
        ax.hist(
            np.maximum(r["certificates"], bins[0]),
            bins=bins,
            histtype="step",
            lw=1.5,
            ls=style,
            label=f"{name} (median {r['median']:.2g})",
        )
    ax.set_xscale("log")
    ax.set_xlabel("certificate of the network's answer")
    ax.set_ylabel("problems")
    ax.set_title(title)
    ax.legend(fontsize=7)


def _table(studies: dict) -> list:
    header = ["net", "test set", "median cert", "worst cert", "× in-dist", "detected", "median excess", "× in-dist"]
    rows = [header + ["refine s", "certified", "by net", "by support", "mean its"]]
    for net_name, study in studies.items():
        for name, r in study.items():
            f = r["refine"]
            rows.append(
                [
                    net_name,
                    name,
                    r["median"],
                    r["worst"],
                    r["median_vs_in_distribution"],
                    "yes" if r["detected"] else "no",
                    r["median_excess"],
                    r["excess_vs_in_distribution"],
                    f["seconds"],
                    f["certified"],
                    f["by_net"],
                    f["by_support"],
                    f["mean_iterations"],
                ]
            )
    return rows


@experiment(
    "certified-inference",
    paper="issue #13 (xie2019 and Moreau settings)",
    what="certificates of LAPGD-3 (xie 10×20) and SLISTA-10 (Moreau 64×256) in distribution and on shifted "
    "sets (sparsity, noise, operator scale), histograms, and the cost of refining to 1e-6",
)
def run(quick: bool, out: Path, seed: int = 0) -> dict:
    import matplotlib.pyplot as plt

    t0 = time.perf_counter()
    recipe = RECIPES["quick" if quick else "full"]
    with threads(1):
        lapgd, A = trained_lapgd(recipe, seed)
        slista, D = trained_slista(recipe, seed)
        studies = {
            "LAPGD-3": _study(lapgd, xie_sets(A, recipe["n_test"], seed)),
            "SLISTA-10": _study(slista, moreau_sets(D, recipe["n_test"], seed)),
        }
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    _histogram(axes[0], studies["LAPGD-3"], "LAPGD-3, xie2019 10×20 (relative KKT residual)")
    _histogram(axes[1], studies["SLISTA-10"], "SLISTA-10, 64×256 λ = 0.1 (relative duality gap)")
    table = _table(studies)
    for study in studies.values():
        for r in study.values():
            del r["certificates"]
    return finish(
        out,
        "certified-inference",
        {"recipe": recipe, "tol": TOL, "studies": studies, "table": table},
        {"certificates": fig},
        started=t0,
    )


# -- the ``certified`` set of ``unrolled bench`` -------------------------------------------------


def _cold_routes(kind: str, A, Y):
    """The classical routes to TOL from zero: ours (name → call) and the SciPy / scikit-learn loop."""
    from ..solvers import lasso, nnls

    if kind == "nnls":
        return {
            "active-set (cold)": lambda: nnls(A, Y, "active-set", tol=TOL),
            "apgd (cold)": lambda: nnls(A, Y, "apgd", momentum="nesterov", restart=True, tol=TOL),
        }
    return {"fista restart+polish (cold)": lambda: lasso(A, Y, LAM, "fista", restart=True, polish=True, tol=TOL)}


def _reference(kind: str, A, Y):
    """SciPy ``nnls`` / scikit-learn ``Lasso`` looped per problem (tight tolerance), answers (rows, n)."""
    if kind == "nnls":
        from ..bench import _scipy_nnls_loop

        return "scipy nnls (loop)", lambda: _scipy_nnls_loop(A, Y)
    from sklearn.linear_model import Lasso as SkLasso

    sk = SkLasso(alpha=LAM / A.shape[0], fit_intercept=False, tol=1e-10, max_iter=100_000)
    return "sklearn Lasso (loop)", lambda: np.array([sk.fit(A, y).coef_ for y in Y])


def _worst_certificate(problem, X, Y) -> float:
    return float(problem.certificate(torch.as_tensor(np.asarray(X, dtype=np.float64)), torch.as_tensor(Y)).max())


def _bench_setting(label: str, kind: str, net, A, Y, repeat: int, n_ref: int):
    from ..bench import _best, _row
    from ..certified import float64_problem, refine

    problem = float64_problem(net)
    N = len(Y)
    timed = {name: _best(fn, repeat) for name, fn in _cold_routes(kind, A, Y).items()}
    t_net, res = _best(lambda: refine(net, Y, tol=TOL), repeat)
    _reference(kind, A, Y[:1])[1]()  # a first call imports SciPy / scikit-learn: not timed
    ref_name, ref_fn = _reference(kind, A, Y[:n_ref])
    t_ref, X_ref = _best(ref_fn, repeat)
    fastest = min(t for t, _ in timed.values())
    fast_us = fastest / N * 1e6
    rows = [
        _row(f"{label}: {name}", N, t, _worst_certificate(problem, r.x, Y), fast_us) for name, (t, r) in timed.items()
    ]
    rows.append(
        _row(
            f"{label}: {type(net).__name__}-{net.depth} + refine",
            N,
            t_net,
            _worst_certificate(problem, res.x, Y),
            fast_us,
        )
    )
    rows.append(_row(f"{label}: {ref_name}", n_ref, t_ref, _worst_certificate(problem, X_ref, Y[:n_ref]), fast_us))
    return rows, t_net / fastest, (t_net / N) / (t_ref / n_ref)


def bench_refine(quick: bool = False, repeat: int = 3, seed: int = 0) -> tuple[list[dict], str]:
    """Time to a relative certificate of 1e-6 on every problem: a trained network refined by
    :func:`unrolled.refine` (network time included) against the cold routes and SciPy / scikit-learn.

    Returns
    -------
    (rows, note)
        Rows for :func:`unrolled.bench.print_table` (accuracy: the worst certificate; speed-up: the
        fastest cold route's time per problem over the row's) and a note with the refine/cold ratios.
    """
    from ..data import equiregularization

    recipe = RECIPES["quick" if quick else "bench"]
    N, n_ref = (200, 50) if quick else (recipe["n_test"], 200)
    lapgd, A = trained_lapgd(recipe, seed)
    slista, D = trained_slista(recipe, seed)
    Y_nnls = xie_sets(A, N, seed)["in distribution"]
    Y_lasso = equiregularization(D, N, seed=seed + 3)
    rows, ratios = [], []
    for label, kind, net, op, Y in (("10x20", "nnls", lapgd, A, Y_nnls), ("64x256", "lasso", slista, D, Y_lasso)):
        r, ratio, vs_ref = _bench_setting(label, kind, net, op, Y, repeat, n_ref)
        rows += r
        reference = r[-1]["method"].split(": ")[1]
        ratios.append(f"{label} refine/fastest cold = {ratio:.2f}, refine/{reference} = {vs_ref:.3f}")
    return rows, (
        "accuracy: worst certificate (tol 1e-6); speed-up vs the fastest cold route; nets trained in this "
        "run (" + "; ".join(ratios) + ")"
    )
