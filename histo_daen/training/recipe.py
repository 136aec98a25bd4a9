"""The training recipe follows the start: the paper's ImageNet fine-tuning recipe, or one that trains from scratch.

The reference code (SEAM ``train_SEAM.py``, reference.md 1.3 and 3.4) fine-tunes ImageNet weights: every BatchNorm
frozen (eval mode, affine without gradient), the stem frozen, SGD whose momentum is the accidental 5e-4, DAEN's CSM
as coded. From random weights that recipe does not learn: frozen BatchNorm keeps the statistics of its random
initialisation, a frozen stem stays random, and SGD without momentum barely moves in a few hundred steps (the
classification loss stays at chance). Fields a config leaves null are therefore decided here, by the start:

=========================  ============  ==============  =================================================
field                      reference     scratch         why
=========================  ============  ==============  =================================================
``model.freeze_batchnorm``  true          false           BatchNorm must learn statistics of the tissue
``model.freeze_stem``       true          false           the first layers must learn too
``optim.momentum``          5e-4          0.9             textbook SGD; 5e-4 is a bug of the reference code
``model.attention_form``    reference     residual        see below
=========================  ============  ==============  =================================================

DAEN's spatial gate (one class-agnostic multiplier in [0, 1] per pixel) lets the equivariant loss sharpen every CAM
at no cost in classification while features are random: max-normalised CAMs that shrink onto a few peaks agree
between the two branches trivially. ``residual`` attention multiplies by ``1 + weight`` instead (CBAM inside a
residual branch), so no weight can take a pixel below its own features. It was chosen on the validation split
among eight measured candidates (README, "DAEN from random weights"): from random weights the reference form's CAM
coverage falls to about 3 %, the residual form's stays above 20 % on every seed.

``recipe: auto`` (the default) is ``reference`` when ``pretrained`` names external weights (ImageNet, a SEAM or
MLPS checkpoint, a torchvision state dict), and ``scratch`` without weights; a histo-daen checkpoint passes on the
recipe of the run that wrote it (a plain CAM classifier trained from scratch gives ``scratch``). A resumed run
keeps its stored recipe. Fields the config sets explicitly are never changed, and the resolved values are what
``config.yaml`` and the checkpoints record.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from histo_daen.config.schema import TrainConfig
from histo_daen.models.checkpoint import peek_run_config

__all__ = ["RECIPES", "Recipe", "recipe_for_start", "resolve_recipe"]

Recipe = Literal["reference", "scratch"]

# Values of the fields a config may leave null, per recipe ("section.field" -> value).
RECIPES: dict[str, dict[str, Any]] = {
    "reference": {
        "model.freeze_batchnorm": True,
        "model.freeze_stem": True,
        "model.attention_form": "reference",
        "optim.momentum": 5e-4,
    },
    "scratch": {
        "model.freeze_batchnorm": False,
        "model.freeze_stem": False,
        "model.attention_form": "residual",
        "optim.momentum": 0.9,
    },
}


def recipe_for_start(pretrained: Path | None) -> tuple[Recipe, str]:
    """The recipe ``auto`` means for a start, and why, in words for the log.

    Args:
        pretrained: the ``pretrained`` weights file, or None for random weights.

    Returns:
        ("reference" | "scratch", reason).
    """
    if pretrained is None:
        return "scratch", "no pretrained weights: the backbone starts from random weights"
    stored = peek_run_config(pretrained)
    if stored is None:
        return "reference", f"{pretrained} holds external pretrained weights (ImageNet, SEAM, MLPS or torchvision)"
    recipe = stored.get("recipe")
    if recipe == "reference" or recipe == "scratch":
        return recipe, f"{pretrained} is a histo-daen checkpoint trained with the {recipe} recipe"
    # Checkpoints written before the recipe existed: a run that trained BatchNorm started from scratch.
    model = stored.get("model")
    frozen = model.get("freeze_batchnorm", True) if isinstance(model, Mapping) else True
    inferred: Recipe = "reference" if frozen else "scratch"
    return inferred, f"{pretrained} is a histo-daen checkpoint whose run {'froze' if frozen else 'trained'} BatchNorm"


def resolve_recipe(cfg: TrainConfig, *, stored_recipe: str | None = None) -> tuple[TrainConfig, str]:
    """``cfg`` with ``recipe`` decided and every null field of :data:`RECIPES` set from it.

    Args:
        cfg: the requested config.
        stored_recipe: the recipe of the run being resumed (it wins over ``auto``, whatever ``pretrained`` now is).

    Returns:
        (the resolved config, a sentence saying which recipe and why).
    """
    recipe: Recipe
    if cfg.recipe == "reference" or cfg.recipe == "scratch":
        recipe, reason = cfg.recipe, "set in the config"
    elif stored_recipe == "reference":
        recipe, reason = "reference", "the recipe of the run being resumed"
    elif stored_recipe == "scratch":
        recipe, reason = "scratch", "the recipe of the run being resumed"
    else:
        recipe, reason = recipe_for_start(cfg.pretrained)
    sections: dict[str, dict[str, Any]] = {}
    for key, value in RECIPES[recipe].items():
        section, name = key.split(".")
        if getattr(getattr(cfg, section), name) is None:
            sections.setdefault(section, {})[name] = value
    resolved = dataclasses.replace(
        cfg,
        recipe=recipe,
        **{section: dataclasses.replace(getattr(cfg, section), **values) for section, values in sections.items()},
    )
    return resolved, f"training recipe {recipe!r} ({reason})"
