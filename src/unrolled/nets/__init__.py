"""Unrolled networks: each layer is one solver step with its parameters made trainable.

Every class registers itself in ``NETS`` (by class name) so that ``unrolled.load`` can
rebuild it from a saved file.
"""
from .base import NETS, UnrolledNet, load
from .nnls import LAPGD, LOGD, LPGD, UPGDM, Vanilla
from .lista import ALISTA, LISTA, LISTA_CP, SLISTA, LISTAFamily

__all__ = ["NETS", "UnrolledNet", "load", "LPGD", "LAPGD", "Vanilla", "UPGDM", "LOGD", "LISTA", "LISTA_CP",
           "ALISTA", "SLISTA", "LISTAFamily"]
