"""A float safetensors checkpoint from a GGUF file, through transformers' own GGUF loader
(dequantised): the input of the load-time quantization bench (`scripts/bench.sh --only
quantize`), which quantizes its matrices again (Q8_0, Q4_K) and measures what that costs
against this float model.

    ~/.cache/skillgen/venv-torch/bin/python scripts/make_float_checkpoint.py GGUF OUT_DIR

OUT_DIR gets config.json, model.safetensors (float32), generation_config.json and the
tokenizer files. Note what the numbers mean: the float weights are the GGUF's dequantised
ones, so they lie on that file's quantization grid; requantizing them costs what it costs any
float model of these values, measured against this float model, not against the original
bf16 training checkpoint (which the Hugging Face hub has and this machine cannot reach).

Needs the torch venv with `gguf==0.19.0`.
"""
import json
import sys
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

torch.set_num_threads(2)
transformers.logging.set_verbosity_error()


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    gguf, out = Path(sys.argv[1]), Path(sys.argv[2])
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                 dtype=torch.float32).eval()
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    # save_pretrained refuses a model loaded from GGUF ("not serializable"): the tensors are
    # plain float ones, so they are written as save_pretrained would (tied LM head left out).
    state = model.state_dict()
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_file({k: v.contiguous() for k, v in state.items()}, tmp / "model.safetensors",
              metadata={"format": "pt"})
    model.config.save_pretrained(tmp)
    config = json.loads((tmp / "config.json").read_text())
    config.pop("quantization_config", None)  # the tensors written are float
    (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    model.generation_config.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.replace(out) if not out.exists() else None
    if tmp.exists():
        print(f"{out} exists: left as is ({tmp} holds the new one)", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
