#!/usr/bin/env bash
# Reproduces every number of README's "Performance" section on this machine, in one run:
#
#   scripts/bench.sh                 # everything (~15-25 min on 2 cores, warm target dir)
#   scripts/bench.sh --only generator,dispatch
#   SKILLGEN_BENCH_THREADS=1 SKILLGEN_BENCH_REPEATS=5 scripts/bench.sh --only inference
#
# Sections: generator, compile, dispatch, inference, max (`--only report` only re-renders the
# report from bench-results/raw/).
#   generator  release `skillgen generate` on models.yaml and synthetic 100/1k/10k-entry
#              registries: full (empty out dir), no-op (second run, digest hit) and `--force`
#              (renders, writes nothing); plus `cargo bench -p skillgen --bench regenerate`.
#   compile    debug `cargo build -p skills` after `cargo clean -p skills` (runtime already
#              built), and the rebuild after editing one registry entry, in a detached git
#              worktree of HEAD (your working tree is never touched); generated lines per skill.
#   dispatch   `cargo bench -p skills --bench resolve` (criterion medians, ns).
#   inference  candle (`cargo bench -p skillgen-candle --bench inference`) vs PyTorch
#              (`scripts/bench_pytorch.py`), alternating runs, same texts, same thread count.
#   corpus     512 sentences embedded by a whole candle process vs sentence-transformers
#              `encode(batch_size=32)`: texts/s, peak RSS (see the section).
#   max        `cargo bench -p skillgen-max --bench max` (prints SKIPPED without MAX).
#   llm        quantized LLM generation, per GGUF file present (SmolLM2-135M-Instruct Q4_1; Gemma 3
#              270M Q4_K_M): ours (`cargo run --release -p skillgen-candle --example llm_bench`) vs
#              llama.cpp (`scripts/bench_llama_cpp.py`, llama-cpp-python), alternating runs, the
#              same prompt token ids, thread count and number of greedy tokens: time to first
#              token, prefill and decode tokens/s, per-token latency p50/p95/p99, peak RSS.
#   quantize   quantize-your-own: SmolLM2-135M-Instruct as a float checkpoint (made from the GGUF by
#              `scripts/make_float_checkpoint.py`, see its header) run by `llm_bench` in float and
#              quantized at load to Q8_0 and Q4_K (`--quantize`): weights in memory, load time,
#              TTFT, decode tokens/s, per-token latency p50/p95/p99, peak RSS; and the accuracy
#              cost of each against the float model (`llm_bench --accuracy`: top-1 agreement and
#              max |Δlogit| over the float top-10, teacher-forced over the whole prompt; greedy).
#
# Environment: CARGO_TARGET_DIR (default ~/.cache/skillgen/target), SKILLGEN_MINILM_DIR,
# SKILLGEN_BENCH_FEATURES (cargo features of the inference and corpus candle runs, e.g.
# `skillgen-candle/mkl`; default none), SKILLGEN_BENCH_THREADS (default: nproc),
# SKILLGEN_BENCH_REPEATS (default 3), SKILLGEN_BENCH_ITERS (default 50), SKILLGEN_TORCH_PYTHON (default
# ~/.cache/skillgen/venv-torch/bin/python), SKILLGEN_BENCH_WORKTREE (default
# ~/.cache/skillgen/bench-worktree); llm: SKILLGEN_LLAMA_PYTHON (default
# ~/.cache/skillgen/venv-llama/bin/python), SKILLGEN_LLM_PROMPT_TOKENS (128), SKILLGEN_LLM_NEW (64),
# SKILLGEN_SMOLLM2_GGUF, SKILLGEN_GEMMA3_GGUF (default paths under ~/.cache/skillgen/models),
# SKILLGEN_SMOLLM2_F32_DIR (quantize; default ~/.cache/skillgen/models/smollm2-f32),
# SKILLGEN_BENCH_MAX_LOAD (if set, each llm run first waits, up to 10 min, for the 1-minute load
# average to drop below it).
# Output: bench-results/latest.json, bench-results/latest.md (the table is also printed), and
# the raw per-section files in bench-results/raw/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/skillgen/target}
THREADS=${SKILLGEN_BENCH_THREADS:-$(nproc)}
REPEATS=${SKILLGEN_BENCH_REPEATS:-3}
ITERS=${SKILLGEN_BENCH_ITERS:-50}
TORCH_PY=${SKILLGEN_TORCH_PYTHON:-$HOME/.cache/skillgen/venv-torch/bin/python}
WT=${SKILLGEN_BENCH_WORKTREE:-$HOME/.cache/skillgen/bench-worktree}
OUT=$ROOT/bench-results
RAW=$OUT/raw
ONLY=generator,compile,dispatch,inference,corpus,max,llm,quantize
LLAMA_PY=${SKILLGEN_LLAMA_PYTHON:-$HOME/.cache/skillgen/venv-llama/bin/python}
while [[ $# -gt 0 ]]; do
    case $1 in
        --only) ONLY=$2; shift 2 ;;
        -h|--help) sed -n '2,46p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
want() { [[ ",$ONLY," == *",$1,"* ]]; }
# Cargo features of the candle side of inference and corpus (e.g. skillgen-candle/mkl).
FEATURES=(${SKILLGEN_BENCH_FEATURES:+--features "$SKILLGEN_BENCH_FEATURES"})
log() { printf '\n== %s  (load average: %s)\n' "$*" "$(cut -d' ' -f1-3 /proc/loadavg)" >&2; }
mkdir -p "$RAW"
export ROOT RAW THREADS REPEATS ITERS WT

# `--only report` rebuilds latest.{json,md} from bench-results/raw/ without measuring.
[[ $ONLY == report ]] || python3 - <<'EOF'
import json, os, platform, subprocess
def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception as e:
        return f"unavailable: {e}"
lscpu = sh("lscpu")
model = next((l.split(":", 1)[1].strip() for l in lscpu.splitlines() if l.startswith("Model name")), "?")
mem = next((l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")), "0")
info = {
    "cpu": model,
    "cores": os.cpu_count(),
    "memory_gib": round(int(mem) / 1024 / 1024, 1),
    "kernel": platform.release(),
    "rustc": sh("rustc --version"),
    "commit": sh(f"git -C {os.environ['ROOT']} rev-parse --short HEAD"),
    "dirty": bool(sh(f"git -C {os.environ['ROOT']} status --porcelain --untracked-files=no")),
    "date_utc": sh("date -u +%Y-%m-%dT%H:%M:%SZ"),
    "loadavg_start": open("/proc/loadavg").read().split()[:3],
    "threads": int(os.environ["THREADS"]),
    "repeats": int(os.environ["REPEATS"]),
}
json.dump(info, open(f"{os.environ['RAW']}/machine.json", "w"), indent=2)
EOF

# ----------------------------------------------------------------------------- generator
if want generator; then
    log "generator: building release skillgen"
    cargo build --release -q -p skillgen --bin skillgen
    export SKILLGEN_BIN=$CARGO_TARGET_DIR/release/skillgen
    log "generator: real registry + synthetic 100/1k/10k, $REPEATS runs each"
    python3 - <<'EOF'
import json, os, re, statistics, subprocess, tempfile, time
from pathlib import Path
root, raw, reps = Path(os.environ["ROOT"]), Path(os.environ["RAW"]), int(os.environ["REPEATS"])
exe = os.environ["SKILLGEN_BIN"]
real = (root / "models.yaml").read_text()
head, _, body = real.partition("\nmodels:\n")
entries = re.split(r"(?m)^(?=  - model_type: )", body)
entries = [e for e in entries if e.startswith("  - model_type: ")]

def synthetic(n):
    """n entries: the real ones cycled, copies renamed `<type>_s<k>` (config class too)."""
    out = []
    for i in range(n):
        e, k = entries[i % len(entries)], i // len(entries)
        if k:
            e = re.sub(r"(?m)^(  - model_type: )(\S+)", rf"\g<1>\g<2>_s{k}", e, count=1)
            e = re.sub(r"(?m)^(    config_class: )(\w+)", rf"\g<1>\g<2>S{k}", e, count=1)
        out.append(e)
    return head + "\nmodels:\n" + "".join(out)

def run(registry, out, *extra):
    t = time.perf_counter()
    p = subprocess.run([exe, "--registry", str(registry), "--templates", str(root / "templates"),
                        "--out", str(out), "generate", *extra], capture_output=True, text=True)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"skillgen failed on {registry}:\n{p.stderr[-2000:]}")
    return dt

results = {}
with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    cases = [("models.yaml", len(entries), root / "models.yaml")]
    for n in (100, 1000, 10000):
        path = tmp / f"synthetic-{n}.yaml"
        path.write_text(synthetic(n))
        cases.append((f"synthetic {n}", n, path))
    for name, n, registry in cases:
        full, noop, forced = [], [], []
        for r in range(reps):
            out = tmp / f"out-{n}-{r}"
            (out).mkdir()
            full.append(run(registry, out))
            # No-op: the digest (OUT/.skillgen-digest) matches, nothing is rendered. Forced:
            # `--force` renders and compares everything, and writes nothing either.
            noop.append(run(registry, out))
            forced.append(run(registry, out, "--force"))
        files = sum(1 for _ in (tmp / f"out-{n}-0" / "src").rglob("*.rs"))
        lines = sum(f.read_text().count("\n") for f in (tmp / f"out-{n}-0" / "src").rglob("*.rs"))
        r = {
            "entries": n,
            "files": files,
            "lines": lines,
            "full_s": statistics.median(full),
            "full_s_all": full,
            "noop_s": statistics.median(noop),
            "noop_s_all": noop,
            "forced_noop_s": statistics.median(forced),
            "forced_noop_s_all": forced,
            "skills_per_s": n / statistics.median(full),
        }
        results[name] = r
        print(f"  {name:>16}: full {r['full_s']:.3f} s ({r['skills_per_s']:.0f} skills/s), "
              f"no-op {r['noop_s']:.3f} s (--force {r['forced_noop_s']:.3f} s), {files} files, {lines} lines")
json.dump(results, open(raw / "generator.json", "w"), indent=2)
EOF
    log "generator: criterion bench (cargo bench -p skillgen --bench regenerate)"
    cargo bench -q -p skillgen --bench regenerate 2>&1 | tee "$RAW/regenerate.txt" | grep -E "time:|^models" >&2 || true
fi

# ----------------------------------------------------------------------------- compile
if want compile; then
    log "compile: worktree of HEAD at $WT"
    if [[ ! -e $WT/.git ]]; then
        git worktree add --detach "$WT" HEAD >/dev/null
    fi
    # The bench worktree belongs to this script: reset it to HEAD and drop edits of a past run.
    git -C "$WT" checkout -q --detach --force "$(git rev-parse HEAD)"
    git -C "$WT" checkout -q -- .
    cargo build --release -q -p skillgen --bin skillgen
    (
        cd "$WT"
        log "compile: cargo build -p skills (debug, not timed: dependencies and backends)"
        cargo build -q -p skills
        times_clean=(); times_edit=()
        for r in $(seq "$REPEATS"); do
            cargo clean -q -p skills
            t0=$(date +%s.%N); cargo build -q -p skills; t1=$(date +%s.%N)
            times_clean+=("$(echo "$t1 - $t0" | bc)")
            # Edit one entry's notes (bert), regenerate, rebuild.
            python3 - <<'EOF'
import re
from pathlib import Path
p = Path("models.yaml")
s = p.read_text()
m = re.search(r"(?m)^  - model_type: bert\n((?:    .*\n|      .*\n)*)", s)
assert m, "bert entry not found"
entry = m.group(0)
if re.search(r"(?m)^    notes: ", entry):
    edited = re.sub(r"(?m)^    notes: .*$", '    notes: "bench edit"', entry, count=1)
else:
    edited = entry + '    notes: "bench edit"\n'
s = s.replace(entry, edited, 1)
p.write_text(s)
EOF
            "$CARGO_TARGET_DIR/release/skillgen" --registry models.yaml --templates templates --out generated generate >/dev/null
            t0=$(date +%s.%N); cargo build -q -p skills; t1=$(date +%s.%N)
            times_edit+=("$(echo "$t1 - $t0" | bc)")
            git checkout -q -- models.yaml generated
            echo "  run $r: clean build of skills ${times_clean[-1]} s, after one edit ${times_edit[-1]} s" >&2
        done
        # Leave the restored tree built (so the next bench run starts from the same state).
        cargo build -q -p skills
        python3 - "${times_clean[*]}" "${times_edit[*]}" <<'EOF'
import json, os, statistics, subprocess, sys
from pathlib import Path
clean = [float(x) for x in sys.argv[1].split()]
edit = [float(x) for x in sys.argv[2].split()]
src = Path("generated/src")
lines = sum(f.read_text().count("\n") for f in src.rglob("*.rs"))
skills = subprocess.run(["grep", "-c", "^  - model_type: ", "models.yaml"], capture_output=True,
                        text=True).stdout.strip()
r = {
    "skills": int(skills),
    "generated_lines": lines,
    "lines_per_skill": lines / int(skills),
    "clean_build_s": statistics.median(clean),
    "clean_build_s_all": clean,
    "edit_rebuild_s": statistics.median(edit),
    "edit_rebuild_s_all": edit,
    "profile": "dev (debug)",
}
json.dump(r, open(Path(os.environ["RAW"]) / "compile.json", "w"), indent=2)
print(f"  skills crate: clean build {r['clean_build_s']:.1f} s, one-entry edit {r['edit_rebuild_s']:.1f} s, "
      f"{lines} lines = {r['lines_per_skill']:.1f} per skill", file=sys.stderr)
EOF
    )
fi

# ----------------------------------------------------------------------------- dispatch
if want dispatch; then
    log "dispatch: cargo bench -p skills --bench resolve"
    cargo bench -q -p skills --bench resolve 2>&1 | tee "$RAW/resolve.txt" | grep -E "time:" >&2 || true
fi

# ----------------------------------------------------------------------------- inference
if want inference; then
    log "inference: building the candle bench"
    cargo bench -q -p skillgen-candle --bench inference --no-run "${FEATURES[@]}"
    for r in $(seq "$REPEATS"); do
        log "inference: run $r/$REPEATS candle (RAYON_NUM_THREADS=$THREADS)"
        RAYON_NUM_THREADS=$THREADS SKILLGEN_BENCH_ITERS=$ITERS SKILLGEN_BENCH_JSON=$RAW/candle-$r.json \
            cargo bench -q -p skillgen-candle --bench inference "${FEATURES[@]}" >&2
        log "inference: run $r/$REPEATS pytorch (torch.set_num_threads($THREADS))"
        OMP_NUM_THREADS=$THREADS "$TORCH_PY" scripts/bench_pytorch.py --threads "$THREADS" --iters "$ITERS" \
            --json "$RAW/pytorch-$r.json" 2>&1 | grep -v "Loading weights" >&2
    done
fi

# ----------------------------------------------------------------------------- corpus
# fixtures/corpus/sentences.txt (512 sentences, scripts/make_corpus.py)
# embedded by one whole candle process (load included: the inference bench binary with
# SKILLGEN_BENCH_CORPUS) vs sentence-transformers `encode(batch_size=32)` in one Python process
# (imports reported apart), alternating; texts/s and peak RSS, medians printed.
if want corpus; then
    CORPUS=${SKILLGEN_BENCH_CORPUS_FILE:-$ROOT/fixtures/corpus/sentences.txt}
    log "corpus: building the candle bench"
    BENCH_BIN=$(cargo bench -q -p skillgen-candle --bench inference --no-run "${FEATURES[@]}" --message-format=json |
        python3 -c 'import json, sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "inference" and m.get("executable"):
        print(m["executable"])' | tail -1)
    export BENCH_BIN CORPUS
    for r in $(seq "$REPEATS"); do
        log "corpus: run $r/$REPEATS candle (RAYON_NUM_THREADS=$THREADS)"
        R=$r python3 - <<'EOF2'
import json, os, subprocess, time
raw, r = os.environ["RAW"], os.environ["R"]
out = f"{raw}/corpus-candle-{r}.json"
env = dict(os.environ, RAYON_NUM_THREADS=os.environ["THREADS"], SKILLGEN_BENCH_CORPUS=os.environ["CORPUS"],
           SKILLGEN_BENCH_JSON=out)
t = time.perf_counter()
subprocess.run([os.environ["BENCH_BIN"]], env=env, check=True, stdout=subprocess.DEVNULL)
wall = time.perf_counter() - t
res = json.load(open(out))
res["process_wall_s"] = wall
res["texts_per_s_process"] = res["texts"] / wall
json.dump(res, open(out, "w"), indent=2)
print(f"corpus candle: {res['texts']} texts, process {wall:.3f} s ({res['texts_per_s_process']:.1f} texts/s), "
      f"peak RSS {res['peak_rss_mib']:.1f} MiB")
EOF2
        log "corpus: run $r/$REPEATS sentence-transformers (torch.set_num_threads($THREADS))"
        OMP_NUM_THREADS=$THREADS "$TORCH_PY" scripts/bench_pytorch.py --threads "$THREADS" \
            --corpus "$CORPUS" --json "$RAW/corpus-pytorch-$r.json" 2>&1 | grep -v "Loading weights" >&2
    done
    python3 - <<'EOF2'
import json, os, statistics
raw, reps = os.environ["RAW"], int(os.environ["REPEATS"])
c = [json.load(open(f"{raw}/corpus-candle-{r}.json")) for r in range(1, reps + 1)]
p = [json.load(open(f"{raw}/corpus-pytorch-{r}.json")) for r in range(1, reps + 1)]
med = lambda rows, k: statistics.median(x[k] for x in rows)
ct, pt = med(c, "texts_per_s_process"), med(p, "texts_per_s")
print(f"corpus ({c[0]['texts']} texts, medians of {reps}): candle {ct:.1f} texts/s whole process "
      f"(peak RSS {med(c, 'peak_rss_mib'):.0f} MiB) vs sentence-transformers {pt:.1f} texts/s load + encode "
      f"({med(p, 'texts_per_s_with_imports'):.1f} with its {med(p, 'import_s'):.2f} s of imports; peak RSS "
      f"{med(p, 'peak_rss_mib'):.0f} MiB): {ct / pt:.2f}x")
EOF2
fi

# ----------------------------------------------------------------------------- max
if want max; then
    log "max: cargo bench -p skillgen-max --bench max"
    XDG_CACHE_HOME=${XDG_CACHE_HOME:-$HOME/.cache/skillgen/max-cache} HF_HUB_OFFLINE=1 \
        MAX_SERVE_DISABLE_TELEMETRY=1 RAYON_NUM_THREADS=$THREADS \
        cargo bench -q -p skillgen-max --bench max 2>&1 | tee "$RAW/max.txt" >&2 || true
fi

# ----------------------------------------------------------------------------- llm
# Wait (up to 10 min) for the 1-minute load average to drop below SKILLGEN_BENCH_MAX_LOAD.
wait_quiet() {
    [[ -n ${SKILLGEN_BENCH_MAX_LOAD:-} ]] || return 0
    for _ in $(seq 120); do
        python3 -c "import sys; sys.exit(float(open('/proc/loadavg').read().split()[0]) >= float('$SKILLGEN_BENCH_MAX_LOAD'))" && return 0
        sleep 5
    done
    echo "  load average still $(cut -d' ' -f1 /proc/loadavg) after 10 min: measuring anyway" >&2
}
if want llm; then
    PROMPT_TOKENS=${SKILLGEN_LLM_PROMPT_TOKENS:-128}
    NEW=${SKILLGEN_LLM_NEW:-64}
    log "llm: building the bench (release example llm_bench)"
    cargo build --release -q -p skillgen-candle --example llm_bench
    OURS=$CARGO_TARGET_DIR/release/examples/llm_bench
    rm -f "$RAW"/llm-*.json
    for spec in "smollm2:${SKILLGEN_SMOLLM2_GGUF:-$HOME/.cache/skillgen/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}" \
                "gemma3-270m:${SKILLGEN_GEMMA3_GGUF:-$HOME/.cache/skillgen/models/gemma3-270m/gemma-3-270m-q4_k_m.gguf}"; do
        name=${spec%%:*}; model=${spec#*:}
        if [[ ! -f $model ]]; then
            echo "  SKIPPED: $name ($model not found)" >&2
            continue
        fi
        if [[ ! -x $LLAMA_PY ]]; then
            echo "  llama.cpp side SKIPPED: $LLAMA_PY not found" >&2
        fi
        for r in $(seq "$REPEATS"); do
            wait_quiet
            log "llm: $name run $r/$REPEATS ours (RAYON_NUM_THREADS=$THREADS)"
            RAYON_NUM_THREADS=$THREADS "$OURS" "$model" --prompt-tokens "$PROMPT_TOKENS" --new "$NEW" \
                --json "$RAW/llm-$name-ours-$r.json" >/dev/null
            python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(f\"  ours: TTFT {d['ttft_ms']:.0f} ms, prefill {d['prefill_tokens_per_s']:.0f} tok/s, decode {d['decode_tokens_per_s']:.1f} tok/s, RSS {d['peak_rss_mib']:.0f} MiB\")" \
                "$RAW/llm-$name-ours-$r.json" >&2
            if [[ -x $LLAMA_PY ]]; then
                wait_quiet
                log "llm: $name run $r/$REPEATS llama.cpp (n_threads=$THREADS)"
                "$LLAMA_PY" scripts/bench_llama_cpp.py --model "$model" --threads "$THREADS" --new "$NEW" \
                    --ids-from "$RAW/llm-$name-ours-$r.json" --json "$RAW/llm-$name-llamacpp-$r.json" >/dev/null
                python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(f\"  llama.cpp: TTFT {d['ttft_ms']:.0f} ms, prefill {d['prefill_tokens_per_s']:.0f} tok/s, decode {d['decode_tokens_per_s']:.1f} tok/s, RSS {d['peak_rss_mib']:.0f} MiB\")" \
                    "$RAW/llm-$name-llamacpp-$r.json" >&2
            fi
        done
    done
fi

# ----------------------------------------------------------------------------- quantize
if want quantize; then
    F32=${SKILLGEN_SMOLLM2_F32_DIR:-$HOME/.cache/skillgen/models/smollm2-f32}
    if [[ ! -f $F32/model.safetensors ]]; then
        echo "  quantize SKIPPED: $F32 has no model.safetensors (make it: $TORCH_PY scripts/make_float_checkpoint.py SMOLLM2.gguf $F32)" >&2
    else
        log "quantize: building the bench (release example llm_bench)"
        cargo build --release -q -p skillgen-candle --example llm_bench
        OURS=$CARGO_TARGET_DIR/release/examples/llm_bench
        rm -f "$RAW"/quant-*.json
        for r in $(seq "$REPEATS"); do
            for variant in f32 q8_0 q4_k; do
                flag=(); [[ $variant != f32 ]] && flag=(--quantize "$variant")
                wait_quiet
                log "quantize: $variant run $r/$REPEATS (RAYON_NUM_THREADS=$THREADS)"
                RAYON_NUM_THREADS=$THREADS "$OURS" "$F32" "${flag[@]}" --prompt-tokens "${SKILLGEN_LLM_PROMPT_TOKENS:-128}" \
                    --new "${SKILLGEN_LLM_NEW:-64}" --json "$RAW/quant-$variant-$r.json" >/dev/null
                python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(f\"  {sys.argv[2]}: weights {d['weight_bytes']/2**20:.0f} MiB, load {d['load_ms']:.0f} ms, decode {d['decode_tokens_per_s']:.1f} tok/s, RSS {d['peak_rss_mib']:.0f} MiB\")" \
                    "$RAW/quant-$variant-$r.json" "$variant" >&2
            done
        done
        for variant in q8_0 q4_k; do
            log "quantize: $variant accuracy against the float model"
            RAYON_NUM_THREADS=$THREADS "$OURS" "$F32" --quantize "$variant" --accuracy --new "${SKILLGEN_LLM_NEW:-64}" \
                --json "$RAW/quant-$variant-accuracy.json" >/dev/null
        done
    fi
fi

# ----------------------------------------------------------------------------- report
log "report"
export CRITERION_DIR=$CARGO_TARGET_DIR/criterion
python3 - <<'EOF'
import glob, json, os, re, statistics
from pathlib import Path
raw, out = Path(os.environ["RAW"]), Path(os.environ["RAW"]).parent
crit = Path(os.environ["CRITERION_DIR"])
def load(name):
    p = raw / name
    return json.loads(p.read_text()) if p.exists() else None

machine = load("machine.json") or {}
machine["loadavg_end"] = open("/proc/loadavg").read().split()[:3]

def criterion(prefixes):
    """Median (ns) of each criterion benchmark whose full id starts with one of `prefixes`."""
    res = {}
    for b in glob.glob(str(crit / "**/new/benchmark.json"), recursive=True):
        meta = json.loads(Path(b).read_text())
        fid = meta.get("full_id", "")
        if any(fid.startswith(p) for p in prefixes):
            est = json.loads((Path(b).parent / "estimates.json").read_text())
            res[fid] = {
                "median_ns": est["median"]["point_estimate"],
                "ci95_ns": [est["median"]["confidence_interval"]["lower_bound"],
                            est["median"]["confidence_interval"]["upper_bound"]],
            }
    return dict(sorted(res.items()))

result = {"machine": machine}
gen = load("generator.json")
if gen is not None:
    result["generator"] = {"cli": gen, "criterion": criterion(["models.yaml/"])}
result["compile"] = load("compile.json")
if (raw / "resolve.txt").exists():
    result["dispatch"] = criterion(["resolve/", "plan/"])

def med(runs, path):
    vals = []
    for r in runs:
        v = r
        for k in path:
            v = v.get(k) if isinstance(v, dict) else None
        if isinstance(v, (int, float)):
            vals.append(v)
    return statistics.median(vals) if vals else None

candle = [json.loads(p.read_text()) for p in sorted(raw.glob("candle-*.json"))]
torch = [json.loads(p.read_text()) for p in sorted(raw.glob("pytorch-*.json"))]
if candle and torch:
    inf = {"runs": len(candle), "threads": machine.get("threads"), "minilm": {}, "llama_fixture": {}}
    for b in ("1", "32"):
        row = {}
        for k in ("p50_ms", "p95_ms", "p99_ms", "texts_per_s"):
            row[f"candle_{k}"] = med(candle, ["minilm", "batches", b, k])
            for path in ("sentence_transformers", "transformers"):
                row[f"{path}_{k}"] = med(torch, ["minilm", path, "batches", b, k])
        best = max(filter(None, [row["sentence_transformers_texts_per_s"], row["transformers_texts_per_s"]]), default=None)
        row["speedup_vs_best_pytorch"] = row["candle_texts_per_s"] / best if best and row["candle_texts_per_s"] else None
        inf["minilm"][f"batch_{b}"] = row
    inf["minilm"]["load_ms"] = {
        "candle": med(candle, ["minilm", "load_ms"]),
        "sentence_transformers": med(torch, ["minilm", "sentence_transformers", "load_ms"]),
        "transformers": med(torch, ["minilm", "transformers", "load_ms"]),
        "pytorch_imports": med(torch, ["import_ms"]),
    }
    inf["peak_rss_mib"] = {
        "candle": med(candle, ["peak_rss_mib"]),
        "pytorch_one_minilm": med(torch, ["peak_rss_mib_minilm"]),
        "pytorch": med(torch, ["peak_rss_mib"]),
    }
    for k in ("tokens_per_s", "p50_ms", "new_tokens_per_call", "load_ms"):
        inf["llama_fixture"][k] = {"candle": med(candle, ["llama_fixture", k]),
                                   "pytorch": med(torch, ["llama_fixture", k])}
    result["inference"] = inf
if (raw / "max.txt").exists():
    result["max"] = (raw / "max.txt").read_text().strip().splitlines()

llm = {}
for p in sorted(raw.glob("llm-*-ours-*.json")):
    name = p.name[len("llm-"):].rsplit("-ours-", 1)[0]
    llm.setdefault(name, {"ours": [], "llamacpp": []})
for name, sides in llm.items():
    for side in ("ours", "llamacpp"):
        sides[side] = [json.loads(q.read_text()) for q in sorted(raw.glob(f"llm-{name}-{side}-*.json"))]
if llm:
    out_llm = {}
    keys = (("ttft_ms",), ("prefill_tokens_per_s",), ("decode_tokens_per_s",), ("decode_step", "p50_ms"),
            ("decode_step", "p95_ms"), ("decode_step", "p99_ms"), ("peak_rss_mib",), ("load_ms",))
    for name, sides in llm.items():
        o = sides["ours"][0] if sides["ours"] else {}
        row = {"runs": {s: len(v) for s, v in sides.items()}, "threads": o.get("threads"),
               "prompt_tokens": o.get("prompt_tokens"), "new_tokens": o.get("new_tokens"),
               "model": o.get("model"), "tensor_types": o.get("tensor_types"),
               "loadavg": [r.get("loadavg") for s in sides.values() for r in s],
               "greedy_agreement": [r.get("greedy_agreement_with_ours") for r in sides["llamacpp"]]}
        for k in keys:
            row["_".join(k)] = {s: med(v, list(k)) for s, v in sides.items()}
            row["_".join(k)]["all"] = {s: [med([r], list(k)) for r in v] for s, v in sides.items()}
        out_llm[name] = row
    result["llm"] = out_llm

corpus_c = [json.loads(q.read_text()) for q in sorted(raw.glob("corpus-candle-[0-9]*.json"))]
corpus_p = [json.loads(q.read_text()) for q in sorted(raw.glob("corpus-pytorch-[0-9]*.json"))]
if corpus_c:
    result["corpus"] = {
        "texts": corpus_c[0].get("texts"),
        "candle_texts_per_s_process": med(corpus_c, ["texts_per_s_process"]),
        "candle_peak_rss_mib": med(corpus_c, ["peak_rss_mib"]),
        "st_texts_per_s": med(corpus_p, ["texts_per_s"]) if corpus_p else None,
        "st_texts_per_s_with_imports": med(corpus_p, ["texts_per_s_with_imports"]) if corpus_p else None,
        "st_import_s": med(corpus_p, ["import_s"]) if corpus_p else None,
        "st_peak_rss_mib": med(corpus_p, ["peak_rss_mib"]) if corpus_p else None,
    }

quant = {}
for variant in ("f32", "q8_0", "q4_k"):
    runs = [json.loads(q.read_text()) for q in sorted(raw.glob(f"quant-{variant}-[0-9]*.json"))]
    if not runs:
        continue
    row = {"runs": len(runs), "model": runs[0].get("model"), "file_bytes": runs[0].get("file_bytes"),
           "weight_bytes": runs[0].get("weight_bytes"), "threads": runs[0].get("threads"),
           "loadavg": [r.get("loadavg") for r in runs]}
    for k in (("load_ms",), ("ttft_ms",), ("decode_tokens_per_s",), ("decode_step", "p50_ms"),
              ("decode_step", "p95_ms"), ("decode_step", "p99_ms"), ("peak_rss_mib",)):
        row["_".join(k)] = med(runs, list(k))
    acc = load(f"quant-{variant}-accuracy.json")
    if acc:
        row["accuracy"] = acc
    quant[variant] = row
if quant:
    result["quantize"] = quant

# ---- markdown
def f(x, spec=".1f"):
    return "—" if x is None else format(x, spec)
def ok(cond):
    return "—" if cond is None else ("yes" if cond else "**no**")
rows = []
if gen:
    real = gen["models.yaml"]
    rows.append(("Full regeneration, models.yaml (%d skills)" % real["entries"],
                 f"{f(real['full_s'], '.2f')} s = {f(real['skills_per_s'], '.0f')} skills/s", "≥ 5,000 skills/s",
                 ok(real["skills_per_s"] >= 5000)))
    rows.append(("No-op regeneration, models.yaml", f"{f(real['noop_s'], '.3f')} s", "≤ 0.05 s", ok(real["noop_s"] <= 0.05)))
    for n in ("synthetic 100", "synthetic 1000", "synthetic 10000"):
        if n in gen:
            g = gen[n]
            rows.append((f"Full / no-op regeneration, {n} entries",
                         f"{f(g['full_s'], '.2f')} s ({f(g['skills_per_s'], '.0f')} skills/s) / {f(g['noop_s'], '.3f')} s", "", ""))
c = result.get("compile")
if c:
    rows.append(("`cargo build -p skills` (debug) after `cargo clean -p skills`, runtime built",
                 f"{f(c['clean_build_s'])} s", "≤ 45 s", ok(c["clean_build_s"] <= 45)))
    rows.append(("Rebuild after editing one registry entry", f"{f(c['edit_rebuild_s'])} s", "", ""))
    rows.append(("Generated lines per skill", f"{f(c['lines_per_skill'])} ({c['generated_lines']} lines / {c['skills']})", "", ""))
d = result.get("dispatch")
if d:
    for k, v in d.items():
        rows.append((f"Dispatch `{k}` (criterion median)", f"{f(v['median_ns'])} ns", "≤ 100 ns", ok(v["median_ns"] <= 100)))
inf = result.get("inference")
if inf:
    for b, goal, need in (("1", "≥ 2× PyTorch", 2.0), ("32", "≥ 1.2× PyTorch", 1.2)):
        r = inf["minilm"][f"batch_{b}"]
        rows.append((f"MiniLM embed batch {b}: candle vs PyTorch (texts/s)",
                     f"{f(r['candle_texts_per_s'])} vs {f(r['sentence_transformers_texts_per_s'])} (sentence-transformers) / "
                     f"{f(r['transformers_texts_per_s'])} (transformers) = **{f(r['speedup_vs_best_pytorch'], '.2f')}×**",
                     goal, ok(None if r["speedup_vs_best_pytorch"] is None else r["speedup_vs_best_pytorch"] >= need)))
        rows.append((f"MiniLM batch {b} latency p50/p95/p99: candle vs sentence-transformers",
                     f"{f(r['candle_p50_ms'], '.2f')}/{f(r['candle_p95_ms'], '.2f')}/{f(r['candle_p99_ms'], '.2f')} ms vs "
                     f"{f(r['sentence_transformers_p50_ms'], '.2f')}/{f(r['sentence_transformers_p95_ms'], '.2f')}/{f(r['sentence_transformers_p99_ms'], '.2f')} ms", "", ""))
    l = inf["minilm"]["load_ms"]
    best_pt = min((x for x in (l["sentence_transformers"], l["transformers"]) if x), default=None)
    ratio = l["candle"] / best_pt if l["candle"] and best_pt else None
    ratio_imp = (l["candle"] / (best_pt + l["pytorch_imports"])
                 if l["candle"] and best_pt and l["pytorch_imports"] else None)
    inf["minilm"]["load_ratio"] = {"excluding_python_imports": ratio, "including_python_imports": ratio_imp}
    rows.append(("MiniLM load (construct + first call): candle vs PyTorch",
                 f"{f(l['candle'])} ms vs {f(l['sentence_transformers'])} ms (s-t) / {f(l['transformers'])} ms "
                 f"(transformers): ratio {f(ratio, '.2f')}; with the {f(l['pytorch_imports'], '.0f')} ms of "
                 f"Python imports: {f(ratio_imp, '.3f')}",
                 "≤ 1/10", ok(None if ratio is None else ratio <= 0.1)))
    rs = inf["peak_rss_mib"]
    rows.append(("Peak RSS: candle vs PyTorch (one MiniLM loaded)",
                 f"{f(rs['candle'], '.0f')} MiB vs {f(rs['pytorch_one_minilm'], '.0f')} MiB", "", ""))
    lf = inf["llama_fixture"]
    rows.append(("Tiny llama fixture greedy generation (overhead-bound): candle vs PyTorch",
                 f"{f(lf['tokens_per_s']['candle'], '.0f')} vs {f(lf['tokens_per_s']['pytorch'], '.0f')} tokens/s", "", ""))
for name, l in (result.get("llm") or {}).items():
    def both(k, spec=".1f", unit=""):
        a, b = l[k]["ours"], l[k]["llamacpp"]
        return f"{f(a, spec)}{unit} vs {f(b, spec)}{unit}", (a / b if a and b else None)
    ttft, r_ttft = both("ttft_ms", ".0f", " ms")
    pre, r_pre = both("prefill_tokens_per_s", ".0f")
    dec, r_dec = both("decode_tokens_per_s", ".1f")
    lat = (f"{f(l['decode_step_p50_ms']['ours'], '.1f')}/{f(l['decode_step_p95_ms']['ours'], '.1f')}/"
           f"{f(l['decode_step_p99_ms']['ours'], '.1f')} ms vs {f(l['decode_step_p50_ms']['llamacpp'], '.1f')}/"
           f"{f(l['decode_step_p95_ms']['llamacpp'], '.1f')}/{f(l['decode_step_p99_ms']['llamacpp'], '.1f')} ms")
    rss, _ = both("peak_rss_mib", ".0f", " MiB")
    tag = f"{name} ({l['prompt_tokens']}-token prompt, {l['new_tokens']} greedy tokens, {l['threads']} threads)"
    rows.append((f"LLM {tag}: time to first token, ours vs llama.cpp", ttft,
                 "", "—" if r_ttft is None else f"{1 / r_ttft:.2f}× llama.cpp's speed"))
    rows.append((f"LLM {name}: prefill tokens/s, ours vs llama.cpp", pre, "≥ 1× llama.cpp",
                 ok(None if r_pre is None else r_pre >= 1.0) + ("" if r_pre is None else f" ({r_pre:.2f}×)")))
    rows.append((f"LLM {name}: decode tokens/s, ours vs llama.cpp", dec, "≥ 1× llama.cpp",
                 ok(None if r_dec is None else r_dec >= 1.0) + ("" if r_dec is None else f" ({r_dec:.2f}×)")))
    rows.append((f"LLM {name}: decode step p50/p95/p99, ours vs llama.cpp", lat, "", ""))
    rows.append((f"LLM {name}: peak RSS, ours vs llama.cpp", rss, "", ""))
c = result.get("corpus")
if c:
    ratio = (c["candle_texts_per_s_process"] / c["st_texts_per_s"]
             if c.get("st_texts_per_s") and c.get("candle_texts_per_s_process") else None)
    rows.append((f"Corpus: {c['texts']} sentences through `embed`, whole process incl. load, vs "
                 f"sentence-transformers `encode(batch_size=32)` load + encode (texts/s; peak RSS)",
                 f"{f(c['candle_texts_per_s_process'], '.1f')} vs {f(c['st_texts_per_s'], '.1f')} "
                 f"({f(c['st_texts_per_s_with_imports'], '.1f')} with its {f(c['st_import_s'], '.1f')} s of "
                 f"imports); {f(c['candle_peak_rss_mib'], '.0f')} vs {f(c['st_peak_rss_mib'], '.0f')} MiB"
                 + ("" if ratio is None else f" = **{ratio:.2f}×**"),
                 "≥ 1.3×, RSS ≤ 300 MB",
                 ok(None if ratio is None else ratio >= 1.3 and c["candle_peak_rss_mib"] <= 286)))
for variant, q in (result.get("quantize") or {}).items():
    acc = q.get("accuracy")
    acc_text = "float (the reference)" if variant == "f32" else (
        "—" if not acc else
        f"top-1 {acc['top1_agreement']}/{acc['positions']}, max \\|Δlogit\\| {acc['max_abs_dlogit_top10']:.3f}, "
        f"greedy {acc['greedy_same']}/{acc['greedy_total']}")
    rows.append((f"Quantize your own: SmolLM2-135M {variant} (weights in memory; load; TTFT; decode; "
                 f"p50/p95/p99; peak RSS; vs float)",
                 f"{f(q['weight_bytes'] / 2**20, '.0f')} MiB; {f(q['load_ms'], '.0f')} ms; {f(q['ttft_ms'], '.0f')} ms; "
                 f"{f(q['decode_tokens_per_s'], '.1f')} tok/s; {f(q['decode_step_p50_ms'], '.1f')}/"
                 f"{f(q['decode_step_p95_ms'], '.1f')}/{f(q['decode_step_p99_ms'], '.1f')} ms; "
                 f"{f(q['peak_rss_mib'], '.0f')} MiB; {acc_text}", "", ""))
m = machine
md = [f"Machine: {m.get('cpu')}, {m.get('cores')} cores, {m.get('memory_gib')} GiB; {m.get('rustc')}; "
      f"commit {m.get('commit')}{' (dirty)' if m.get('dirty') else ''}; {m.get('date_utc')}; "
      f"load average {' '.join(m.get('loadavg_start', []))} at start, {' '.join(m['loadavg_end'])} at end; "
      f"inference threads {m.get('threads')}; medians of {m.get('repeats')} runs.", "",
      "| Metric | Result | Goal | Met |", "|---|---|---|---|"]
md += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
for name, l in (result.get("llm") or {}).items():
    loads = ", ".join(x.split()[0] for x in l["loadavg"] if x)
    md += ["", f"LLM {name}: medians of {l['runs']['ours']} runs each side, alternating (ours, then "
           f"llama.cpp); 1-minute load average at the end of each run: {loads}; greedy tokens "
           f"identical to ours before llama.cpp's first different one: {l['greedy_agreement']}."]
if result.get("max"):
    md += ["", "MAX (`cargo bench -p skillgen-max --bench max`):", "", "```"] + result["max"] + ["```"]
text = "\n".join(md) + "\n"
(out / "latest.json").write_text(json.dumps(result, indent=2) + "\n")
(out / "latest.md").write_text(text)
print(text)
EOF
echo "wrote $OUT/latest.json and $OUT/latest.md" >&2
