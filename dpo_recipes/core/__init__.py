"""The floor everything stands on: errors, atomic files, process runtime, raw-row schemas, scoring and generation
with a model, the run record, and the one seam to TRL's private members (`trl_internals`). Imports nothing
else of this package."""
