#!/usr/bin/env python3
"""llama.cpp side of the quantized LLM comparison (run by ``scripts/bench.sh --only llm``; our
side: ``backends/candle/examples/llm_bench.rs``). Same GGUF file, same prompt token ids (read
from our side's JSON), same thread count, same number of greedy tokens, same measurements:

- load: ``Llama(model_path, n_threads=T, n_threads_batch=T, n_ctx=512, n_batch=512)``;
- time to first token (TTFT): ``Llama.generate(ids, top_k=1, temp=0)`` from the call to the
  first yielded token (prompt evaluation in one batch + sampling), and prefill tokens/s =
  prompt tokens / TTFT;
- decode tokens/s = (new - 1) / (time of the last token - time of the first), and the latency
  of each decode step (p50/p95/p99, nearest rank);
- peak RSS: ``VmHWM`` of this process at the end (the model is mmap-ed, so its touched pages
  count, as they do for ours, which reads the file).

End-of-sequence does not stop it (``generate`` never stops by itself); the KV cache is cleared
(``Llama.reset``) before every run, so no prefix is reused. ``--warmup`` unmeasured runs of the
same generation come first, as on our side.

Usage: venv-llama/bin/python scripts/bench_llama_cpp.py --model F.gguf --threads N
       --ids-from ours.json [--new 64] [--warmup 1] [--json out.json]
"""

import argparse
import json
import math
import time


def stats(times):
    """p50/p95/p99/mean in ms (nearest-rank), like the Rust side."""
    v = sorted(times)
    n = len(v)
    if n == 0:
        return None

    def pct(p):
        rank = math.ceil(p / 100 * n)
        return v[min(max(rank, 1), n) - 1] * 1e3

    return {"n": n, "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99),
            "mean_ms": sum(v) / n * 1e3}


def peak_rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def generate(llm, ids, new):
    llm.reset()
    at, out = [], []
    t0 = time.perf_counter()
    for tok in llm.generate(list(ids), top_k=1, top_p=1.0, min_p=0.0, temp=0.0,
                            repeat_penalty=1.0, reset=True):
        at.append(time.perf_counter() - t0)
        out.append(int(tok))
        if len(out) == new:
            break
    return at, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--ids-from", required=True, help="our side's JSON (its prompt_ids)")
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--json")
    a = ap.parse_args()
    ours = json.load(open(a.ids_from))
    ids = ours["prompt_ids"]

    t = time.perf_counter()
    import llama_cpp
    imports = time.perf_counter() - t
    t = time.perf_counter()
    llm = llama_cpp.Llama(model_path=a.model, n_threads=a.threads, n_threads_batch=a.threads,
                          n_ctx=512, n_batch=512, verbose=False)
    load = time.perf_counter() - t
    warm = []
    for _ in range(a.warmup):
        at, _ = generate(llm, ids, a.new)
        warm.append(at[0] * 1e3)
    at, out = generate(llm, ids, a.new)
    steps = [b - x for x, b in zip(at, at[1:])]
    r = {
        "engine": "llama.cpp",
        "llama_cpp_python": llama_cpp.__version__,
        "model": a.model,
        "threads": a.threads,
        "prompt_tokens": len(ids),
        "new_tokens": len(out),
        "warmup_runs": a.warmup,
        "warmup_ttft_ms": warm,
        "import_ms": imports * 1e3,
        "load_ms": load * 1e3,
        "ttft_ms": at[0] * 1e3,
        "prefill_tokens_per_s": len(ids) / at[0],
        "decode_tokens_per_s": (len(out) - 1) / (at[-1] - at[0]),
        "decode_step": stats(steps),
        "total_ms": at[-1] * 1e3,
        "peak_rss_mib": peak_rss_mib(),
        "generated_ids": out,
        "greedy_agreement_with_ours": next(
            (i for i, (x, y) in enumerate(zip(out, ours.get("generated_ids", []))) if x != y),
            min(len(out), len(ours.get("generated_ids", [])))),
        "loadavg": open("/proc/loadavg").read().strip(),
    }
    text = json.dumps(r, indent=2)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
