"""A linear classifier on the deepest representation of an unrolled net (sulam2018 §4: "a final
fully-connected layer as a classifier"; Sulam talk, "Supervised Learning Formulation").

``Classifier(net, n_classes)`` maps signals y to logits W vec(γ̂_L(y)) + c, γ̂_L the net's output
(the codes of its deepest layer, flattened). Trained by ``ur.train(clf, Y, labels,
loss="cross-entropy")``; saved with ``clf.save(path)`` and rebuilt by ``unrolled.load(path)`` like
every other net (the inner net's tensors under ``net.``, the head's under ``head.``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._validate import positive_int
from .base import UnrolledNet, from_tensors, save_tensors


class Classifier(nn.Module):
    """Logits ``head(vec(net(Y)))`` for a batch of signals.

    Parameters
    ----------
    net : UnrolledNet
        The representation, e.g. a non-negative convolutional :class:`~unrolled.nets.MLISTANet`.
    n_classes : int
        Number of classes, at least 2.
    seed : int
        Seed of the head's initial weights, i.i.d. U(−1/√n, 1/√n) with n the length of a code
        (torch's default for a linear layer).

    Returns
    -------
    ``clf(Y, depth=None)``: logits of shape (batch, n_classes) for signals Y (batch, m) or images
    (batch, *net.op.out_shape).
    """

    def __init__(self, net, n_classes: int, *, seed: int = 0):
        super().__init__()
        if not isinstance(net, UnrolledNet):
            raise TypeError(f"net must be an unrolled network, got {type(net).__name__}")
        n_classes = positive_int(n_classes, "n_classes")
        if n_classes < 2:
            raise ValueError(f"n_classes must be at least 2, got {n_classes}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        self.net, self.n_classes, self.seed = net, n_classes, seed
        self.head = nn.Linear(net.n, n_classes, dtype=net.dtype, device=net.op.device)
        gen = torch.Generator().manual_seed(seed)
        bound = 1.0 / net.n**0.5
        with torch.no_grad():
            for p in (self.head.weight, self.head.bias):
                p.copy_((2 * torch.rand(p.shape, generator=gen, dtype=torch.float64) - 1) * bound)

    # -- what ur.train reads of a model ----------------------------------------------------------
    @property
    def m(self) -> int:
        return self.net.m

    @property
    def n(self) -> int:
        """The output length: one logit per class."""
        return self.n_classes

    @property
    def depth(self) -> int:
        return self.net.depth

    @property
    def dtype(self) -> torch.dtype:
        return self.net.dtype

    @property
    def operator(self):
        return self.net.operator

    @property
    def problem(self):
        return None

    @property
    def fingerprint(self) -> str:
        return self.net.fingerprint

    @property
    def config(self) -> dict:
        return {
            "n_classes": self.n_classes,
            "seed": self.seed,
            "net": {"class": type(self.net).__name__, "config": self.net.config},
        }

    # -- running ----------------------------------------------------------------------------------
    def forward(self, Y, *, depth: int | None = None) -> torch.Tensor:
        if not isinstance(Y, torch.Tensor):
            Y = torch.as_tensor(np.asarray(Y))
        codes = self.net(Y, depth=depth)
        return self.head(codes.reshape(codes.shape[0], -1))

    def predict(self, Y, *, depth: int | None = None) -> torch.Tensor:
        """The most likely class of each signal, int64 of shape (batch,)."""
        with torch.no_grad():
            return self(Y, depth=depth).argmax(1)

    # -- persistence ------------------------------------------------------------------------------
    def metadata(self) -> dict:
        meta = self.net.metadata()
        meta.update({"class": "Classifier", "config": self.config, "shape": [self.m, self.n_classes]})
        return meta

    def save(self, path, extra: dict | None = None) -> Path:
        """Write weights (safetensors) and metadata atomically to ``path`` (``unrolled.load`` reads it)."""
        meta = self.metadata()
        if extra:
            meta["extra"] = extra
        save_tensors(path, self.state_dict(), meta)
        return Path(path)

    @classmethod
    def from_tensors(cls, tensors: dict, meta: dict, path) -> Classifier:
        """Rebuild a saved classifier: its inner net by :func:`unrolled.nets.base.from_tensors`, then the head."""
        config = meta["config"]
        inner = config.get("net") if isinstance(config.get("net"), dict) else None
        if inner is None or not {"class", "config"} <= set(inner):
            raise ValueError(f"{path}: a Classifier's metadata needs config.net with 'class' and 'config'")
        inner_meta = {**meta, "class": inner["class"], "config": inner["config"]}
        inner_tensors = {k[4:]: v for k, v in tensors.items() if k.startswith("net.")}
        net = from_tensors(inner_tensors, inner_meta, path)
        clf = cls(net, config["n_classes"], seed=config.get("seed", 0))
        head = {k[5:]: v for k, v in tensors.items() if k.startswith("head.")}
        unknown = sorted(set(tensors) - {f"net.{k}" for k in inner_tensors} - {f"head.{k}" for k in head})
        if unknown:
            raise ValueError(f"{path}: unexpected tensors in a Classifier file: {unknown[:4]}")
        clf.head.load_state_dict(head, strict=True)
        return clf


__all__ = ["Classifier"]
