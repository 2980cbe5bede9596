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
from pathlib import Path
import tempfile

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


def _digest(tensors: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_tensors(path, tensors: dict, meta: dict) -> None:
    """safetensors file with JSON metadata and a digest; written to a temp file then renamed."""
    from safetensors.torch import save_file
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    header = {"meta": json.dumps(meta, sort_keys=True), "digest": _digest(tensors)}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=header)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_tensors(path) -> tuple[dict, dict]:
    """Read a file written by :func:`save_tensors`; refuse a truncated or edited one."""
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
    if _digest(tensors) != header["digest"]:
        raise ValueError(f"{path} was modified after it was written (digest mismatch)")
    return tensors, json.loads(header["meta"])


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
