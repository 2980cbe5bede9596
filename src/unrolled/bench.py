"""``unrolled bench``: our batched solvers against SciPy / scikit-learn (/ celer), same run.

Three problem sets, each timed on the same problems for every method:

* ``nnls-10x20``    xie2019 §4: A ∈ R^{10×20} i.i.d. U[0, 1]; x with 1–3 non-zeros U[0, 100];
                    y = Ax. Reference: ``scipy.optimize.nnls`` looped per problem.
                    Accuracy: max over problems of (f(x) − f(x_ref)) / ½‖y‖² (objective excess).
* ``nnls-400x1200`` sen2024 §4: F ∈ R^{400×1200} i.i.d. N(0, 1); s = max(N(0, 1), 0); x = Fs.
                    The solution is not unique (n > 2m): accuracy is the relative residual
                    max ‖Fs − x‖/‖x‖ (target 1e-4). Reference: SciPy ``nnls`` looped.
* ``lasso-64x256``  Moreau talk: D ∈ R^{64×256} with columns uniform on the sphere, λ = 0.1,
                    y = x̃/‖Dᵀx̃‖∞, x̃ ~ N(0, I) (equiregularization set: λ_max = 1).
                    Accuracy: max relative sub-optimality (F − F*)/F*, F* from our FISTA
                    polished to a certified relative duality gap ≤ 1e-12. References:
                    scikit-learn ``Lasso.fit`` looped and multi-target, and celer if installed
                    (``pip install unrolled[bench]``), each with its duality-gap tolerance set so
                    that gap ≤ 1e-6·F* per problem (same accuracy as our certificate).

* ``memory``        peak RSS of ``ur.nnls(A, Y)`` (default arguments) on 200000 xie2019
                    problems, measured in a subprocess (target < 1 GiB).

Each set also times the default route (``ur.nnls(A, Y)`` / ``ur.lasso(D, Y, λ)`` without a
method). Problems come from the generators of :mod:`unrolled.data`.
Slow references run on a subset (``ref`` problems); speed-ups compare time per problem.
The "matmul" column is the fraction of torch's measured matmul rate (same dtype and GEMM
shapes, measured in the same run) that one batched iteration on the full batch reaches.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings

import numpy as np
import torch

from .algorithms.lasso import FISTA
from .algorithms.nnls import APGD
from .data import equiregularized_signals, gaussian_nonnegative, sparse_nonnegative
from .operators import DenseOperator
from .problems import NNLS, Lasso
from .solvers import lasso as ur_lasso
from .solvers import nnls as ur_nnls

HEADER = ["method", "problems", "seconds", "µs/problem", "accuracy", "speed-up", "matmul"]


# -- measurement helpers ------------------------------------------------------
def _best(fn, repeat: int):
    """(best wall time over ``repeat`` runs, result of the last run)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def matmul_rate(shapes, dtype, repeat: int = 5) -> float:
    """torch GFLOP/s for the chain of GEMMs ``shapes`` = [(M, K, N), ...], best of ``repeat``."""
    mats = [(torch.randn(M, K, dtype=dtype), torch.randn(K, N, dtype=dtype)) for M, K, N in shapes]
    flops = sum(2.0 * M * K * N for M, K, N in shapes)

    def run():
        for a, b in mats:
            torch.mm(a, b)

    run()
    t, _ = _best(run, repeat)
    return flops / t / 1e9


def step_rate(method, Y, flops: float, steps: int = 20, repeat: int = 3) -> float:
    """GFLOP/s of ``method.step`` on the full batch (``flops`` per step, no rows dropped)."""
    with torch.no_grad():
        state = method.init(Y, None)
        method.step(state, 1)

        def run():
            for k in range(steps):
                method.step(state, k + 2)

        t, _ = _best(run, repeat)
    return flops * steps / t / 1e9


def gemm_shapes(op: DenseOperator, B: int):
    """The GEMMs of one gradient step, as GradientStep does it: one (n × n) or two (n × m)."""
    m, n = op.shape
    return [(B, n, n)] if n <= 2 * m else [(B, n, m), (B, m, n)]


def _row(name, problems, seconds, accuracy, ref_us=None, frac=None):
    us = seconds / problems * 1e6
    return {
        "method": name,
        "problems": int(problems),
        "seconds": float(seconds),
        "us_per_problem": float(us),
        "accuracy": float(accuracy),
        "speedup": None if ref_us is None else float(ref_us / us),
        "matmul_fraction": None if frac is None else float(frac),
    }


def print_table(title: str, rows: list[dict], note: str = "") -> None:
    print(f"\n== {title}")
    if note:
        print(f"   {note}")
    cells = [HEADER] + [
        [
            r["method"],
            str(r["problems"]),
            f"{r['seconds']:.3f}",
            f"{r['us_per_problem']:.1f}",
            f"{r['accuracy']:.1e}",
            "—" if r["speedup"] is None else f"{r['speedup']:.1f}×",
            "—" if r["matmul_fraction"] is None else f"{100 * r['matmul_fraction']:.0f}%",
        ]
        for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    for i, c in enumerate(cells):
        print("   " + "  ".join(s.ljust(w) if j == 0 else s.rjust(w) for j, (s, w) in enumerate(zip(c, widths))))
        if i == 0:
            print("   " + "  ".join("-" * w for w in widths))


# -- problem sets ------------------------------------------------------------
def xie_problems(N: int, seed: int = 0):
    """xie2019 §4 (``unrolled.data.sparse_nonnegative``): A ∈ R^{10×20} U[0,1]; 1–3 non-zeros U[0,100]; y = Ax."""
    A, Y, _ = sparse_nonnegative(N, seed=seed)
    return np.asarray(A), np.asarray(Y)


def sen_problems(N: int, seed: int = 0):
    """sen2024 §4 (``unrolled.data.gaussian_nonnegative``): F ∈ R^{400×1200} N(0,1); s = max(N(0,1), 0); x = Fs."""
    F, Y, _ = gaussian_nonnegative(N, seed=seed)
    return np.asarray(F), np.asarray(Y)


def lasso_problems(N: int, seed: int = 0):
    """Moreau talk (``unrolled.data.equiregularized_signals``): D ∈ R^{64×256} with columns on the
    sphere; y on the equiregularization set (λ_max = 1)."""
    D, Y, _ = equiregularized_signals(N, seed=seed)
    return np.asarray(D), np.asarray(Y)


MEMORY_SCRIPT = """
import resource, sys
import numpy as np
import unrolled as ur
from unrolled.data import sparse_nonnegative
A, Y, _ = sparse_nonnegative(int(sys.argv[1]), seed=0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
res = ur.nnls(A, Y)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(before, after, int(np.asarray(res.converged).sum()))
"""


def bench_memory(N: int) -> dict:
    """Peak RSS of ``ur.nnls(A, Y)`` with default arguments on N xie2019 problems (10×20), in a
    fresh subprocess (one torch thread): the data alone, and after solving."""
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(N)], capture_output=True, text=True, env=env, check=True
    ).stdout.split()
    before, after, conv = (int(v) for v in out[-3:])
    return {"problems": N, "peak_rss_mib_data": before / 1024, "peak_rss_mib": after / 1024, "converged": conv}


def bench_solve_memory(N: int) -> dict:
    """Peak RSS of ``unrolled solve --method active-set`` on N xie2019 problems (10×20) written to a
    .npy file, in a fresh subprocess (one thread): the CLI reads the input memory-mapped and
    solves and writes it chunk by chunk, so the peak is bounded by the chunk, not by N."""
    import subprocess
    import sys
    import tempfile

    A, Y = xie_problems(N)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory() as tmp:
        np.save(os.path.join(tmp, "A.npy"), A)
        np.save(os.path.join(tmp, "Y.npy"), Y)
        del Y
        args = ["solve", "--method", "active-set", "--operator", "A.npy", "--input", "Y.npy", "--output", "X.npy"]
        code = (
            "import resource, sys; from unrolled.cli import main; rc = main(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, *args], cwd=tmp, env=env, check=True, capture_output=True, text=True
        ).stdout.split()
        written = np.load(os.path.join(tmp, "X.npy"), mmap_mode="r").shape[0]
    peak_kib = int(out[-1])
    return {"problems": N, "solved": written, "peak_rss_mib": peak_kib / 1024}


def _nnls_obj(A, X, Y):
    return 0.5 * ((X @ A.T - Y) ** 2).sum(1)


def _scipy_nnls_loop(A, Y):
    from scipy.optimize import nnls

    out = np.empty((Y.shape[0], A.shape[1]))
    for i, y in enumerate(Y):
        try:
            out[i] = nnls(A, y)[0]
        except RuntimeError:  # 3n iterations were not enough
            out[i] = nnls(A, y, maxiter=50 * A.shape[1])[0]
    return out


def bench_xie(N: int, repeat: int, quick: bool = False) -> tuple[list[dict], str]:
    A, Y = xie_problems(N)
    t_ref, X_ref = _best(lambda: _scipy_nnls_loop(A, Y), repeat)
    f_ref, scale = _nnls_obj(A, X_ref, Y), 0.5 * (Y**2).sum(1)
    ref_us = t_ref / N * 1e6
    rows = [_row("scipy nnls (loop)", N, t_ref, 0.0)]
    At, Yt = torch.from_numpy(A), torch.from_numpy(Y)
    op = DenseOperator(At)
    runs = [
        ("default ur.nnls(A, Y)", lambda: ur_nnls(At, Yt), None),
        ("active-set f64 (exact)", lambda: ur_nnls(At, Yt, "active-set", tol=1e-12, max_iter=10 * A.shape[1]), None),
        (
            "apgd f64 (restart, kkt 1e-6)",
            lambda: ur_nnls(At, Yt, "apgd", momentum="nesterov", restart=True, tol=1e-6, max_iter=20_000),
            APGD(NNLS(op), momentum="nesterov", restart=True),
        ),
    ]
    for name, fn, method in runs[:2] if quick else runs:  # APGD needs ~10⁴ iterations here
        t, res = _best(fn, repeat)
        X = res.x.numpy()
        acc = float(np.max((_nnls_obj(A, X, Y) - f_ref) / scale))
        frac = None
        if method is not None:
            shapes = gemm_shapes(op, N)
            flops = sum(2.0 * M * K * Nn for M, K, Nn in shapes)
            frac = step_rate(method, Yt, flops) / matmul_rate(shapes, torch.float64)
        rows.append(_row(name, N, t, acc, ref_us, frac))
    return rows, "accuracy: max (f − f_scipy)/½‖y‖² (objective excess)"


# the relative KKT residual (column-normalised, relative to ‖y‖) at which the sen2024 rows reach
# the accuracy target, relative residual ≤ 1e-4 (measured: 1e-5 gives 1.3e-4, 3e-6 gives 4e-5)
SEN_TOL = 3e-6


def bench_sen(N: int, n_ref: int, repeat: int) -> tuple[list[dict], str]:
    F, Y = sen_problems(N)
    n_ref = min(n_ref, N)
    t_ref, X_ref = _best(lambda: _scipy_nnls_loop(F, Y[:n_ref]), 1)
    ref_us = t_ref / n_ref * 1e6

    def relres(X, Yb):
        return float(np.max(np.linalg.norm(X @ F.T - Yb, axis=1) / np.linalg.norm(Yb, axis=1)))

    rows = [_row("scipy nnls (loop)", n_ref, t_ref, relres(X_ref, Y[:n_ref]))]
    Ft, Yt = torch.from_numpy(F), torch.from_numpy(Y)
    t, res = _best(lambda: ur_nnls(Ft, Yt, tol=SEN_TOL, max_iter=20_000), repeat)
    rows.append(_row(f"default ur.nnls(F, Y, tol={SEN_TOL:g})", N, t, relres(res.x.numpy(), Y), ref_us))
    for dtype, name in [
        (torch.float64, f"apgd f64 (restart, kkt {SEN_TOL:g})"),
        (torch.float32, f"apgd f32 (restart, kkt {SEN_TOL:g})"),
    ]:
        Ft, Yt = torch.from_numpy(F).to(dtype), torch.from_numpy(Y).to(dtype)
        op = DenseOperator(Ft)
        t, res = _best(
            lambda Ft=Ft, Yt=Yt: ur_nnls(
                Ft, Yt, "apgd", momentum="nesterov", restart=True, tol=SEN_TOL, max_iter=20_000
            ),
            repeat,
        )
        shapes = gemm_shapes(op, N)
        flops = sum(2.0 * M * K * Nn for M, K, Nn in shapes)
        frac = step_rate(APGD(NNLS(op), momentum="nesterov", restart=True), Yt, flops, steps=5) / matmul_rate(
            shapes, dtype
        )
        rows.append(_row(name, N, t, relres(res.x.double().numpy(), Y), ref_us, frac))
    return rows, f"accuracy: max relative residual ‖Fs − x‖/‖x‖ (target 1e-4); SciPy on the first {n_ref} problems"


def _lasso_obj(D, Z, Y, lam):
    return 0.5 * ((Z @ D.T - Y) ** 2).sum(1) + lam * np.abs(Z).sum(1)


def bench_lasso(N: int, n_ref: int, repeat: int, lam: float = 0.1) -> tuple[list[dict], str]:
    from sklearn.linear_model import Lasso as SkLasso

    D, Y = lasso_problems(N)
    m = D.shape[0]
    Dt, Yt = torch.from_numpy(D), torch.from_numpy(Y)
    star = ur_lasso(Dt, Yt, lam, "fista", restart=True, polish=True, tol=1e-12, max_iter=100_000)
    F_star = _lasso_obj(D, star.x.numpy(), Y, lam)
    n_ref = min(n_ref, N)
    Yr = Y[:n_ref]
    # scikit-learn / celer stop when gap ≤ tol·‖y‖² in our scale: tol = 1e-6 F*/‖y‖²
    tols = 1e-6 * F_star[:n_ref] / (Yr**2).sum(1)

    def subopt(Z, rows=slice(None)):
        return float(np.max((_lasso_obj(D, Z, Y[rows], lam) - F_star[rows]) / F_star[rows]))

    rows, refs = [], []

    def per_problem(Estimator):
        """Fit one estimator per problem, each at its own tolerance."""

        def run():
            out = np.empty((n_ref, D.shape[1]))
            for i in range(n_ref):
                est = Estimator(alpha=lam / m, fit_intercept=False, tol=float(tols[i]), max_iter=100_000)
                out[i] = est.fit(D, Yr[i]).coef_
            return out

        return run

    def sk_multi():
        est = SkLasso(alpha=lam / m, fit_intercept=False, tol=float(tols.min()), max_iter=100_000)
        return est.fit(D, Yr.T).coef_

    baselines = [("sklearn Lasso (loop)", per_problem(SkLasso)), ("sklearn Lasso (multi-target)", sk_multi)]
    try:
        from celer import Lasso as CelerLasso

        baselines.append(("celer Lasso (loop)", per_problem(CelerLasso)))
    except ImportError:
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, fn in baselines:
            t, Z = _best(fn, repeat)
            rows.append(_row(name, n_ref, t, subopt(Z, slice(0, n_ref))))
            refs.append(t / n_ref * 1e6)
    ref_us = min(refs)
    for r in rows:
        r["speedup"] = ref_us / r["us_per_problem"]
    t, res = _best(lambda: ur_lasso(Dt, Yt, lam, tol=1e-6, max_iter=100_000), repeat)
    rows.append(_row("default ur.lasso(D, Y, λ)", N, t, subopt(res.x.numpy()), ref_us))
    t, res = _best(lambda: ur_lasso(Dt, Yt, lam, "working-set", tol=1e-6, max_iter=100_000), repeat)
    rows.append(_row("working-set (f32 warm-up + exact rounds)", N, t, subopt(res.x.numpy()), ref_us))
    op = DenseOperator(Dt)
    shapes = gemm_shapes(op, N)
    flops = sum(2.0 * M * K * Nn for M, K, Nn in shapes)
    for name, kw in [
        ("fista f64 (restart)", dict(restart=True)),
        ("fista f64 (restart + polish)", dict(restart=True, polish=True)),
        ("fista f32 (restart + f64 polish)", dict(restart=True, polish=True, precision="float32")),
    ]:
        try:
            t, res = _best(lambda kw=kw: ur_lasso(Dt, Yt, lam, "fista", tol=1e-6, max_iter=100_000, **kw), repeat)
        except TypeError:  # option not available
            continue
        dt = torch.float32 if kw.get("precision") == "float32" else torch.float64
        frac = step_rate(FISTA(Lasso(op.to(dtype=dt), lam), restart=True), Yt.to(dt), flops) / matmul_rate(shapes, dt)
        rows.append(_row(name, N, t, subopt(res.x.numpy()), ref_us, frac))
    return rows, (
        f"accuracy: max (F − F*)/F*; speed-up vs the fastest reference; references on the first {n_ref} problems"
    )


def machine_info(size: int = 2048) -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }
    try:
        info["load_average"] = os.getloadavg()
    except OSError:  # pragma: no cover
        pass
    for dt in (torch.float32, torch.float64):
        info[f"matmul_gflops_{str(dt).split('.')[-1]}"] = matmul_rate([(size, size, size)], dt, repeat=3)
    info["matmul_size"] = size
    return info


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="unrolled bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small problem sets (a smoke run of a few seconds)")
    p.add_argument("--out", default=None, help="write the results as JSON to this file")
    p.add_argument(
        "--sets",
        default="nnls-10x20,nnls-400x1200,lasso-64x256,certified,memory",
        help="comma-separated problem sets to run",
    )
    p.add_argument("--repeat", type=int, default=None, help="timing repeats (best is kept)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: torch's own; 1 is steadier on a shared machine)",
    )
    args = p.parse_args(argv)
    quick = args.quick
    repeat = args.repeat or (1 if quick else 3)
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    if args.threads is not None:
        if args.threads < 1:
            p.error("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    known = {"nnls-10x20", "nnls-400x1200", "lasso-64x256", "certified", "memory"}
    bad = [s for s in sets if s not in known]
    if bad:
        p.error(f"unknown set(s) {bad}; choose from {sorted(known)}")
    info = machine_info(512 if quick else 2048)
    print(f"unrolled bench — torch {info['torch']}, {info['threads']} threads, load {info.get('load_average')}")
    print(
        f"   torch matmul {info['matmul_size']}³: float32 {info['matmul_gflops_float32']:.0f} GFLOP/s, "
        f"float64 {info['matmul_gflops_float64']:.0f} GFLOP/s"
    )
    results = {"machine": info, "quick": quick, "sets": {}}
    for name in sets:
        if name == "memory":
            mem = bench_memory(20_000 if quick else 200_000)
            print(
                f"\n== memory: ur.nnls(A, Y) defaults on {mem['problems']} problems of 10×20: peak RSS "
                f"{mem['peak_rss_mib']:.0f} MiB (data alone {mem['peak_rss_mib_data']:.0f} MiB; target < 1024), "
                f"{mem['converged']} converged"
            )
            cli = bench_solve_memory(100_000 if quick else 1_000_000)
            print(
                f"   unrolled solve --method active-set on {cli['problems']} problems of 10×20: peak RSS "
                f"{cli['peak_rss_mib']:.0f} MiB (target < 1024), {cli['solved']} rows written"
            )
            results["sets"][name] = {**mem, "solve": cli}
            continue
        if name == "nnls-10x20":
            rows, note = bench_xie(200 if quick else 2000, repeat, quick)
        elif name == "certified":  # a trained net refined to 1e-6 vs cold (experiments/certified.py)
            from .experiments.certified import bench_refine

            rows, note = bench_refine(quick, repeat)
        elif name == "nnls-400x1200":
            rows, note = bench_sen(40 if quick else 1000, 4 if quick else 200, repeat)
        else:
            rows, note = bench_lasso(100 if quick else 10_000, 20 if quick else 500, repeat)
        print_table(name, rows, note)
        results["sets"][name] = {"note": note, "rows": rows}
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=1)
        print(f"\nwrote {args.out}")
    return results


if __name__ == "__main__":  # pragma: no cover
    main()
