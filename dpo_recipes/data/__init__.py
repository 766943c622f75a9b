"""Dataset recipes: raw preference datasets → TRL's prompt/chosen/rejected format.

Adding a dataset = one function decorated with ``@register(name, hub_id=...)`` in a module imported here,
one fixture in tests/fixtures, one test.
"""

from dpo_recipes.data import helpsteer2, hh_rlhf, sharegpt, single_turn, trl_format, ultrafeedback  # noqa: F401
from dpo_recipes.data.loading import load_preference_splits, load_raw
from dpo_recipes.data.registry import (
    FORMATS,
    RECIPES,
    BadRow,
    PreparedSplit,
    RecipeError,
    get_recipe,
    prepare,
    register,
)

__all__ = [
    "FORMATS",
    "RECIPES",
    "BadRow",
    "PreparedSplit",
    "RecipeError",
    "get_recipe",
    "load_preference_splits",
    "load_raw",
    "prepare",
    "register",
]
