#!/usr/bin/env python3
"""PyTorch side of the inference comparison (run by scripts/bench.sh; candle side:
runtime/benches/inference.rs). Same texts, same thread count, same measurements:

- all-MiniLM-L6-v2 at batch 1 and 32, two PyTorch paths:
  * ``sentence_transformers``: ``SentenceTransformer(dir).encode(batch)`` (the usual user path);
  * ``transformers``: tokenizer + ``AutoModel`` forward under ``torch.inference_mode()`` + mean
    pooling + L2 normalisation (the leanest PyTorch path; the ratio uses the faster of the two).
  Load = model construction + first call (imports are reported separately).
- greedy generation with the tiny llama fixture (``fixtures/native/llama``): tokens/s.

Usage: venv-torch/bin/python scripts/bench_pytorch.py --threads N [--iters 50] [--json out.json]
Needs SKILLGEN_MINILM_DIR for the MiniLM part (otherwise it is skipped, like the Rust bench).
"""

import argparse
import json
import math
import os
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

BASE = [
    "A man is eating food.",
    "The quick brown fox jumps over the lazy dog.",
    "Rust is a systems programming language focused on safety, speed and concurrency.",
    "Ünïcödé façade — naïve café, 日本語のテキスト, emoji!",
    "Embeddings map sentences to vectors so that similar meanings are close together.",
    "It rained all day, so the match was moved to the indoor stadium on Sunday afternoon.",
    "hi",
    "Modular MAX serves models over an OpenAI-compatible HTTP API.",
]
# Identical to texts() in runtime/benches/inference.rs.
TEXTS = [f"{BASE[i % len(BASE)]} ({i})" for i in range(32)]


def stats(times):
    """p50/p95/p99/mean in ms (nearest-rank), like the Rust side."""
    v = sorted(times)
    n = len(v)

    def pct(p):
        rank = math.ceil(p / 100 * n)
        return v[min(max(rank, 1), n) - 1] * 1e3

    return {
        "n": n,
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
        "mean_ms": sum(v) / n * 1e3,
    }


def run_batches(encode, iters):
    out = {}
    for n in (1, 32):
        n_iters = iters if n == 1 else max(iters // 4, 10)
        for i in range(max(32 // n, 3)):
            start = (i * n) % 32
            encode(TEXTS[start : start + n])
        times = []
        for i in range(n_iters):
            start = (i * n) % 32
            batch = TEXTS[start : start + n]
            t = time.perf_counter()
            got = encode(batch)
            times.append(time.perf_counter() - t)
            assert len(got) == n
        s = stats(times)
        s["texts_per_s"] = n * n_iters / sum(times)
        print(
            f"  batch {n:>2}: p50 {s['p50_ms']:.2f} ms  p95 {s['p95_ms']:.2f} ms  "
            f"p99 {s['p99_ms']:.2f} ms  {s['texts_per_s']:.1f} texts/s  (n={n_iters})"
        )
        out[str(n)] = s
    return out


def corpus(args):
    """The corpus case: import, then SentenceTransformer(dir) and encode(lines, batch_size=32)
    in this process; texts/s over load + encode (imports reported apart), peak RSS."""
    started = time.perf_counter()
    import torch
    from sentence_transformers import SentenceTransformer

    import_s = time.perf_counter() - started
    torch.set_num_threads(args.threads)
    lines = Path(args.corpus).read_text().splitlines()
    t = time.perf_counter()
    st = SentenceTransformer(os.environ["SKILLGEN_MINILM_DIR"], device="cpu")
    vectors = st.encode(lines, batch_size=32)
    work_s = time.perf_counter() - t
    assert len(vectors) == len(lines)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "engine": "sentence_transformers",
        "texts": len(lines),
        "import_s": import_s,
        "load_and_encode_s": work_s,
        "texts_per_s": len(lines) / work_s,
        "texts_per_s_with_imports": len(lines) / (import_s + work_s),
        "peak_rss_mib": rss,
    }
    print(
        f"corpus: {len(lines)} texts, imports {import_s:.3f} s, load + encode {work_s:.3f} s "
        f"({len(lines) / work_s:.1f} texts/s; {len(lines) / (import_s + work_s):.1f} with imports), "
        f"peak RSS {rss:.1f} MiB"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--json")
    ap.add_argument("--corpus", help="run only the corpus case on this file (one text a line)")
    args = ap.parse_args()
    if args.corpus:
        return corpus(args)

    t = time.perf_counter()
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer, LlamaForCausalLM

    import_s = time.perf_counter() - t
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    print(
        f"pytorch {torch.__version__}, transformers {transformers.__version__}, "
        f"threads {torch.get_num_threads()}, imports {import_s * 1e3:.0f} ms"
    )
    result = {
        "engine": "pytorch",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "import_ms": import_s * 1e3,
        "minilm": None,
    }

    minilm_dir = os.environ.get("SKILLGEN_MINILM_DIR")
    if minilm_dir and (Path(minilm_dir) / "model.safetensors").is_file():
        minilm = {}
        # sentence-transformers: what users call.
        t = time.perf_counter()
        st = SentenceTransformer(minilm_dir, device="cpu")
        st.encode(TEXTS[:1], batch_size=1)
        load = time.perf_counter() - t
        print(f"sentence_transformers load (construct + first encode): {load * 1e3:.1f} ms")
        with torch.inference_mode():
            batches = run_batches(
                lambda b: st.encode(b, batch_size=len(b), show_progress_bar=False), args.iters
            )
        minilm["sentence_transformers"] = {"load_ms": load * 1e3, "batches": batches}
        # Peak RSS with one MiniLM copy loaded (before the transformers path loads a second).
        result["peak_rss_mib_minilm"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        del st

        # transformers: the leanest PyTorch path (same pooling as all-MiniLM-L6-v2).
        t = time.perf_counter()
        tok = AutoTokenizer.from_pretrained(minilm_dir)
        model = AutoModel.from_pretrained(minilm_dir).eval()

        def encode(batch):
            with torch.inference_mode():
                enc = tok(batch, padding=True, truncation=True, max_length=256, return_tensors="pt")
                hidden = model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                return torch.nn.functional.normalize(pooled, dim=-1).numpy()

        encode(TEXTS[:1])
        load = time.perf_counter() - t
        print(f"transformers load (construct + first encode): {load * 1e3:.1f} ms")
        batches = run_batches(encode, args.iters)
        minilm["transformers"] = {"load_ms": load * 1e3, "batches": batches}
        result["minilm"] = minilm
    else:
        print("SKIPPED: minilm: set SKILLGEN_MINILM_DIR to all-MiniLM-L6-v2")

    # Tiny llama fixture: greedy generation, same prompt and max_new_tokens as the Rust side.
    fixture = REPO / "fixtures/native/llama"
    ref = json.loads((fixture / "reference.json").read_text())
    prompt = ref["text"]["prompt_ids"]
    max_tokens = 32
    t = time.perf_counter()
    lm = LlamaForCausalLM.from_pretrained(fixture).eval()
    ids = torch.tensor([prompt])

    def gen():
        with torch.inference_mode():
            out = lm.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_tokens,
                do_sample=False,
                pad_token_id=0,
            )
        return out.shape[1] - len(prompt)

    gen()
    load = time.perf_counter() - t
    gen()
    iters = max(args.iters, 20)
    times, tokens = [], 0
    for _ in range(iters):
        t = time.perf_counter()
        tokens += gen()
        times.append(time.perf_counter() - t)
    s = stats(times)
    s["tokens_per_s"] = tokens / sum(times)
    s["new_tokens_per_call"] = tokens / iters
    s["prompt_tokens"] = len(prompt)
    s["load_ms"] = load * 1e3
    print(
        f"llama fixture: {s['tokens_per_s']:.0f} tokens/s ({len(prompt)} prompt + "
        f"{s['new_tokens_per_call']:.0f} new tokens per call, p50 {s['p50_ms']:.2f} ms, n={iters})"
    )
    result["llama_fixture"] = s
    # ru_maxrss is in KiB on Linux.
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {result['peak_rss_mib']:.1f} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
