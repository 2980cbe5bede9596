"""The ``unrolled`` command: reproduce, train, solve, bench, demo."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


class UsageError(ValueError):
    """A mistake in the command line, config or input files (exit 2, as argparse)."""


class Failure(RuntimeError):
    """The command was right but the work failed (exit 1)."""


class Interrupted(Exception):
    """Ctrl-C, with what to do next (exit 130)."""


def _load_array(path: str, key: str | None = None, what: str = "array", mmap: bool = False) -> np.ndarray:
    """A .npy (memory-mapped when ``mmap``) or one array of an .npz; real numbers only."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{what} file not found: {p}")
    if p.suffix == ".npz":
        with np.load(p) as z:
            names = list(z.keys())
            if key is None:
                if len(names) != 1:
                    raise UsageError(f"{p} holds {names}; say which with a key")
                key = names[0]
            if key not in z:
                raise UsageError(f"{p} has no array {key!r} (it has {names})")
            arr = z[key]
    elif p.suffix == ".npy":
        arr = np.load(p, allow_pickle=False, mmap_mode="r" if mmap else None)
    else:
        raise UsageError(f"{what} must be a .npy or .npz file, got {p}")
    if np.iscomplexobj(arr):
        raise UsageError(f"{what} {p} holds complex numbers; unrolled solves real problems")
    return arr


def _operator_from(cfg: dict, seed: int):
    """The operator of ``[operator]``: ``file`` (.npy/.npz) or ``kind`` with m, n; None if absent."""
    from .data import make_operator

    if "file" in cfg:
        return _load_array(cfg["file"], cfg.get("key"), "operator")
    if "kind" in cfg:
        return make_operator(cfg["kind"], cfg["m"], cfg["n"], seed=cfg.get("seed", seed))
    return None


def _check_size(rows: int, A, gen, params: dict) -> None:
    """Refuse data that cannot fit in memory before allocating it."""
    import inspect

    defaults = {k: p.default for k, p in inspect.signature(gen).parameters.items()}
    m, n = A.shape if A is not None else (params.get("m", defaults.get("m", 1)), params.get("n", defaults.get("n", 1)))
    need = 4 * 8 * rows * (m + n)  # Y, X and the generator's temporaries, float64
    have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > have:
        raise UsageError(
            f"[data] n_train + n_val = {rows} signals of {m}×{n} need ~{need / 2**30:.0f} GiB; "
            f"this machine has {have / 2**30:.0f} GiB"
        )


def _data_from(cfg: dict, A, seed: int):
    """(A, Y, X, Y_val, X_val) from an .npz file (Y and optionally X), memory-mapped .npy files
    (``path``, ``targets``) or a named generator (``fresh``: new training samples every epoch).
    The validation rows are the first ``n_val``; the training rows the others."""
    from .data import GENERATORS

    if "file" in cfg or "path" in cfg:
        if A is None:
            raise UsageError(f"[data] {'file' if 'file' in cfg else 'path'} = ... needs an [operator]")
        if "file" in cfg:
            Y = _load_array(cfg["file"], "Y", "data")
            with np.load(cfg["file"]) as z:
                X = z["X"] if "X" in z else None
        else:
            Y = _load_array(cfg["path"], None, "data", mmap=True)
            X = _load_array(cfg["targets"], None, "targets", mmap=True) if "targets" in cfg else None
        n_val = cfg.get("n_val", max(1, len(Y) // 10))
    elif cfg.get("fresh", False):
        return _fresh_from(cfg, A, seed)
    else:
        gen = GENERATORS[cfg["generator"]]
        params = {k: v for k, v in cfg.items() if k not in ("generator", "n_train", "n_val", "fresh")}
        n_val = cfg["n_val"]
        _check_size(cfg["n_train"] + n_val, A, gen, params)
        A, Y, X = gen(cfg["n_train"] + n_val, A=A, seed=seed, **params)

    def split(Z):
        return (Z[n_val:], Z[:n_val] if n_val else None) if Z is not None else (None, None)

    (Y, Yv), (X, Xv) = split(Y), split(X)
    return A, Y, X, Yv, Xv


def _fresh_from(cfg: dict, A, seed: int):
    """(A, FreshSamples, None, Y_val, X_val): ``n_train`` new samples every epoch, a fixed validation set."""
    from .data import GENERATORS
    from .datasets import BLOCK, FreshSamples

    gen = GENERATORS[cfg["generator"]]
    params = {k: v for k, v in cfg.items() if k not in ("generator", "n_train", "n_val", "fresh")}
    n_val = cfg["n_val"]
    _check_size(n_val + BLOCK, A, gen, params)
    A, Yv, Xv = gen(max(n_val, 1), A=A, seed=seed, **params)
    data = FreshSamples(cfg["generator"], cfg["n_train"], A=A, seed=seed, **params)
    return A, data, None, (Yv if n_val else None), (Xv if n_val and Xv is not None else None)


OUTPUTS = ("checkpoint.safetensors", "model.safetensors", "history.json", "config.toml", "operator.npy")


def _out_path(args, cfg: dict, cfg_path: Path) -> Path:
    return Path(args.out or cfg.get("out", Path("runs") / cfg_path.stem))


def _out_dir(args, cfg: dict, cfg_path: Path) -> Path:
    """The run's folder, created, without temp files of killed writes; with --fresh, also
    without a previous run's files."""
    from .nets.base import remove_stale_temps

    out = _out_path(args, cfg, cfg_path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create --out {out}: {exc.strerror}") from None
    if not os.access(out, os.W_OK):
        raise UsageError(f"--out {out} is not writable")
    for name in OUTPUTS:
        remove_stale_temps(out / name)  # left by a killed write
        if args.fresh:
            (out / name).unlink(missing_ok=True)
    return out


def _checkpoint_epoch(path: Path) -> int:
    from .nets.base import load_tensors

    try:
        return int(load_tensors(path)[1]["epoch"]) if path.exists() else 0
    except (ValueError, KeyError, TypeError):
        return 0


def _dtype(name: str):
    import torch

    return {"float32": torch.float32, "float64": torch.float64}[name]


def _read_config(path: Path) -> dict:
    import tomllib

    from ._config import resolve

    if not path.is_file():
        raise UsageError(f"config not found: {path}")
    try:
        return resolve(tomllib.loads(path.read_text()))
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path} is not valid TOML: {exc}") from None


def _build(cfg: dict, n_threads: int | None, device=None):
    """(A, Y, X, Y_val, X_val, net) of a resolved config; the net on ``device``."""
    import torch

    from ._threads import threads
    from .nets import NETS

    torch.manual_seed(cfg["seed"])
    with threads(n_threads):
        A = _operator_from(cfg["operator"], cfg["seed"])
        A, Y, X, Yv, Xv = _data_from(cfg["data"], A, cfg["seed"] + 1)
        model = dict(cfg["model"])
        name, dtype = model.pop("name"), _dtype(model.pop("dtype"))
        return A, Y, X, Yv, Xv, NETS[name](torch.as_tensor(A, dtype=dtype, device=device), **model)


def cmd_train(args) -> int:
    """Train from a config; under ``torchrun`` every rank trains its shard and rank 0 writes."""
    import torch

    from . import distributed

    try:
        requested = torch.device(args.device)
    except RuntimeError:
        raise UsageError(f"--device {args.device!r} is not a device (cpu, cuda, cuda:N)") from None
    if requested.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: no CUDA device is available here")
    device = distributed.device(requested)
    distributed.init(device)
    try:
        return _train_run(args, device, lead=distributed.rank() == 0)
    finally:
        distributed.finish()


def _train_run(args, device, lead: bool) -> int:
    import unrolled as ur

    from .training import data_fingerprint, resume_conflict

    cfg_path = Path(args.config)
    cfg = _read_config(cfg_path)
    out = _out_dir(args, cfg, cfg_path) if lead else _out_path(args, cfg, cfg_path)
    ckpt = out / "checkpoint.safetensors"
    A, Y, X, Yv, Xv, net = _build(cfg, args.threads, device)
    seed, name = cfg["seed"], cfg["model"]["name"]
    config = {k: v for k, v in cfg.items() if k != "out"}  # where the run is written does not change it
    run = {"config": config, "data": data_fingerprint(A, Y, X, Yv, Xv)}
    conflict = resume_conflict(ckpt, {"run": run}) if ckpt.exists() and not args.fresh else None
    if conflict:
        raise UsageError(f"{conflict}; rerun with --fresh to start afresh, or choose another --out")
    if lead:
        (out / "config.toml").write_text(cfg_path.read_text())
        np.save(out / "operator.npy", A)
    tcfg = cfg["train"]
    loss = tcfg.get("loss", "supervised")
    val = None if Yv is None else (Yv, Xv) if Xv is not None and loss != "unsupervised" else Yv
    try:
        hist = ur.train(
            net,
            Y,
            X if loss == "supervised" else None,
            val=val,
            seed=seed,
            progress=not args.quiet and lead,
            checkpoint=ckpt,
            threads=args.threads,
            run=run,
            **tcfg,
        )
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; rerun to resume from epoch {_checkpoint_epoch(ckpt)}") from None
    except OSError as exc:
        raise Failure(
            f"{exc.strerror or exc} writing {exc.filename or out}; the last checkpoint "
            f"(epoch {_checkpoint_epoch(ckpt)}) is intact: free space and rerun to resume"
        ) from None
    if not lead:
        return 0
    net.save(out / "model.safetensors", extra={"train": tcfg})
    (out / "history.json").write_text(json.dumps(hist.to_dict(), indent=2))
    print(
        f"trained {name} (depth {net.depth}) in {hist.seconds:.1f} s; best validation loss "
        f"{hist.best_loss:.6g} at epoch {hist.best_epoch + 1}; model: {out / 'model.safetensors'}"
    )
    return 0


def _model_solver(args):
    import torch

    import unrolled as ur

    try:
        net = ur.load(args.model)
    except (KeyError, AttributeError, IndexError) as exc:  # metadata that passed the digest but builds nothing
        raise UsageError(f"{args.model}: cannot rebuild the network ({type(exc).__name__}: {exc})") from None
    if args.operator:
        net.check_operator(_load_array(args.operator, None, "operator"))

    if args.refine:

        def apply(Y):
            res = ur.refine(net, np.asarray(Y), tol=args.tol, max_iter=args.max_iter)
            return res.x, np.asarray(res.converged), np.asarray(res.n_iter), res.history["certificate"][-1]

        return (
            apply,
            {"model": args.model, "net": type(net).__name__, "depth": net.depth, "refine": True, "tol": args.tol},
            (net.m, net.n),
        )

    forward = ur.fast(net) if args.fast else net

    def apply(Y):
        Y_t = torch.as_tensor(np.asarray(Y), dtype=net.operator.dtype)
        with torch.no_grad():
            X = forward(Y_t)
        cert = net.certify(Y_t, X).certificate.numpy() if args.certificates else None
        return X.numpy(), None, None, cert

    return apply, {"model": args.model, "net": type(net).__name__, "depth": net.depth}, (net.m, net.n)


def _method_solver(args):
    import unrolled as ur

    if not args.operator:
        raise UsageError("--method needs --operator A.npy")
    if args.refine or args.certificates or args.fast:
        raise UsageError("--refine, --certificates and --fast are for a --model; a --method solves to --tol")
    A = _load_array(args.operator, None, "operator")
    lasso_methods = {"lasso": None, **{m: m for m in ur.solvers.LASSO_METHODS}}  # "lasso": the default route
    nnls_methods = {"nnls": None, **{m: m for m in ur.solvers.NNLS_METHODS}}  # "nnls": the default route
    if args.method in lasso_methods:
        if args.lam is None:
            raise UsageError(f"{args.method} solves a Lasso: give --lam")
        method = lasso_methods[args.method]

        def solve(Y):
            return ur.lasso(A, Y, args.lam, method, tol=args.tol, max_iter=args.max_iter)
    elif args.method in nnls_methods:
        if args.lam is not None:
            raise UsageError(f"--lam is for Lasso methods ({', '.join(lasso_methods)}); {args.method} solves an NNLS")
        method = nnls_methods[args.method]

        def solve(Y):
            return ur.nnls(A, Y, method, tol=args.tol, max_iter=args.max_iter)
    else:
        raise UsageError(
            f"--method {args.method!r} unknown; choose one of {', '.join([*nnls_methods, *lasso_methods])}"
        )

    def apply(Y):
        res = solve(Y)  # the chunk, read into memory by stream.Rows
        return res.x, np.asarray(res.converged), np.asarray(res.n_iter), None

    return apply, {"method": args.method, "lam": args.lam, "tol": args.tol}, A.shape


def _output_path(name: str) -> Path:
    """The store written: a Zarr array for a ``.zarr`` name, else the file ``np.save(name)`` writes
    (``.npy`` is appended unless present)."""
    p = Path(name)
    return p if p.suffix in (".npy", ".zarr") else p.with_name(p.name + ".npy")


SOLVE_OPTIONS = ("model", "method", "operator", "lam", "tol", "max_iter", "refine", "certificates", "fast")


def build_apply(options: dict):
    """The chunk solver of ``unrolled solve``'s options (a dict of ``SOLVE_OPTIONS``), rebuilt the same
    way in this process and on Dask workers."""
    args = argparse.Namespace(**options)
    return (_model_solver if args.model else _method_solver)(args)[0]


def _file_digest(path: str | None) -> str | None:
    import hashlib

    if path is None:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _certificate_summary(path: Path, keep: bool) -> dict:
    """Median and worst of the per-problem certificates saved at ``path`` (removed unless ``keep``)."""
    certs = np.load(path)
    summary = {"certificate_median": float(np.median(certs)), "certificate_worst": float(np.max(certs))}
    if keep:
        summary["certificates"] = str(path)
    else:
        path.unlink()
    return summary


def cmd_solve(args) -> int:
    from ._threads import default_threads
    from ._validate import positive_int
    from .stream import Solver, Source, is_zarr, solve_store

    chunk = positive_int(args.chunk, "--chunk")
    if not (Path(args.input).is_file() or is_zarr(args.input) and Path(args.input).exists()):
        raise UsageError(f"input file not found: {args.input}")
    if not is_zarr(args.input) and Path(args.input).suffix not in (".npy", ".npz"):
        raise UsageError(f"input must be a .npy, .npz or .zarr, got {args.input}")
    source = Source(args.input, args.key)
    rows = source.open()
    out = _output_path(args.output)
    certs = _output_path(args.certificates) if args.certificates else None
    if certs is not None and certs.suffix != ".npy":
        raise UsageError(f"--certificates {args.certificates}: certificates are written as .npy")
    if certs is None and args.refine:  # refined answers report their certificates' median and worst
        certs = out.with_name(f".{out.stem}.certificates.npy")
    t0 = time.perf_counter()
    options = {k: getattr(args, k) for k in SOLVE_OPTIONS}
    options["certificates"] = bool(args.certificates)
    _, info, (m, n) = (_model_solver if args.model else _method_solver)(argparse.Namespace(**options))
    n_threads = args.threads if args.threads is not None else default_threads(min(chunk, len(rows)), m, n)
    run = {**options, "model": _file_digest(args.model), "operator": _file_digest(args.operator)}
    info = {"input": args.input, "output": str(out), **info}
    try:
        done = solve_store(
            Solver(build_apply, json.dumps(options, sort_keys=True)),
            source,
            out,
            chunk=chunk,
            run=run,
            certificates=certs,
            n_threads=n_threads,
            scheduler=args.scheduler,
            progress=not args.quiet,
        )
    except KeyboardInterrupt:
        raise Interrupted("interrupted; rerun the same command to resume from the chunks done") from None
    if certs is not None:
        info.update(_certificate_summary(certs, keep=bool(args.certificates)))
    if not args.model or args.refine:
        info.update(converged=done["converged"], mean_iterations=done["mean_iterations"])
    if done["resumed_chunks"]:
        info["resumed_chunks"] = done["resumed_chunks"]
    info["seconds"] = round(time.perf_counter() - t0, 4)
    out.with_suffix(".json").write_text(json.dumps(info, indent=2))
    print(json.dumps(info))
    return 0


def cmd_reproduce(args) -> int:
    from ._threads import threads
    from .experiments import available, reproduce

    if args.list or not args.name:
        for name, e in available().items():
            print(f"{name:26s} {e['paper']:12s} {e['what']}")
        return 0
    data = _named_paths(args.data)
    with threads(args.threads):
        reproduce(
            args.name,
            quick=args.quick,
            out=args.out,
            seed=args.seed,
            device=args.device,
            data=data,
            paper=args.paper,
            epochs=args.epochs,
            seeds=args.seeds,
            batch_size=args.batch_size,
        )
    return 0


BUILTIN_DATA = ("digits",)  # scikit-learn's 8×8 digits: ``--data digits`` takes no path


def _named_paths(items) -> dict:
    """``["mnist=/path", "digits", ...]`` → ``{"mnist": "/path", "digits": None}`` (a bare name only for
    the sets shipped with a dependency, :data:`BUILTIN_DATA`); a malformed item is refused by name."""
    named = {}
    for item in items or []:
        key, sep, path = item.partition("=")
        if not sep and key.strip().lower() in BUILTIN_DATA:
            named[key.strip().lower()] = None
            continue
        if not sep or not key or not path:
            raise ValueError(f"--data {item!r}: expected NAME=PATH")
        named[key.strip().lower()] = path
    return named


def cmd_demo(args) -> int:
    from .experiments.xie2019 import demo

    demo(Path(args.out), quick=args.quick)
    return 0


THREADS_HELP = "torch threads for the command (default: one for small problems, else torch's own count)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="unrolled", description="Sparse recovery by algorithm unrolling.")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("reproduce", help="run a paper experiment: table, results.json, PNG figures")
    r.add_argument("name", nargs="?")
    r.add_argument("--quick", action="store_true", help="small data/epochs, same code path (< 1 min)")
    r.add_argument("--out", default=None)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--list", action="store_true")
    r.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own count)")
    r.add_argument("--device", default=None, help="cpu or cuda, for the experiments that take it")
    r.add_argument("--data", action="append", metavar="NAME=PATH", help="a data set's path (repeatable)")
    r.add_argument("--paper", action="store_true", help="the paper's exact protocol, however long it takes")
    r.add_argument("--epochs", type=int, default=None, help="training epochs, for the experiments that take it")
    r.add_argument("--seeds", type=int, default=None, help="seeds to average over, for the experiments that take it")
    r.add_argument("--batch-size", type=int, default=None, help="training batch, for the experiments that take it")
    r.set_defaults(fn=cmd_reproduce)

    t = sub.add_parser("train", help="train a network from a TOML config (checkpoints, resumes)")
    t.add_argument("config")
    t.add_argument("--out", default=None)
    t.add_argument("--quiet", action="store_true")
    t.add_argument("--fresh", action="store_true", help="discard the previous run in --out instead of resuming")
    t.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    t.add_argument("--device", default="cpu", help="cpu or cuda (under torchrun: each rank's own GPU)")
    t.set_defaults(fn=cmd_train)

    s = sub.add_parser(
        "solve", help="apply a trained model or a classical solver to a .npy/.npz/.zarr, chunk by chunk, resumably"
    )
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--model")
    g.add_argument(
        "--method",
        help="nnls or lasso (the fastest certified route), or a method by name: "
        "pgd, apgd, ogd, active-set, ista, fista, oista, admm",
    )
    s.add_argument("--operator")
    s.add_argument("--input", required=True)
    s.add_argument("--key", default=None, help="array name inside an .npz input")
    s.add_argument("--output", required=True)
    s.add_argument("--lam", type=float, default=None)
    s.add_argument("--tol", type=float, default=1e-6)
    s.add_argument("--max-iter", type=int, default=10_000)
    s.add_argument(
        "--certificates",
        default=None,
        help="--model: write each problem's optimality certificate to this .npy (median and worst are printed)",
    )
    s.add_argument(
        "--refine", action="store_true", help="--model: refine the network's answers until each is certified to --tol"
    )
    s.add_argument(
        "--fast", action="store_true", help="--model: run the net through ur.fast (a fused compiled pass; CPU)"
    )
    s.add_argument("--chunk", type=int, default=65536, help="rows solved at a time (bounds the memory)")
    s.add_argument(
        "--scheduler",
        default=None,
        help="solve the chunks on a Dask cluster: a scheduler address, or 'local' (a cluster of this machine's cores)",
    )
    s.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(fn=cmd_solve)

    d = sub.add_parser("demo", help="the xie2019 Table 1 / Fig. 3 story in a few minutes")
    d.add_argument("--out", default="results/demo")
    d.add_argument("--quick", action="store_true")
    d.set_defaults(fn=cmd_demo)

    sub.add_parser("bench", help="speed against SciPy / scikit-learn, same run (unrolled bench --help)")
    return p


def _run(args) -> int:
    """Run the command; every error becomes one line on stderr and an exit status."""
    try:
        return args.fn(args)
    except Interrupted as exc:
        print(exc, file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory; use smaller data or batches (solve: --chunk)", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}", file=sys.stderr)
        return 1
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # its options belong to bench.main
        from .bench import main as bench_main

        bench_main(argv[1:])
        return 0
    return _run(build_parser().parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
