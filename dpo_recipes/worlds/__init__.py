"""The embedded worlds, for a machine with no model hub: the tiny model and its toy world, the real SmolLM2
from its wheel, the judges that score answers, on-policy pair generation, and `embedded`, which builds and
caches each of them by name."""
