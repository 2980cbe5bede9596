"""Unrolled networks: each layer is one solver step with its parameters made trainable.

Every public class registers itself in ``NETS`` (by class name) so that ``unrolled.load`` can
rebuild it from a saved file; every registered class of these modules is exported here.
"""

from . import lista, mlbp, nnls  # noqa: F401  (importing a module registers its nets)
from .base import NETS, UnrolledNet, load
from .bounds import DepthBound, depth_bound, hoffman_theta
from .classifier import Classifier
from .mlbp import conv_dictionaries, rho_schedule

globals().update({name: cls for name, cls in NETS.items() if cls.__module__.startswith(__name__)})
__all__ = [
    "NETS",
    "Classifier",
    "DepthBound",
    "UnrolledNet",
    "conv_dictionaries",
    "depth_bound",
    "hoffman_theta",
    "load",
    "rho_schedule",
    *NETS,
]
