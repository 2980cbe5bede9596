"""The papers' experiments, one module per paper, run by ``unrolled reproduce NAME``.

An experiment is a function ``run(quick: bool, out: Path, seed: int, **options) -> dict`` registered
with ``@experiment("name", paper=..., what=...)``. The options it may take, each only if its signature
names it: ``device`` (``"cpu"``/``"cuda"``), ``data`` (a dict data-set name → path, from
``--data NAME=PATH``) and ``paper`` (``True``: the paper's exact protocol, however long).
It writes ``results.json`` and PNG figures into ``out`` (through :func:`finish`) and returns the results dict, whose
``"table"`` (a list of rows, first row the header) is printed.
"""

from __future__ import annotations

import importlib
import inspect
import json
import time
from pathlib import Path

from .._threads import threads  # noqa: F401  (the experiments run their small problems on one thread)

EXPERIMENTS: dict[str, dict] = {}
MODULES = ["xie2019", "sen2024", "sulam2018", "moreau", "chen2018", "certified", "xie_smlm", "sulam_classify"]


def experiment(name: str, *, paper: str, what: str):
    def register(fn):
        EXPERIMENTS[name] = {"run": fn, "paper": paper, "what": what}
        return fn

    return register


def _load_all() -> None:
    for mod in MODULES:
        try:
            importlib.import_module(f"{__name__}.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{mod}":
                raise


def available() -> dict[str, dict]:
    _load_all()
    return dict(sorted(EXPERIMENTS.items()))


def format_table(rows) -> str:
    rows = [[f"{c:.4g}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def finish(out: Path, name: str, results: dict, figures: dict | None = None, *, started: float) -> dict:
    """Save figures (name → matplotlib Figure) as PNG and results as JSON; return results."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"experiment": name, **results, "seconds": round(time.perf_counter() - started, 2)}
    saved = []
    for fname, fig in (figures or {}).items():
        path = out / f"{fname}.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        saved.append(path.name)
    results["figures"] = saved
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float))
    return results


def _unset(value) -> bool:
    """An option left at its default: None, False (a flag) or an empty ``--data`` (0 is a value)."""
    return value is None or value is False or value == {}


def _accepted(fn, name: str, options: dict) -> dict:
    """The options that were set, refused by name when the experiment does not take them."""
    params = inspect.signature(fn).parameters
    given = {k: v for k, v in options.items() if not _unset(v)}
    for key in given:
        if key not in params:
            flag = "--" + key.replace("_", "-")
            raise ValueError(f"experiment {name!r} does not take {flag}")
    return given


def reproduce(name: str, *, quick: bool = False, out=None, seed: int = 0, **options) -> dict:
    """Run experiment ``name``; print its table and the time; return its results.

    ``options`` (``device``, ``data``, ``paper``) reach the experiment only when set, and an
    experiment that does not take a set option refuses it by name.
    """
    exps = available()
    if name not in exps:
        raise ValueError(f"unknown experiment {name!r}; available: {', '.join(exps)}")
    given = _accepted(exps[name]["run"], name, options)
    out = Path(out) if out is not None else Path("results") / name
    results = exps[name]["run"](quick=quick, out=out, seed=seed, **given)
    if results.get("table"):
        print(format_table(results["table"]))
    print(f"[{name}] {'quick' if quick else 'full'} run in {results.get('seconds', 0):.1f} s; results in {out}")
    return results
