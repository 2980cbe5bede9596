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
def _sync() -> None:
    """Wait for queued GPU work (a no-op unless CUDA is in use), so that timings cover it."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _best(fn, repeat: int):
    """(best wall time over ``repeat`` runs, result of the last run); GPU work synchronised."""
    best, out = float("inf"), None
    for _ in range(repeat):
        _sync()
        t0 = time.perf_counter()
        out = fn()
        _sync()
        best = min(best, time.perf_counter() - t0)
    return best, out


def matmul_rate(shapes, dtype, repeat: int = 5, device="cpu") -> float:
    """torch GFLOP/s for the chain of GEMMs ``shapes`` = [(M, K, N), ...] on ``device``, best of ``repeat``."""
    mats = [
        (torch.randn(M, K, dtype=dtype, device=device), torch.randn(K, N, dtype=dtype, device=device))
        for M, K, N in shapes
    ]
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


def _torch_steps(A, Y, max_iter: int):
    """The exact active set through its batched torch steps (the route without a C compiler, and on a GPU)."""
    from .algorithms._compiled import disabled

    with disabled():
        return ur_nnls(A, Y, "active-set", tol=1e-12, max_iter=max_iter)


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
        ("active-set f64, torch steps (no C)", lambda: _torch_steps(At, Yt, 10 * A.shape[1]), None),
        (
            "apgd f64 (restart, kkt 1e-6)",
            lambda: ur_nnls(At, Yt, "apgd", momentum="nesterov", restart=True, tol=1e-6, max_iter=20_000),
            APGD(NNLS(op), momentum="nesterov", restart=True),
        ),
    ]
    for name, fn, method in runs[:3] if quick else runs:  # APGD needs ~10⁴ iterations here
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


def bench_sen(N: int, n_ref: int, repeat: int, device="cpu") -> tuple[list[dict], str]:
    F, Y = sen_problems(N)
    n_ref = min(n_ref, N)
    t_ref, X_ref = _best(lambda: _scipy_nnls_loop(F, Y[:n_ref]), 1)
    ref_us = t_ref / n_ref * 1e6

    def relres(X, Yb):
        return float(np.max(np.linalg.norm(X @ F.T - Yb, axis=1) / np.linalg.norm(Yb, axis=1)))

    rows = [_row("scipy nnls (loop)", n_ref, t_ref, relres(X_ref, Y[:n_ref]))]
    Ft, Yt = torch.from_numpy(F).to(device), torch.from_numpy(Y).to(device)  # moved once, before timing
    t, res = _best(lambda: ur_nnls(Ft, Yt, tol=SEN_TOL, max_iter=20_000), repeat)
    rows.append(_row(f"default ur.nnls(F, Y, tol={SEN_TOL:g})", N, t, relres(res.x.cpu().numpy(), Y), ref_us))
    for dtype, name in [
        (torch.float64, f"apgd f64 (restart, kkt {SEN_TOL:g})"),
        (torch.float32, f"apgd f32 (restart, kkt {SEN_TOL:g})"),
    ]:
        Ft, Yt = torch.from_numpy(F).to(device, dtype), torch.from_numpy(Y).to(device, dtype)
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
            shapes, dtype, device=device
        )
        rows.append(_row(name, N, t, relres(res.x.double().cpu().numpy(), Y), ref_us, frac))
    return rows, (
        f"accuracy: max relative residual ‖Fs − x‖/‖x‖ (target 1e-4); SciPy (CPU) on the first {n_ref} "
        f"problems; ours on {device}"
    )


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


def bench_classify(batches: int, repeat: int, quick: bool = False) -> tuple[list[dict], str]:
    """Training steps (forward, backward, Adam) of sulam2018 §4's classifier, batch 128 of 28×28
    images: the feed-forward net against layered BP / ML-ISTA / ML-FISTA with 6 unfoldings, same
    weights. ``quick``: the widths quartered."""
    from .nets import Classifier, LayeredBPNet, MLFISTANet, MLISTANet, conv_dictionaries

    widths = (16, 32, 128) if quick else (64, 128, 512)
    Ds = conv_dictionaries((1, 28, 28), widths, (6, 6, 4), (2, 2, 1))
    gen = torch.Generator().manual_seed(0)
    Y, labels = torch.rand(128, 784, generator=gen), torch.randint(0, 10, (128,), generator=gen)
    rows, ff_us = [], None
    for name, cls, depth in (
        ("feed-forward", MLISTANet, 1),
        ("ML-ISTA-6", MLISTANet, 7),
        ("ML-FISTA-6", MLFISTANet, 7),
        ("layered BP-6", LayeredBPNet, 7),
    ):
        clf = Classifier(cls(Ds, depth, 0.0, nonneg=True), 10)
        opt = torch.optim.Adam(clf.parameters(), lr=1e-3)

        def run(clf=clf, opt=opt):
            for _ in range(batches):
                loss = torch.nn.functional.cross_entropy(clf(Y), labels)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            return float(loss.detach())

        run()  # warm-up
        seconds, loss = _best(run, repeat)
        row = _row(name, 128 * batches, seconds, loss, ff_us)
        ff_us = row["us_per_problem"] if ff_us is None else ff_us
        rows.append(row)
    ratio = rows[1]["seconds"] / rows[0]["seconds"]
    note = (
        f"{batches} training steps of batch 128, widths {widths}; accuracy column: the last batch's cross-entropy; "
        f"speed-up: against feed-forward. ML-ISTA-6 / FF = {ratio:.1f}× (target ≤ ~13×: the 13 forward/adjoint "
        "convolutions of 6 unfoldings)"
    )
    return rows, note


# -- inference, streaming and devices (issue 12) -----------------------------------------------


def _lapgd3(N: int, dtype=torch.float32, device="cpu", seed: int = 0):
    """LAPGD-3 (analytic init) on N xie2019 problems (10×20): the net and Y (N, 10), both on ``device``."""
    from .nets import LAPGD

    A, Y = xie_problems(N, seed)
    net = LAPGD(torch.as_tensor(A), depth=3).to(device=device, dtype=dtype)
    return net, torch.as_tensor(Y, dtype=dtype, device=device).contiguous()


def _addmm_chain(net):
    """LAPGD-3 written by hand as addmm/ReLU on the whole batch (x₁ = ReLU(b), b = Y Sᵀ)."""
    S, W1, W2 = (p[0].detach().T.contiguous() for p in (net.S, net.W1, net.W2))

    def run(Y):
        b = Y @ S
        x1 = b.relu()
        x2 = torch.addmm(b, x1, W1).relu_()
        return torch.addmm(torch.addmm(b, x2, W1), x1, W2).relu_()

    return run


def _kron_chain(net, g: int):
    """The same chain on g problems per row: Y (N/g, 10g) times kron(I_g, ·) (larger, sparser matmuls)."""
    S, W1, W2 = (torch.block_diag(*[p[0].detach().T] * g) for p in (net.S, net.W1, net.W2))

    def run(Y):
        Yg = Y.reshape(-1, Y.shape[1] * g)
        b = Yg @ S
        x1 = b.relu()
        x2 = torch.addmm(b, x1, W1).relu_()
        return torch.addmm(torch.addmm(b, x2, W1), x1, W2).relu_().reshape(Y.shape[0], -1)

    return run


def _autocast(net, dtype):
    """The eager net with its matmuls in ``dtype`` (``torch.autocast`` on the net's device)."""

    def run(Y):
        with torch.autocast(Y.device.type, dtype=dtype):
            return net(Y)

    return run


def _chunked(fn, rows: int):
    def run(Y):
        return torch.cat([fn(Y[i : i + rows]) for i in range(0, Y.shape[0], rows)])

    return run


def bench_inference(N: int, repeat: int, device="cpu") -> tuple[list[dict], str]:
    """LAPGD-3 inference on N problems of 10×20 (float32): the eager net (the reference) against a
    hand-written addmm chain, a block-diagonal layout, cache-sized chunks, :func:`unrolled.fast`
    and reduced precision (accuracy: max |X − X_f32| / max |X_f32|)."""
    from .fused import fast

    net, Y = _lapgd3(N, device=device)
    g = 8 if N % 8 == 0 else 1
    with torch.no_grad():
        t_ref, X_ref = _best(lambda: net(Y), repeat)
        scale = float(X_ref.abs().max())
        runs = [
            ("hand-written addmm/ReLU chain", _addmm_chain(net), Y),
            (f"kron(I_{g}, W) layout", _kron_chain(net, g), Y),
            ("eager net, chunks of 8192 rows", _chunked(net, 8192), Y),
        ]
        if torch.device(device).type == "cpu":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a fallback is still timed, under its name
                runs.append(("ur.fast(net) (fused C kernel)", fast(net), Y))
        for half in (torch.bfloat16, torch.float16):
            runs.append((f"eager net, autocast {str(half).split('.')[-1]}", _autocast(net, half), Y))
        rows = [_row("LAPGD-3 eager net (reference)", N, t_ref, 0.0)]
        rows[0]["cpu_seconds"] = _cpu_best(lambda: net(Y), repeat)
        for name, fn, Yd in runs:
            t, X = _best(lambda fn=fn, Yd=Yd: fn(Yd), repeat)
            err = float((X.float() - X_ref).abs().max()) / scale
            rows.append(_row(name, N, t, err, t_ref / N * 1e6))
            rows[-1]["cpu_seconds"] = _cpu_best(lambda fn=fn, Yd=Yd: fn(Yd), repeat)
    rates = ", ".join(
        f"{r['method'].split(' (')[0]} {r['problems'] / r['seconds'] / 1e6:.2f} M/s "
        f"({r['problems'] / r['cpu_seconds'] / 1e6:.2f} M/s of CPU time)"
        for r in rows
        if r["method"].startswith(("LAPGD-3", "ur.fast"))
    )
    return rows, (
        f"float32 on {device}, {torch.get_num_threads()} threads; {rates}; speed-up (wall clock) vs the eager net"
    )


def _cpu_best(fn, repeat: int) -> float:
    """The least process CPU time (all threads) of ``repeat`` runs: what a busy machine's wall clock hides."""
    best = float("inf")
    for _ in range(repeat):
        _sync()
        t0 = time.process_time()
        fn()
        _sync()
        best = min(best, time.process_time() - t0)
    return best


# VmHWM, not ru_maxrss: the latter keeps the parent's peak across fork + exec
STREAM_SCRIPT = """
import sys
import torch
from unrolled.cli import main
torch.set_num_threads(int(sys.argv[1]))
rc = main(sys.argv[2:])
status = open("/proc/self/status").read().split("VmHWM:")[1].split()[0]
print(status)
sys.exit(rc)
"""


def bench_stream(N: int, repeat: int, chunk: int = 262144) -> dict:
    """``unrolled solve`` of LAPGD-3 (float32) on N problems of 10×20 streamed from a memory-mapped
    .npy into a .npy, in a subprocess (peak RSS), against the in-memory batched ``net(Y)`` in this
    process, same threads."""
    import subprocess
    import sys
    import tempfile

    net, Y = _lapgd3(N)
    n_threads = torch.get_num_threads()
    with torch.no_grad():
        t_mem, _ = _best(lambda: net(Y), repeat)
    Y = Y.numpy()
    env = {**os.environ, "OMP_NUM_THREADS": str(n_threads)}
    src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    best, peak = {False: float("inf"), True: float("inf")}, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        net.save(os.path.join(tmp, "model.safetensors"))
        np.save(os.path.join(tmp, "Y.npy"), Y)
        args = ["solve", "--model", "model.safetensors", "--input", "Y.npy", "--output", "X.npy", "--quiet"]
        args += ["--chunk", str(chunk), "--threads", str(n_threads)]
        for _ in range(repeat):
            for fast in (False, True):
                out = subprocess.run(
                    [sys.executable, "-c", STREAM_SCRIPT, str(n_threads), *args, *(["--fast"] if fast else [])],
                    cwd=tmp,
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.splitlines()
                best[fast] = min(best[fast], json.loads(out[-2])["seconds"])
                peak = max(peak, int(out[-1]) / 1024)
    return {
        "problems": N,
        "chunk": chunk,
        "threads": n_threads,
        "in_memory_per_s": N / t_mem,
        "stream_per_s": N / best[False],
        "ratio": t_mem / best[False],
        "stream_fast_per_s": N / best[True],
        "fast_ratio": t_mem / best[True],
        "peak_rss_mib": peak,
    }


def bench_devices(device: str, quick: bool, repeat: int) -> tuple[list[dict], str]:
    """The same batched work on the CPU and on ``device``: LAPGD-3 inference (10×20), APGD on
    sen2024's 400×1200 and FISTA on the Moreau talk's 64×256; data moved to the device once, before
    timing. "speed-up" is the device's rate over the CPU's."""
    dev = torch.device(device)
    Nn, Na, Nf = (10_000, 40, 200) if quick else (1_000_000, 1000, 10_000)
    F, Ys = sen_problems(Na)
    D, Yl = lasso_problems(Nf)
    cases = [
        (f"LAPGD-3 net f32 ({Nn} × 10×20)", Nn, lambda d: _net_case(Nn, d)),
        (
            f"apgd f32 400×1200 (tol {SEN_TOL:g})",
            Na,
            lambda d: _solver_case(
                F, Ys, d, lambda A, Y: ur_nnls(A, Y, "apgd", momentum="nesterov", restart=True, tol=SEN_TOL)
            ),
        ),
        (
            "fista f64 64×256 (λ = 0.1, restart, tol 1e-6)",
            Nf,
            lambda d: _solver_case(
                D, Yl, d, lambda A, Y: ur_lasso(A, Y, 0.1, "fista", restart=True, tol=1e-6), torch.float64
            ),
        ),
    ]
    rows = []
    for name, N, case in cases:
        t_cpu, _ = _best(case(torch.device("cpu")), repeat)
        rows.append(_row(f"{name}, cpu", N, t_cpu, 0.0))
        if dev.type != "cpu":
            t_dev, _ = _best(case(dev), repeat)
            rows.append(_row(f"{name}, {dev}", N, t_dev, 0.0, t_cpu / N * 1e6))
    return rows, f"CPU: {torch.get_num_threads()} threads; device: {dev}; speed-up = CPU time / device time"


def _net_case(N: int, device):
    net, Y = _lapgd3(N, device=device)

    def run():
        with torch.no_grad():
            return net(Y)

    return run


def _solver_case(A, Y, device, solve, dtype=torch.float32):
    At = torch.as_tensor(A, dtype=dtype, device=device)
    Yt = torch.as_tensor(Y, dtype=dtype, device=device)
    return lambda: solve(At, Yt)


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
        "--device",
        default="cpu",
        help="device of the sets that take one (inference, devices, nnls-400x1200); the SciPy / "
        "scikit-learn references and the other sets run on the CPU",
    )
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
    known = {
        "nnls-10x20",
        "nnls-400x1200",
        "lasso-64x256",
        "certified",
        "memory",
        "inference",
        "stream",
        "devices",
        "classify",
    }
    try:
        device = torch.device(args.device)
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError) as exc:
        p.error(f"--device {args.device}: {str(exc).splitlines()[0]}")
    bad = [s for s in sets if s not in known]
    if bad:
        p.error(f"unknown set(s) {bad}; choose from {sorted(known)}")
    info = machine_info(512 if quick else 2048)
    print(
        f"unrolled bench — torch {info['torch']}, {info['threads']} threads, load {info.get('load_average')}, "
        f"device {device}{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}"
    )
    print(
        f"   torch matmul {info['matmul_size']}³: float32 {info['matmul_gflops_float32']:.0f} GFLOP/s, "
        f"float64 {info['matmul_gflops_float64']:.0f} GFLOP/s"
    )
    results = {"machine": info, "device": str(device), "quick": quick, "sets": {}}
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
        if name == "stream":
            st = bench_stream(20_000 if quick else 1_000_000, repeat)
            print(
                f"\n== stream: unrolled solve --model LAPGD-3 (f32) on {st['problems']} problems of 10×20, "
                f"memory-mapped .npy → .npy in chunks of {st['chunk']} ({st['threads']} threads): "
                f"{st['stream_per_s'] / 1e6:.2f} M/s = {100 * st['ratio']:.0f}% of the in-memory net(Y) "
                f"({st['in_memory_per_s'] / 1e6:.2f} M/s; target ≥ 80%); with --fast "
                f"{st['stream_fast_per_s'] / 1e6:.2f} M/s = {100 * st['fast_ratio']:.0f}%; "
                f"peak RSS {st['peak_rss_mib']:.0f} MiB (target < 1024)"
            )
            results["sets"][name] = st
            continue
        if name == "nnls-10x20":
            rows, note = bench_xie(200 if quick else 2000, repeat, quick)
        elif name == "certified":  # a trained net refined to 1e-6 vs cold (experiments/certified.py)
            from .experiments.certified import bench_refine

            rows, note = bench_refine(quick, repeat)
        elif name == "classify":
            rows, note = bench_classify(2 if quick else 5, repeat, quick)
        elif name == "nnls-400x1200":
            rows, note = bench_sen(40 if quick else 1000, 4 if quick else 200, repeat, device)
        elif name == "inference":
            rows, note = bench_inference(10_000 if quick else 1_000_000, repeat, device)
        elif name == "devices":
            rows, note = bench_devices(device, quick, repeat)
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
