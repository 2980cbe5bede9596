"""The ``unrolled`` command: reproduce, train, solve, bench, demo."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import sys
import time

import numpy as np


def _load_array(path: str, key: str | None = None, what: str = "array") -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise SystemExit(f"error: {what} file not found: {p}")
    if p.suffix == ".npz":
        with np.load(p) as z:
            names = list(z.keys())
            if key is None:
                if len(names) != 1:
                    raise SystemExit(f"error: {p} holds {names}; say which with a key")
                key = names[0]
            if key not in z:
                raise SystemExit(f"error: {p} has no array {key!r} (it has {names})")
            return z[key]
    if p.suffix == ".npy":
        return np.load(p, allow_pickle=False)
    raise SystemExit(f"error: {what} must be a .npy or .npz file, got {p}")


def _operator_from(cfg: dict, seed: int):
    """The operator of ``[operator]``: ``file`` (.npy/.npz) or ``kind`` with m, n; None if absent."""
    from .data import make_operator
    if "file" in cfg:
        return _load_array(cfg["file"], cfg.get("key"), "operator")
    if "kind" in cfg:
        return make_operator(cfg["kind"], cfg["m"], cfg["n"], seed=cfg.get("seed", seed))
    if cfg:
        raise SystemExit("error: [operator] needs `file = \"A.npy\"` or `kind = \"uniform\"|\"gaussian\"|\"sphere\"` with m, n")
    return None


def _data_from(cfg: dict, A, seed: int):
    """(A, Y, X, Y_val, X_val) from an .npz file (Y and optionally X) or a named generator."""
    from .data import GENERATORS
    if "file" in cfg:
        if A is None:
            raise SystemExit("error: data from a file needs an [operator]")
        Y = _load_array(cfg["file"], "Y", "data")
        with np.load(cfg["file"]) as z:
            X = z["X"] if "X" in z else None
        n_val = int(cfg.get("n_val", max(1, len(Y) // 10)))
    else:
        name = cfg.get("generator")
        if name not in GENERATORS:
            raise SystemExit(f"error: [data] generator {name!r} unknown; available: {', '.join(sorted(GENERATORS))}")
        params = {k: v for k, v in cfg.items() if k not in ("generator", "n_train", "n_val")}
        n_val = int(cfg.get("n_val", 200))
        A, Y, X = GENERATORS[name](int(cfg.get("n_train", 1000)) + n_val, A=A, seed=seed, **params)
    split = (lambda Z: (Z[n_val:], Z[:n_val]) if Z is not None else (None, None))
    (Y, Yv), (X, Xv) = split(Y), split(X)
    return A, Y, X, Yv, Xv


def cmd_train(args) -> int:
    import tomllib
    import torch
    import unrolled as ur
    from .nets import NETS
    cfg_path = Path(args.config)
    if not cfg_path.is_file():
        raise SystemExit(f"error: config not found: {cfg_path}")
    cfg = tomllib.loads(cfg_path.read_text())
    seed = int(cfg.get("seed", 0))
    out = Path(args.out or cfg.get("out", Path("runs") / cfg_path.stem))
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.toml").write_text(cfg_path.read_text())
    torch.manual_seed(seed)
    A = _operator_from(cfg.get("operator", {}), seed)
    A, Y, X, Yv, Xv = _data_from(cfg.get("data", {}), A, seed + 1)
    np.save(out / "operator.npy", A)
    model = dict(cfg.get("model", {}))
    name = model.pop("name", None)
    if name not in NETS:
        raise SystemExit(f"error: [model] name {name!r} unknown; available: {', '.join(sorted(NETS))}")
    dtype = torch.float64 if model.pop("dtype", "float32") == "float64" else torch.float32
    net = NETS[name](torch.as_tensor(A, dtype=dtype), **model)
    tcfg = dict(cfg.get("train", {}))
    loss = tcfg.get("loss", "supervised")
    val = (Yv, Xv) if Xv is not None and loss != "unsupervised" else Yv
    hist = ur.train(net, Y, X if loss == "supervised" else None, val=val, seed=seed, progress=not args.quiet,
                    checkpoint=out / "checkpoint.safetensors", **tcfg)
    net.save(out / "model.safetensors", extra={"train": tcfg})
    (out / "history.json").write_text(json.dumps(hist.to_dict(), indent=2))
    print(f"trained {name} (depth {net.depth}) in {hist.seconds:.1f} s; best validation loss "
          f"{hist.best_loss:.6g} at epoch {hist.best_epoch + 1}; model: {out / 'model.safetensors'}")
    return 0


def cmd_solve(args) -> int:
    import torch
    import unrolled as ur
    Y = _load_array(args.input, args.key, "input")
    t0 = time.perf_counter()
    info = {"input": args.input, "output": args.output}
    if args.model:
        net = ur.load(args.model)
        if args.operator:
            net.check_operator(_load_array(args.operator, None, "operator"))
        with torch.no_grad():
            X = net(torch.as_tensor(Y, dtype=net.operator.dtype)).numpy()
        info.update(model=args.model, net=type(net).__name__, depth=net.depth)
    else:
        if not args.operator:
            raise SystemExit("error: --method needs --operator A.npy")
        A = _load_array(args.operator, None, "operator")
        if args.method in ur.solvers.LASSO_METHODS:
            if args.lam is None:
                raise SystemExit(f"error: {args.method} solves a Lasso: give --lam")
            res = ur.lasso(A, Y, args.lam, args.method, tol=args.tol, max_iter=args.max_iter, progress=not args.quiet)
        else:
            res = ur.nnls(A, Y, args.method, tol=args.tol, max_iter=args.max_iter, progress=not args.quiet)
        X = res.x
        info.update(method=args.method, lam=args.lam, tol=args.tol,
                    converged=float(np.mean(res.converged)), mean_iterations=float(np.mean(res.n_iter)))
    info["seconds"] = round(time.perf_counter() - t0, 4)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    np.save(args.output, X)
    Path(args.output).with_suffix(".json").write_text(json.dumps(info, indent=2))
    print(json.dumps(info))
    return 0


def cmd_reproduce(args) -> int:
    from .experiments import available, reproduce
    if args.list or not args.name:
        for name, e in available().items():
            print(f"{name:26s} {e['paper']:12s} {e['what']}")
        return 0
    try:
        reproduce(args.name, quick=args.quick, out=args.out, seed=args.seed)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}")
    return 0


def cmd_demo(args) -> int:
    from .experiments.xie2019 import demo
    demo(Path(args.out), quick=args.quick)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="unrolled", description="Sparse recovery by algorithm unrolling.")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("reproduce", help="run a paper experiment: table, results.json, PNG figures")
    r.add_argument("name", nargs="?")
    r.add_argument("--quick", action="store_true", help="small data/epochs, same code path (< 1 min)")
    r.add_argument("--out", default=None)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--list", action="store_true")
    r.set_defaults(fn=cmd_reproduce)

    t = sub.add_parser("train", help="train a network from a TOML config (checkpoints, resumes)")
    t.add_argument("config")
    t.add_argument("--out", default=None)
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(fn=cmd_train)

    s = sub.add_parser("solve", help="apply a trained model or a classical solver to a .npy/.npz")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--model")
    g.add_argument("--method")
    s.add_argument("--operator")
    s.add_argument("--input", required=True)
    s.add_argument("--key", default=None, help="array name inside an .npz input")
    s.add_argument("--output", required=True)
    s.add_argument("--lam", type=float, default=None)
    s.add_argument("--tol", type=float, default=1e-6)
    s.add_argument("--max-iter", type=int, default=10_000)
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(fn=cmd_solve)

    d = sub.add_parser("demo", help="the xie2019 Table 1 / Fig. 3 story in a few minutes")
    d.add_argument("--out", default="results/demo")
    d.add_argument("--quick", action="store_true")
    d.set_defaults(fn=cmd_demo)

    sub.add_parser("bench", help="speed against SciPy / scikit-learn, same run (unrolled bench --help)")
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # its options belong to bench.main
        from .bench import main as bench_main
        bench_main(argv[1:])
        return 0
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
