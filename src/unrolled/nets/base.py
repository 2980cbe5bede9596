"""The base of every unrolled network: depth copies of a solver step, on any operator.

A subclass builds its parameters in ``__init__`` and yields one iterate per layer in
``iterates(Y, depth)`` (the network contract, :class:`unrolled.protocols.Network`). The base
validates inputs, holds the operator (``net.op``) and the problem (``net.problem``) so that both
follow ``.to()``/``.double()``, offers the shared per-layer parameter lists and initialisations,
and saves/loads itself as safetensors + JSON metadata, written atomically and checked by a digest
on load. Loading never unpickles.

The operator is stored in the state dict: a dense matrix as the buffer ``operator`` (the format of
every file saved so far), another fixed operator as the buffers of ``operator`` (its ``spec()``
tensors), a learned operator as the submodule ``operator`` (its weights are the net's parameters).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from .. import operators
from .._validate import as_batch, choice, positive_int
from ..operators import DenseOperator, as_operator

NETS: dict[str, type] = {}
FORMAT = "unrolled-net/1"


class _SpecBuffers(nn.Module):
    """The tensors of a fixed operator's ``spec()`` as buffers (so they follow ``.to()`` and save)."""

    def __init__(self, tensors: dict):
        super().__init__()
        for name, value in tensors.items():
            self.register_buffer(name, value.detach().clone())

    @property
    def dtype(self) -> torch.dtype:
        return next(self.buffers()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.buffers()).device


def _is_learned(op) -> bool:
    return isinstance(op, nn.Module)


class UnrolledNet(nn.Module):
    """``depth`` layers, layer k computing iterate k of the unrolled algorithm.

    Subclasses call ``super().__init__(operator, depth, problem, init=init, tied=tied, **config)``
    where ``config`` holds the other JSON-serialisable constructor arguments, and define
    ``iterates(Y, depth)`` yielding x₁, …, x_depth for a (batch, m) tensor ``Y``.

    Parameters
    ----------
    operator : Operator or array (m, n)
        The forward operator A; any :class:`~unrolled.operators.Operator` (never densified here).
    depth : int
        Number of layers K.
    problem : object with ``objective`` / ``certificate`` and an ``op`` attribute
        The problem the net approximates (``NNLS(op)``, ``Lasso(op, λ)``); rebuilt on the moved
        operator by ``.to()`` / ``.double()``.
    init : str
        "analytic" (the solver's parameters) or one of ``INITS`` the class allows.
    tied : bool
        One set of weights shared by every layer, or one per layer.
    seed : int
        Seed of the random initialisations.
    """

    INITS: tuple = ("analytic",)
    TIE_OPTION = False  # whether ``tied`` is a constructor argument (saved in the config)

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if not cls.__name__.startswith("_"):
            NETS[cls.__name__] = cls

    def __init__(
        self, operator, depth: int, problem, *, init: str = "analytic", tied: bool = False, seed: int = 0, **config
    ):
        super().__init__()
        choice(init, "init", self.INITS)
        if not isinstance(tied, bool):
            raise TypeError(f"tied must be True or False, got {tied!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        op = as_operator(operator)
        self.depth = positive_int(depth, "depth")
        self.init, self.tied = init, tied
        self._gen = torch.Generator().manual_seed(seed)
        if self.TIE_OPTION:
            config["tied"] = tied
        if len(self.INITS) > 1:  # (a class with one init keeps the config of its older files)
            config.update(init=init, seed=seed)
        self.config = {"depth": self.depth, **config}
        if isinstance(op, DenseOperator):
            self.register_buffer("operator", op.A.detach().clone())
        else:
            op_config, tensors = op.spec()
            self.config["operator"] = op_config
            self.operator = op if _is_learned(op) else _SpecBuffers(tensors)
        self.fingerprint = op.fingerprint()  # a learned operator: that of its initial weights
        self.problem = problem
        self._bind(op)

    def _bind(self, old) -> None:
        """Make ``net.op`` the operator held by the net's own state (a buffer, a learned module) and
        ``net.problem`` a copy of the problem on it, so both follow ``.to()`` / ``.double()``."""
        self.__dict__["op"] = self._rebuilt_operator(old)  # not a second registration of a learned operator
        if self.problem is not None:
            self.problem = copy.copy(self.problem)
            self.problem.op = self.op

    # -- the operator, following .to() / .double() ----------------------------------------------
    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        if "op" in self.__dict__:
            self._bind(self.op)
        return out

    def _rebuilt_operator(self, old):
        if _is_learned(old):
            return old
        if isinstance(old, DenseOperator):
            op = DenseOperator(self.operator)
        else:
            op = operators.from_spec(self.config["operator"], dict(self.operator.named_buffers()))
        op._lipschitz = old._lipschitz
        return op

    @property
    def m(self) -> int:
        return self.op.m

    @property
    def n(self) -> int:
        return self.op.n

    @property
    def dtype(self) -> torch.dtype:
        return self.op.dtype

    def dense(self) -> DenseOperator:
        """The operator as a dense matrix, for the parametrizations that need one (LISTA's W_e, LPGD's W)."""
        if isinstance(self.op, DenseOperator):
            return self.op
        op = DenseOperator(self.op.matrix().detach())
        op._lipschitz = self.op.lipschitz
        return op

    # -- per-layer parameters ---------------------------------------------------------------------
    def layer_list(self, make, untied: int | None = None) -> nn.ParameterList:
        """One parameter (tied) or ``untied`` (default: depth) of them, the i-th ``make(i)``.

        Untied weights that act on x₀ = 0 would never be used, so e.g. LPGD keeps
        depth − 1 matrices W (layers 2..K) and depth matrices S.
        """
        count = 1 if self.tied else (self.depth if untied is None else untied)
        return nn.ParameterList([nn.Parameter(make(i)) for i in range(count)])

    def check_layer(self, t: int) -> None:
        """Raise ValueError unless 0 ≤ t < depth."""
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < self.depth:
            raise ValueError(f"layer {t!r} out of range for depth {self.depth}")

    def at(self, plist: nn.ParameterList, i: int) -> torch.Tensor:
        """Layer i's entry of a list made by :meth:`layer_list`."""
        return plist[0] if self.tied else plist[i]

    def initial(self, analytic: torch.Tensor, *, symmetric: bool = False, random_scale: float = 1.0) -> torch.Tensor:
        """The starting value of a weight whose analytic value is ``analytic``, by ``self.init``:

        "analytic" — a copy; "paper" — xie2019 §3.1, i.i.d. U[0, 0.001], mirrored from the upper
        triangle when ``symmetric``; "random" — i.i.d. N(0, 1/fan_in) times ``random_scale``.
        """
        rows, cols = analytic.shape
        if self.init == "analytic":
            return analytic.detach().clone()
        if self.init == "paper":
            R = torch.rand(rows, cols, generator=self._gen, dtype=torch.float64) * 1e-3
            if symmetric:
                R = torch.triu(R) + torch.triu(R, 1).T
        else:
            R = torch.randn(rows, cols, generator=self._gen, dtype=torch.float64) / cols**0.5 * random_scale
        return R.to(dtype=analytic.dtype, device=analytic.device)

    def scalar(self, value: float) -> torch.Tensor:
        return torch.tensor(float(value), dtype=self.dtype, device=self.op.device)

    # -- running --------------------------------------------------------------------------------
    def iterates(self, Y: torch.Tensor, depth: int):  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, Y, *, depth: int | None = None, return_all: bool = False):
        """x̂ = the last layer's output for rows ``Y`` (batch, m); a vector gives a vector.

        When the operator's ``out_shape`` is an image shape (C, H, W), ``Y`` may be a batch of
        images (batch, C, H, W); the outputs then have shape (batch, *in_shape).
        ``depth`` runs only the first layers (nested networks); ``return_all`` returns the
        list of every layer's output.
        """
        depth = self.depth if depth is None else positive_int(depth, "depth")
        if depth > self.depth:
            raise ValueError(f"depth {depth} exceeds the network's {self.depth} layers")
        out_shape = tuple(getattr(self.op, "out_shape", (self.m,)))
        images = len(out_shape) > 1 and len(Y.shape) == 1 + len(out_shape) and tuple(Y.shape[1:]) == out_shape
        Y_in = Y.reshape(Y.shape[0], -1) if images else Y
        Y_t, kind = as_batch(Y_in, "Y", dtype=self.dtype, device=self.op.device)
        if Y_t.shape[1] != self.m:
            raise ValueError(
                f"Y has {Y_t.shape[1]} entries per signal but this {type(self).__name__} was built for an "
                f"operator with m={self.m} (fingerprint {self.fingerprint})"
            )
        outs = list(self.iterates(Y_t, depth))
        if images:
            outs = [o.reshape(o.shape[0], *self.op.in_shape) for o in outs]
        if isinstance(Y, torch.Tensor):
            outs = [o[0] if kind.vector else o for o in outs]
        else:
            outs = [kind.restore(o) for o in outs]
        return outs if return_all else outs[-1]

    def certify(self, Y, X=None):
        """The problem's certificate and objective of the answer ``X`` (default: ``self(Y)``) for each row
        of ``Y``: :func:`unrolled.certified.certify`."""
        from ..certified import certify

        return certify(self, Y, X)

    def check_operator(self, A) -> None:
        """Raise ValueError unless ``A`` is the operator this network was built for."""
        op = as_operator(A)
        if op.shape != self.op.shape or op.fingerprint() != self.fingerprint:
            raise ValueError(
                f"this {type(self).__name__} was trained for operator {self.fingerprint} "
                f"{self.op.shape}, not {op.fingerprint()} {op.shape}"
            )

    # -- persistence ----------------------------------------------------
    def metadata(self) -> dict:
        import unrolled

        return {
            "format": FORMAT,
            "class": type(self).__name__,
            "config": self.config,
            "fingerprint": self.fingerprint,
            "shape": list(self.op.shape),
            "versions": {"unrolled": unrolled.__version__, "torch": torch.__version__},
        }

    def save(self, path, extra: dict | None = None) -> Path:
        """Write weights (safetensors) and metadata atomically to ``path``."""
        meta = self.metadata()
        if extra:
            meta["extra"] = extra
        save_tensors(path, self.state_dict(), meta)
        return Path(path)


DIGEST_COVERS = "tensors+meta"  # header["covers"]; files without it (before 0.2) digest the tensors only
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


def _saved_operator(tensors: dict, config: dict):
    """The operator a saved net was built on: the dense buffer ``operator`` (every older file), else
    the operator's spec (its config in ``config["operator"]``, its tensors under ``operator.``)."""
    if "operator" in tensors:
        return DenseOperator(tensors["operator"])
    # a spec names its tensors by their last name component (a learned transpose holds "base.weight")
    spec = {k.rsplit(".", 1)[-1]: v for k, v in tensors.items() if k.startswith("operator.")}
    return operators.from_spec(config.pop("operator"), spec)


def load(path, *, map_location=None) -> UnrolledNet:
    """Rebuild a network saved with ``net.save(path)``: same class, config, operator and weights.

    Parameters
    ----------
    path : str or Path
        A file written by ``net.save``.
    map_location : torch device, optional
        Where to move the loaded network.

    Returns
    -------
    UnrolledNet or Classifier
        The network, of the saved class (a :class:`~unrolled.nets.classifier.Classifier` with its net).
    """
    tensors, meta = load_tensors(path)
    if meta.get("class") == "Classifier":  # a net with a linear head (nets/classifier.py)
        from .classifier import Classifier

        net = Classifier.from_tensors(tensors, meta, path)
    else:
        net = from_tensors(tensors, meta, path)
    if map_location is not None:
        net.to(map_location)
    return net


def from_tensors(tensors: dict, meta: dict, path) -> UnrolledNet:
    """The network of a saved file's tensors and metadata (as read by :func:`load_tensors`)."""
    if meta.get("format") != FORMAT or meta.get("class") not in NETS:
        raise ValueError(f"{path}: unknown model format/class {meta.get('format')!r}/{meta.get('class')!r}")
    config = dict(meta["config"])
    op = _saved_operator(tensors, config)
    net = NETS[meta["class"]](op, **config)
    if _is_learned(op):  # built from the trained weights; the net belongs to the operator it started from
        net.fingerprint = meta["fingerprint"]
    net.load_state_dict(tensors, strict=True)
    if net.fingerprint != meta["fingerprint"]:
        raise ValueError(f"{path}: operator fingerprint mismatch")
    return net
