"""The base of every unrolled network: depth copies of a solver step, tied to an operator.

A subclass builds its parameters in ``__init__`` and yields one iterate per layer in
``iterates(Y)``. The base validates inputs, remembers the operator (its matrix as a
buffer and a fingerprint), and saves/loads itself as safetensors + JSON metadata,
written atomically and checked by a digest on load. Loading never unpickles.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from .._validate import as_batch, positive_int
from ..operators import DenseOperator, as_operator

NETS: dict[str, type] = {}
FORMAT = "unrolled-net/1"


class UnrolledNet(nn.Module):
    """``depth`` layers, layer k computing iterate k of the unrolled algorithm.

    Subclasses call ``super().__init__(A, depth, problem, **config)`` where ``config`` holds
    the JSON-serialisable constructor arguments (everything but ``A``), and define
    ``iterates(Y, depth)`` yielding x₁, …, x_depth for a (batch, m) tensor ``Y``.
    """

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        NETS[cls.__name__] = cls

    def __init__(self, A, depth: int, problem=None, **config):
        super().__init__()
        op = as_operator(A)
        if not isinstance(op, DenseOperator):
            op = DenseOperator(op.matrix())
        self.op = op
        self.depth = positive_int(depth, "depth")
        self.problem = problem
        self.config = {"depth": self.depth, **config}
        self.register_buffer("operator", op.A.detach().clone())
        self.fingerprint = op.fingerprint()

    @property
    def m(self) -> int:
        return self.op.m

    @property
    def n(self) -> int:
        return self.op.n

    def iterates(self, Y: torch.Tensor, depth: int):  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, Y, *, depth: int | None = None, return_all: bool = False):
        """x̂ = the last layer's output for rows ``Y`` (batch, m); a vector gives a vector.

        ``depth`` runs only the first layers (nested networks); ``return_all`` returns the
        list of every layer's output.
        """
        depth = self.depth if depth is None else positive_int(depth, "depth")
        if depth > self.depth:
            raise ValueError(f"depth {depth} exceeds the network's {self.depth} layers")
        Y_t, kind = as_batch(Y, "Y", dtype=self.operator.dtype, device=self.operator.device)
        if Y_t.shape[1] != self.m:
            raise ValueError(f"Y has {Y_t.shape[1]} entries per signal but this {type(self).__name__} was built for an "
                             f"operator with m={self.m} (fingerprint {self.fingerprint})")
        outs = list(self.iterates(Y_t, depth))
        if isinstance(Y, torch.Tensor):
            outs = [o[0] if kind.vector else o for o in outs]
        else:
            outs = [kind.restore(o) for o in outs]
        return outs if return_all else outs[-1]

    def check_operator(self, A) -> None:
        """Raise ValueError unless ``A`` is the operator this network was built for."""
        op = as_operator(A)
        if not isinstance(op, DenseOperator):
            op = DenseOperator(op.matrix())
        if op.shape != self.op.shape or op.fingerprint() != self.fingerprint:
            raise ValueError(f"this {type(self).__name__} was trained for operator {self.fingerprint} "
                             f"{self.op.shape}, not {op.fingerprint()} {op.shape}")

    # -- persistence ----------------------------------------------------
    def metadata(self) -> dict:
        import unrolled
        return {"format": FORMAT, "class": type(self).__name__, "config": self.config,
                "fingerprint": self.fingerprint, "shape": list(self.op.shape),
                "versions": {"unrolled": unrolled.__version__, "torch": torch.__version__}}

    def save(self, path, extra: dict | None = None) -> Path:
        """Write weights (safetensors) and metadata atomically to ``path``."""
        meta = self.metadata()
        if extra:
            meta["extra"] = extra
        save_tensors(path, self.state_dict(), meta)
        return Path(path)


DIGEST_COVERS = "tensors+meta"   # header["covers"]; files without it (before 0.2) digest the tensors only
MAX_DEPTH = 100_000


def _digest(tensors: dict, meta_json: str | None = None) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, then the metadata's JSON text."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    if meta_json is not None:
        h.update(b"\0meta\0")
        h.update(meta_json.encode())
    return h.hexdigest()


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def remove_stale_temps(path) -> None:
    """Remove the temporary files a killed :func:`save_tensors` of ``path`` left behind."""
    path = Path(path)
    if path.parent.is_dir():
        for tmp in path.parent.glob(f"{_temp_prefix(path)}*.tmp"):
            tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_tensors(path, tensors: dict, meta: dict) -> None:
    """safetensors file with JSON metadata and a digest over both; written to a temp file
    (mode 0666 less the umask, like other outputs), synced, then renamed over ``path``."""
    from safetensors.torch import save_file
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta_json = json.dumps(meta, sort_keys=True)
    header = {"meta": meta_json, "digest": _digest(tensors, meta_json), "covers": DIGEST_COVERS}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=header)
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _check_meta(path: Path, meta) -> dict:
    """Refuse metadata whose shape no unrolled version writes (it would build the wrong thing)."""
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: metadata is not a JSON object")
    model = meta.get("model", meta)  # a checkpoint nests the model's metadata
    if not isinstance(model, dict):
        raise ValueError(f"{path}: metadata 'model' is not a JSON object")
    for key, kind in (("format", str), ("class", str), ("fingerprint", str), ("config", dict), ("shape", list)):
        if key in model and not isinstance(model[key], kind):
            raise ValueError(f"{path}: metadata {key!r} must be a {kind.__name__}, got {model[key]!r}")
        if key not in model and "format" in model:  # a network's metadata has them all
            raise ValueError(f"{path}: metadata has no {key!r}")
    depth = model.get("config", {}).get("depth", 1)
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_DEPTH:
        raise ValueError(f"{path}: metadata depth must be an integer in [1, {MAX_DEPTH}], got {depth!r}")
    return meta


def load_tensors(path) -> tuple[dict, dict]:
    """Read a file written by :func:`save_tensors`; refuse a truncated or edited one.

    The digest covers the tensors and the metadata (files from before 0.2, marked by the
    absence of ``covers`` in the header, cover the tensors only and are checked for that).
    """
    from safetensors import safe_open
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:
        raise ValueError(f"{path} is not a readable unrolled file (truncated or corrupted): {exc}") from None
    if "meta" not in header or "digest" not in header:
        raise ValueError(f"{path} has no unrolled metadata; was it written by unrolled?")
    covers = header.get("covers")
    if covers not in (None, DIGEST_COVERS):
        raise ValueError(f"{path}: unknown digest kind {covers!r} (written by a newer unrolled?)")
    expected = _digest(tensors, header["meta"] if covers else None)
    if expected != header["digest"]:
        raise ValueError(f"{path} was modified after it was written (digest mismatch)")
    try:
        meta = json.loads(header["meta"])
    except ValueError:
        raise ValueError(f"{path}: its metadata is not valid JSON") from None
    return tensors, _check_meta(path, meta)


def load(path, *, map_location=None) -> UnrolledNet:
    """Rebuild a network saved with ``net.save(path)``: same class, config and weights."""
    tensors, meta = load_tensors(path)
    if meta.get("format") != FORMAT or meta.get("class") not in NETS:
        raise ValueError(f"{path}: unknown model format/class {meta.get('format')!r}/{meta.get('class')!r}")
    A = tensors["operator"]
    net = NETS[meta["class"]](A, **meta["config"])
    net.load_state_dict(tensors, strict=True)
    if net.fingerprint != meta["fingerprint"]:
        raise ValueError(f"{path}: operator fingerprint mismatch")
    if map_location is not None:
        net.to(map_location)
    return net
