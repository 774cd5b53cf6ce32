"""Write a Llama-3-8B-shaped model directory (config only) on the tiny model's tokenizer.

vLLM serves it with `--load-format dummy` (random weights, no download): the memory and speed
of a real 8B model without its 16 GB of weights.

    python bench/gpu/make_8b_shape.py TINY_MODEL_DIR OUT_DIR
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path


def main(tiny: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tiny / name).exists():
            shutil.copy(tiny / name, out / name)
    tiny_config = json.loads((tiny / "config.json").read_text())
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "max_position_embeddings": 8192,
        "rope_theta": 500000.0,
        "rms_norm_eps": 1e-5,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "bos_token_id": tiny_config.get("bos_token_id", 1),
        "eos_token_id": tiny_config.get("eos_token_id", 2),
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    print(f"8B-shaped config written to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
