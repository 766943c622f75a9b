"""Dataset recipes: raw preference datasets → TRL's prompt/chosen/rejected format.

Adding a dataset = one function decorated with ``@register(name)`` in a module imported here, one fixture,
one test.
"""

from dpo_recipes.data import ultrafeedback  # noqa: F401  (registers its recipes)
from dpo_recipes.data.loading import load_preference_splits
from dpo_recipes.data.messages import messages_to_prompt_completion
from dpo_recipes.data.registry import RECIPES, BadRow, PreparedSplit, RecipeError, get_recipe, prepare, register

__all__ = [
    "RECIPES",
    "BadRow",
    "PreparedSplit",
    "RecipeError",
    "get_recipe",
    "load_preference_splits",
    "messages_to_prompt_completion",
    "prepare",
    "register",
]
