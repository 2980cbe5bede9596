"""unrolled: sparse recovery by algorithm unrolling.

Classical batched solvers (``nnls``, ``lasso``, ``ml_bp``) and the learned networks made
by unrolling their steps (``unrolled.nets``). See the README for the list and sources.
"""

from . import data, metrics, nets
from .certified import certify, refine
from .datasets import FreshSamples
from .fused import fast
from .nets import load
from .operators import (
    Conv2dOperator,
    DenseOperator,
    GaussianPSF,
    LearnedConv2d,
    LearnedDense,
    LearnedOperator,
    Operator,
    as_operator,
    learned,
)
from .problems import MLBP, NNLS, Lasso
from .solve import Result
from .solvers import lasso, ml_bp, nnls
from .training import TrainHistory, train

__version__ = "0.1.0"

__all__ = [
    "nnls",
    "lasso",
    "ml_bp",
    "train",
    "load",
    "certify",
    "refine",
    "fast",
    "nets",
    "data",
    "metrics",
    "Result",
    "TrainHistory",
    "FreshSamples",
    "NNLS",
    "Lasso",
    "MLBP",
    "Operator",
    "DenseOperator",
    "Conv2dOperator",
    "GaussianPSF",
    "as_operator",
    "LearnedOperator",
    "LearnedDense",
    "LearnedConv2d",
    "learned",
    "__version__",
]
