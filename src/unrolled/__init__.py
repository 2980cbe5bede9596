"""unrolled: sparse recovery by algorithm unrolling.

Classical batched solvers (``nnls``, ``lasso``, ``ml_bp``) and the learned networks made
by unrolling their steps (``unrolled.nets``). See the README for the list and sources.
"""
from .operators import Conv2dOperator, DenseOperator, Operator, as_operator
from .problems import NNLS, Lasso
from .solve import Result
from .solvers import lasso, nnls
from . import data, nets
from .nets import load
from .train import TrainHistory, train

__version__ = "0.1.0"

__all__ = ["nnls", "lasso", "nets", "load", "train", "TrainHistory", "Result", "NNLS", "Lasso", "Operator", "DenseOperator", "Conv2dOperator",
           "as_operator", "__version__"]

# multi-layer basis pursuit (sulam2018)
from .problems import MLBP  # noqa: E402
from .algorithms.mlbp import ml_bp  # noqa: E402

__all__ += ["ml_bp", "MLBP"]
