"""Training defaults per network family: what :func:`unrolled.train` uses for an argument left at None.

Each family has a :class:`Recipe`: Adam's base rate, batch size, epochs, gradient clipping, a
depth curriculum (``warmup``: epochs for each shallower depth 1, …, K − 1 before the whole net, as
xie2019's recipe trains its nets), and parameter groups chosen by parameter *name* (a state-dict
key prefix such as ``"a."``) with a rate factor relative to the base rate — steps and
thresholds, which the nets store as logarithms or gains of order one, move faster than the
matrices. Parameters that no group
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
    warmup: int = 0  # epochs per shallower depth trained first (see warmup_stages)


GENERIC = Recipe(lr=1e-3, batch_size=200, epochs=100, clip=1.0)
_STEPS_THRESHOLDS = ((("a.", "b."), 10.0),)  # LISTA family: log-steps α and log-thresholds β

# keyed by public class name; a class not listed takes the first listed base class's recipe.
# The xie2019 nets (tied matrices, small problems): xie-table1's recipe — lr 1e-2, large batches, no
# clipping, 1200 epochs after a depth curriculum of 50 epochs per shallower depth. From the analytic
# init the curriculum is what makes 1e-2 work (README, "Training defaults"). UPGDM / LOGD (untied,
# sen2024): sen-synthetic's recipe.
_XIE = Recipe(lr=1e-2, batch_size=1000, epochs=1200, clip=None, warmup=50)
_SEN = Recipe(lr=3e-2, batch_size=250, epochs=40, clip=None)
FAMILIES: dict[str, Recipe] = {
    "LISTAFamily": Recipe(lr=3e-3, batch_size=100, epochs=100, clip=1.0, groups=_STEPS_THRESHOLDS),
    "LPGD": _XIE,
    "LAPGD": _XIE,
    "Vanilla": _XIE,
    "UPGDM": _SEN,
    "LOGD": _SEN,
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


def warmup_stages(net, *, depth, epochs, layer_weights, params, resuming: bool) -> list[tuple[int, int]]:
    """The depth curriculum ``[(d, epochs_d) for d = 1..K−1]`` that ``ur.train`` runs before training
    the whole net: only for a family with one, when the whole net is trained (``depth`` None, no
    ``layer_weights``, no ``params``) from the start (not when resuming a checkpoint). With an
    explicit ``epochs`` each stage gets a sixth of them, at most the recipe's (no curriculum for
    fewer than 6 epochs)."""
    r = recipe_for(net)
    if not r.warmup or depth is not None or layer_weights is not None or params is not None or resuming:
        return []
    per = r.warmup if epochs is None else min(r.warmup, epochs // 6)
    return [(d, per) for d in range(1, net.depth)] if per else []


__all__ = ["Recipe", "FAMILIES", "GENERIC", "AUTO", "recipe_for", "parameter_groups", "resolve", "warmup_stages"]
