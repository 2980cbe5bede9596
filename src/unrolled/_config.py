"""The schema of ``unrolled train CONFIG.toml``, checked once when the config is read.

Unknown sections and keys, wrong types and unknown values are errors naming the key and
the valid choices. ``[model]`` accepts the chosen network's constructor arguments (read
from its signature), ``[data]`` the chosen generator's, ``[train]`` those of
:func:`unrolled.train` that a file can set. :func:`resolve` returns the config with every
default filled in, which is what a checkpoint records.
"""

from __future__ import annotations

import inspect
import math

DTYPES = ("float32", "float64")
SECTIONS = ("operator", "data", "model", "train")
TOP_KEYS = {"seed": "int", "out": "str"}
OPERATOR_KEYS = {"file": "str", "key": "str", "kind": "str", "m": "int", "n": "int", "seed": "int"}
# arguments of ur.train that come from elsewhere than [train]
TRAIN_SET_BY_CLI = ("net", "Y", "X", "val", "seed", "progress", "checkpoint", "resume", "params", "threads", "run")
GENERATOR_SET_BY_CLI = ("n_samples", "A", "seed", "dtype")


class ConfigError(ValueError):
    """A config that does not follow the schema (a user error)."""


def _kinds(annotation, default) -> set[str]:
    """The TOML kinds a parameter accepts, from its annotation (a string) or its default."""
    names = {
        "int": "int",
        "float": "float",
        "bool": "bool",
        "str": "str",
        "None": "none",
        "list": "list",
        "tuple": "list",
    }
    if isinstance(annotation, str) and annotation:
        kinds = {names.get(part.strip().split("[")[0]) for part in annotation.split("|")}
        if None not in kinds:
            return kinds
    if default is None or default is inspect.Parameter.empty:
        return set()  # anything
    if isinstance(default, bool):
        return {"bool"}
    if isinstance(default, (list, tuple)):
        return {"list"}
    return {type(default).__name__}


def _check_type(where: str, key: str, value, kinds: set[str]):
    if not kinds:
        return
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
        "list": isinstance(value, list),
    }
    if not any(ok.get(k, False) for k in kinds):
        want = " or ".join(
            sorted("number" if k == "float" else "integer" if k == "int" else k for k in kinds if k != "none")
        )
        raise ConfigError(f"{where}{key} must be {want}, got {value!r}")


def _check_keys(where: str, table, allowed: dict) -> dict:
    if not isinstance(table, dict):
        raise ConfigError(f"{where or 'config'} must be a table, got {table!r}")
    for key, value in table.items():
        if key not in allowed:
            raise ConfigError(f"unknown key {where}{key}; valid keys: {', '.join(sorted(allowed)) or 'none'}")
        _check_type(where, key, value, allowed[key])
    return table


def _signature_kinds(fn, skip) -> dict:
    """{parameter name: accepted kinds} of ``fn``, following ``**kwargs`` into base classes' __init__."""
    out = {}
    targets = [c.__init__ for c in fn.__mro__ if "__init__" in vars(c)] if isinstance(fn, type) else [fn]
    for target in targets:
        params = list(inspect.signature(target).parameters.values())
        if isinstance(fn, type):
            params = params[2:]  # self, the operator
        for p in params:
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name not in skip and p.name not in out:
                out[p.name] = _kinds(p.annotation, p.default)
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return out


def _choice(where: str, key: str, value, options):
    if value not in options:
        raise ConfigError(f"{where}{key} = {value!r} is not one of {', '.join(map(repr, options))}")


def _operator(cfg: dict) -> dict:
    from .data import OPERATORS

    op = _check_keys("[operator] ", cfg, {k: {v} for k, v in OPERATOR_KEYS.items()})
    if "file" in op:
        extra = sorted(set(op) - {"file", "key"})
        if extra:
            raise ConfigError(f"[operator] file = ... takes no {', '.join(extra)}")
    elif "kind" in op:
        _choice("[operator] ", "kind", op["kind"], OPERATORS)
        missing = [k for k in ("m", "n") if k not in op]
        if missing:
            raise ConfigError(f"[operator] kind = {op['kind']!r} needs {' and '.join(missing)}")
        for k in ("m", "n"):
            if op[k] <= 0:
                raise ConfigError(f"[operator] {k} must be a positive integer, got {op[k]!r}")
    elif op:
        raise ConfigError(
            "[operator] needs file = \"A.npy\" or kind = " + "|".join(map(repr, OPERATORS)) + " with m, n"
        )
    return op


def _data(cfg: dict) -> dict:
    from .data import GENERATORS

    counts = {"n_train": {"int"}, "n_val": {"int"}}
    if not isinstance(cfg, dict):
        raise ConfigError(f"[data] must be a table, got {cfg!r}")
    if "file" in cfg and "path" in cfg:
        raise ConfigError("[data] takes file = ... (an .npz read whole) or path = ... (a .npy memory-mapped), not both")
    if "file" in cfg:
        data = dict(_check_keys("[data] ", cfg, {"file": {"str"}, "n_val": {"int"}}))
    elif "path" in cfg:
        data = dict(_check_keys("[data] ", cfg, {"path": {"str"}, "targets": {"str"}, "n_val": {"int"}}))
        for key in ("path", "targets"):
            if key in data and not data[key].endswith(".npy"):
                raise ConfigError(f"[data] {key} must name a .npy file (it is read memory-mapped), got {data[key]!r}")
    else:
        if "generator" not in cfg:
            raise ConfigError(
                "[data] needs file = \"data.npz\", path = \"Y.npy\" or generator = "
                + "|".join(map(repr, sorted(GENERATORS)))
            )
        _choice("[data] ", "generator", cfg["generator"], sorted(GENERATORS))
        allowed = {
            "generator": {"str"},
            "fresh": {"bool"},
            **counts,
            **_signature_kinds(GENERATORS[cfg["generator"]], GENERATOR_SET_BY_CLI),
        }
        data = {"n_train": 1000, "n_val": 200, **_check_keys("[data] ", cfg, allowed)}
        if data["n_train"] < 1:
            raise ConfigError(f"[data] n_train must be a positive integer, got {data['n_train']!r}")
    if data.get("n_val", 0) < 0:
        raise ConfigError(f"[data] n_val must be an integer >= 0, got {data['n_val']!r}")
    return data


def _model(cfg: dict) -> dict:
    from .nets import NETS

    if not isinstance(cfg, dict):
        raise ConfigError(f"[model] must be a table, got {cfg!r}")
    names = sorted(n for n in NETS if not n.startswith("_"))
    if "name" not in cfg:
        raise ConfigError(f"[model] needs name = one of {', '.join(names)}")
    _choice("[model] ", "name", cfg["name"], names)
    allowed = {"name": {"str"}, "dtype": {"str"}, **_signature_kinds(NETS[cfg["name"]], ())}
    model = {"dtype": "float32", **_check_keys("[model] ", cfg, allowed)}
    _choice("[model] ", "dtype", model["dtype"], DTYPES)
    return model


def _train(cfg: dict) -> dict:
    from .training import LOSSES, train

    allowed = _signature_kinds(train, TRAIN_SET_BY_CLI)
    tcfg = dict(_check_keys("[train] ", cfg, allowed))
    if "loss" in tcfg:
        _choice("[train] ", "loss", tcfg["loss"], LOSSES)
    if "schedule" in tcfg:
        _choice("[train] ", "schedule", tcfg["schedule"], ("cosine", "none"))
    return tcfg


def resolve(cfg: dict) -> dict:
    """Check ``cfg`` (a parsed TOML config) against the schema; return it with defaults filled in.

    Raises
    ------
    ConfigError
        Naming the first key that is unknown, of the wrong type, or has an unknown value.
    """
    for key, value in cfg.items():
        if key in SECTIONS:
            continue
        if key not in TOP_KEYS:
            raise ConfigError(f"unknown key or section {key!r}; valid: {', '.join(list(TOP_KEYS) + list(SECTIONS))}")
        _check_type("", key, value, {TOP_KEYS[key]})
    if "model" not in cfg:
        raise ConfigError("the config needs a [model] section")
    return {
        "seed": cfg.get("seed", 0),
        **({"out": cfg["out"]} if "out" in cfg else {}),
        "operator": _operator(cfg.get("operator", {})),
        "data": _data(cfg.get("data", {})),
        "model": _model(cfg["model"]),
        "train": _train(cfg.get("train", {})),
    }
