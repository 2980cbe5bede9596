"""Training defaults per network family: what :func:`unrolled.train` uses for an argument left at None.

Each family has a :class:`Recipe`: Adam's base rate, batch size, epochs, gradient clipping, and
parameter groups chosen by parameter *name* (a state-dict key prefix such as ``"a."``) with a
rate factor relative to the base rate — steps and thresholds, which the nets store as
logarithms or gains of order one, move faster than the matrices. Parameters that no group
names train at the base rate. The recipes were tuned on settings that no experiment uses
(README, "Training defaults"); the ``unrolled train`` CLI inherits them through ``ur.train``.
"""

from __future__ import annotations

from dataclasses import dataclass

AUTO = "auto"  # ``clip``'s "the family's default" (None already means "no clipping")


@dataclass(frozen=True)
class Recipe:
    """Defaults of one family. ``groups``: ((name prefixes, rate factor), ...)."""

    lr: float
    batch_size: int
    epochs: int
    clip: float | None
    groups: tuple = ()


GENERIC = Recipe(lr=1e-3, batch_size=200, epochs=100, clip=1.0)
_STEPS_THRESHOLDS = ((("a.", "b."), 10.0),)  # LISTA family: log-steps α and log-thresholds β

# keyed by public class name; a class not listed takes the first listed base class's recipe.
# The NNLS nets keep the generic recipe: on a 30×60 |N(0,1)| NNLS of our own LAPGD-3 trained with
# it is well below APGD-3, and neither lr 1e-2 (batch 1000, no clipping) nor rates scaled by each
# matrix's RMS beat it on both that setting and xie2019's (README, "Training defaults").
FAMILIES: dict[str, Recipe] = {
    "LISTAFamily": Recipe(lr=3e-3, batch_size=100, epochs=100, clip=1.0, groups=_STEPS_THRESHOLDS),
    "LPGD": Recipe(lr=1e-3, batch_size=200, epochs=100, clip=1.0),
    "LAPGD": Recipe(lr=1e-3, batch_size=200, epochs=100, clip=1.0),
    "Vanilla": Recipe(lr=1e-3, batch_size=200, epochs=100, clip=1.0),
    "UPGDM": Recipe(lr=1e-3, batch_size=200, epochs=100, clip=1.0),
    "LOGD": Recipe(lr=1e-3, batch_size=200, epochs=100, clip=1.0),
}


def recipe_for(net) -> Recipe:
    """The recipe of ``net``'s family (the first class in its MRO that :data:`FAMILIES` lists)."""
    for cls in type(net).__mro__:
        if cls.__name__ in FAMILIES:
            return FAMILIES[cls.__name__]
    return GENERIC


def parameter_groups(net, recipe: Recipe) -> list[dict]:
    """``ur.train`` groups ``{"params": [...], "lr": factor}`` from the recipe's name prefixes;
    every parameter no prefix names goes in a last group at factor 1. Empty groups are left out."""
    buckets = [[] for _ in recipe.groups] + [[]]
    for name, p in net.named_parameters():
        hit = next((i for i, (prefixes, _) in enumerate(recipe.groups) if name.startswith(prefixes)), -1)
        buckets[hit].append(p)
    factors = [f for _, f in recipe.groups] + [1.0]
    return [{"params": ps, "lr": f} for ps, f in zip(buckets, factors) if ps]


def resolve(net, *, lr, batch_size, epochs, clip, params) -> tuple:
    """``(lr, batch_size, epochs, clip, params)`` with None (``clip``: ``"auto"``) replaced by the
    family's default; explicit values pass through unchanged.

    The family's parameter groups come with its rate: with ``lr`` left at None and ``params`` at
    None every group trains at its factor × the family's rate; an explicit ``lr`` is the rate of
    every parameter (unless ``params`` gives groups), so that ``lr=0.05`` means 0.05 for a net whose
    parameters are all steps (SLISTA) too."""
    r = recipe_for(net)
    groups = parameter_groups(net, r) if params is None and lr is None else params
    return (
        r.lr if lr is None else lr,
        r.batch_size if batch_size is None else batch_size,
        r.epochs if epochs is None else epochs,
        r.clip if isinstance(clip, str) and clip == AUTO else clip,
        groups,
    )


__all__ = ["Recipe", "FAMILIES", "GENERIC", "AUTO", "recipe_for", "parameter_groups", "resolve"]
