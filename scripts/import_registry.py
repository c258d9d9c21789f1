#!/usr/bin/env python3
"""Build skillgen's models.yaml from the real sources.

One entry per `model_type` registered by transformers 5.23.0 (sub-configs included and marked), with:
  * the model classes per task, from the auto `*_MAPPING_NAMES` dicts of `transformers.models.auto.modeling_auto`;
  * input modalities, from the tokenizer / image-processor / feature-extractor / video-processor mapping names;
  * the sub-config relation, from each config class's `sub_configs`;
  * the candle-transformers 0.11.1 module implementing it (source dir in the cargo registry);
  * the MAX 26.7.0 architectures implementing it (dumped by running MAX's own python, see `--max-python`);
  * a family, derived by the explicit ordered rules in FAMILY_RULES below, or curated by hand in models.yaml;
  * hand-curated support facts, kept from the existing models.yaml like `notes`: `native` (task -> the candle
    implementation skillgen runs and has verified) and `refused` (backend -> why skillgen refuses to run it there).

Run it with the transformers venv:  ~/.cache/skillgen/venv-import/bin/python scripts/import_registry.py
Exit status: 0 ok; 1 `--check` found the file out of date; 2 bad environment / table error;
3 file written but some entries have no family (listed on stderr): curate them in models.yaml and re-run.
"""

from __future__ import annotations

import argparse
import glob
import importlib
import json
import logging
import os
import re
import subprocess
import sys
import warnings

PINS = {"transformers": "5.23.0", "candle_transformers": "0.11.1", "max": "26.7.0"}

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "models.yaml")
DEFAULT_MAX_PYTHON = os.path.expanduser("~/.cache/skillgen/venv-max/bin/python")

# --------------------------------------------------------------------------------------------------
# Vocabulary shared with the Rust generator (it validates models.yaml against exactly these).
# --------------------------------------------------------------------------------------------------

FAMILIES = [
    "encoder", "decoder", "encoder-decoder", "vision", "vision-text", "speech", "audio", "multimodal",
    "video", "time-series", "diffusion", "reinforcement-learning", "graph", "retrieval",
]
MODALITIES = ["text", "image", "audio", "video", "time-series", "graph", "trajectory"]

TASK_CATEGORIES = {
    "text": ["causal-lm", "masked-lm", "multiple-choice", "next-sentence-prediction", "question-answering",
             "sequence-classification", "seq-to-seq-causal-lm", "table-question-answering", "decision", "text-encoding",
             "token-classification"],
    "image": ["image", "image-classification", "causal-image-modeling", "depth-estimation", "image-matting",
              "image-segmentation", "image-to-image", "instance-segmentation", "keypoint-detection",
              "keypoint-matching", "masked-image-modeling", "mask-generation", "normal-estimation",
              "object-detection", "pointmap-estimation", "pose-estimation", "semantic-segmentation",
              "table-recognition", "universal-segmentation", "text-recognition"],
    "video": ["video-classification"],
    "audio": ["audio-classification", "audio-frame-classification", "audio-xvector", "ctc", "rnnt", "tdt",
              "speech-seq-2-seq", "text-to-spectrogram", "text-to-waveform"],
    "vision-language": ["image-text-to-text", "multimodal-lm", "visual-question-answering",
                        "document-question-answering", "zero-shot-image-classification",
                        "zero-shot-object-detection"],
    "time-series": ["time-series-classification", "time-series-prediction", "time-series-regression"],
    "generic": ["base-model", "pretraining", "backbone", "retrieval"],
}
TASK_TO_CATEGORY = {t: c for c, ts in TASK_CATEGORIES.items() for t in ts}

_ALL_CATS = set(TASK_CATEGORIES)
FAMILY_ACCEPTS = {
    "encoder": {"generic", "text"}, "decoder": {"generic", "text"}, "encoder-decoder": {"generic", "text"},
    "retrieval": {"generic", "text"},
    "vision": {"generic", "image", "video"},
    "vision-text": {"generic", "text", "image", "vision-language"},
    "speech": {"generic", "text", "audio"}, "audio": {"generic", "text", "audio"},
    "multimodal": _ALL_CATS - {"time-series"},
    "video": {"generic", "image", "video", "vision-language"},
    "time-series": {"generic", "time-series"},
    "diffusion": {"generic", "image"},
    "reinforcement-learning": {"generic"},
    "graph": {"generic"},
}

FAMILY_DEFAULT_MODALITIES = {
    "encoder": ["text"], "decoder": ["text"], "encoder-decoder": ["text"], "retrieval": ["text"],
    "vision": ["image"], "speech": ["audio"], "audio": ["audio"], "video": ["video"],
    "vision-text": ["image", "text"], "multimodal": ["image", "text"], "time-series": ["time-series"],
    "graph": ["graph"], "reinforcement-learning": ["trajectory"], "diffusion": ["image"],
}

# Modalities implied by the category of a task the model type has. `generic` implies nothing; `decision`
# implies nothing either (in transformers 5.23.0 it is a head on top of a language model, see the report in
# main()); the family default supplies `trajectory` for reinforcement-learning entries.
CATEGORY_MODALITIES = {
    "text": ["text"], "image": ["image"], "video": ["video"], "audio": ["audio"],
    "vision-language": ["image", "text"], "time-series": ["time-series"], "generic": [],
}

# --------------------------------------------------------------------------------------------------
# candle-transformers: module -> model_type(s).
#
# Default rule ("obvious name match"): a module maps to the model_type equal to its name, or to its name
# with `_` replaced by `-`. The table below overrides that rule for every module where it is wrong or
# incomplete. A value of None means "implements no transformers model_type" (needed where the name
# collides with a model_type but the module implements another checkpoint format). Modules absent from
# both the table and the name rule map to nothing and are listed in the summary (many candle modules are
# not Hugging Face transformers models at all). `quantized_*` modules are GGUF variants of the plain
# module; the entry records the plain module only.
# The importer fails loudly if the table names a module that is not in the candle source or a model_type
# that transformers does not register.
# --------------------------------------------------------------------------------------------------

CANDLE_TABLE: dict[str, list[str] | None] = {
    # Renamed modules.
    "bigcode": ["gpt_bigcode"],             # StarCoder / SantaCoder (GPTBigCode)
    "blip_text": ["blip_text_model"],       # text decoder of BLIP
    "debertav2": ["deberta-v2"],
    "deepseek2": ["deepseek_v2"],
    "gemma3": ["gemma3_text"],              # text-only Gemma 3 (Gemma3ForCausalLM)
    "glm4_new": ["glm4"],                   # HF-format GLM-4 (THUDM/GLM-4-9B-0414)
    "smol": ["smollm3"],
    "stable_lm": ["stablelm"],
    "xlm_roberta": ["xlm-roberta"],
    # Modules implementing a composite model together with its registered sub-configs / siblings.
    "chinese_clip": ["chinese_clip", "chinese_clip_text_model", "chinese_clip_vision_model"],
    "clip": ["clip", "clip_text_model", "clip_vision_model"],
    "siglip": ["siglip", "siglip_text_model", "siglip_vision_model"],
    "gemma4": ["gemma4", "gemma4_text", "gemma4_vision", "gemma4_audio"],
    "qwen3_vl": ["qwen3_vl", "qwen3_vl_text", "qwen3_vl_vision"],
    "voxtral": ["voxtral", "voxtral_encoder"],
    "llava": ["llava", "llava_next"],       # candle's llava also loads LLaVA-NeXT (llava-v1.6) checkpoints
    "t5": ["t5", "mt5"],                    # mT5 uses the T5 architecture
    # Name collides with a transformers model_type, but the module loads another checkpoint format.
    "beit": None,              # timm BEiT weights
    "convnext": None,          # timm ConvNeXt / ConvNeXt-V2 weights
    "dinov2": None,            # original facebookresearch/dinov2 weights
    "efficientnet": None,      # timm EfficientNet weights
    "hiera": None,             # timm Hiera weights
    "resnet": None,            # timm ResNet weights
    "dac": None,               # original descript-audio-codec weights
    "csm": None,               # original Sesame CSM weights (not the transformers `csm` port)
    "glm4": None,              # ChatGLM-style GLM-4 (THUDM/glm-4-9b, remote code); HF-format GLM-4 is glm4_new
}

# --------------------------------------------------------------------------------------------------
# Family derivation: ordered rules, the first that applies wins. Each rule names its evidence.
# `cats` = the set of task categories of the entry's tasks, without `generic`.
# --------------------------------------------------------------------------------------------------

SPEECH_TASKS = {"ctc", "speech-seq-2-seq", "rnnt", "tdt", "text-to-spectrogram", "text-to-waveform"}
MULTIMODAL_VL_TASKS = {"image-text-to-text", "multimodal-lm", "visual-question-answering",
                       "document-question-answering"}
STRONG_ENCODER_TASKS = {"masked-lm", "next-sentence-prediction"}
ENCODER_TASKS = {"masked-lm", "token-classification", "question-answering", "multiple-choice",
                 "next-sentence-prediction", "text-encoding"}

FAMILY_RULES_DOC = """
 1. (none: in transformers 5.23.0 `decision` is MODEL_FOR_DECISION, a text-classification-style head
    on a language model, so it is a text task and gives no family evidence of its own)
 2. tasks: any time-series task                               -> time-series
 3. tasks: image-text-to-text / multimodal-lm / VQA / doc-QA  -> multimodal
 4. tasks: other vision-language (zero-shot image cls / det.) -> vision-text
 5. tasks: ctc / speech-seq-2-seq / rnnt / tdt / text-to-spectrogram / text-to-waveform -> speech
 6. tasks: other audio tasks                                  -> audio
 7. tasks: video-classification                               -> video
 8. tasks: any image task                                     -> vision
 9. tasks: seq-to-seq-causal-lm                               -> encoder-decoder
10. tasks: masked-lm / next-sentence-prediction               -> encoder
    (before rule 11: BERT-likes also ship a causal LM head, e.g. BertLMHeadModel)
11. tasks: causal-lm                                          -> decoder
    (before rule 12: decoder LMs such as llama / qwen2 / mistral ship token-classification and QA heads)
12. tasks: token-cls / QA / multiple-choice / text-encoding   -> encoder
13. tasks: retrieval (AutoModelForRetrieval)                 -> retrieval
14. tasks: backbone (AutoBackbone: image feature-map backbones) -> vision
    Only base-model / pretraining tasks, or none. "keys" are the config's base_config_key and
    the keys its parents list it under in `sub_configs`; "parents" their resolved families:
15. keys vision_config / image_config / backbone_config / vq_config / SAM parts -> vision
16. keys audio_config / speech_config: parents all speech -> speech, else audio
17. keys text_config: parents all multimodal / speech (LLM-backed) -> decoder; all vision-text -> encoder
18. parents all of one single-modality family (vision, speech, audio, video, time-series) -> that family
19. processors: audio feature extractor, no image/video processor      -> audio
20. processors: video processor, no tokenizer / feature extractor      -> video
21. processors: image processor only                                   -> vision
22. config is_encoder_decoder and a tokenizer, no image/audio/video processor -> encoder-decoder
    otherwise: unresolved (curate `family` + `family_source: curated` in models.yaml)
"""

VISION_KEYS = {"vision_config", "image_config", "backbone_config", "vq_config", "mask_decoder_config",
               "prompt_encoder_config", "sam_config"}
AUDIO_KEYS = {"audio_config", "speech_config"}
SINGLE_MODALITY_FAMILIES = {"vision", "speech", "audio", "video", "time-series"}


def derive_family_from_tasks(tasks: set[str]) -> tuple[str | None, str]:
    cats = {TASK_TO_CATEGORY[t] for t in tasks} - {"generic"}
    if tasks & set(TASK_CATEGORIES["time-series"]):
        return "time-series", "rule 2: time-series task"
    if tasks & MULTIMODAL_VL_TASKS:
        return "multimodal", "rule 3: image-text-to-text/multimodal-lm/VQA/doc-QA task"
    if "vision-language" in cats:
        return "vision-text", "rule 4: zero-shot vision-language task"
    if tasks & SPEECH_TASKS:
        return "speech", "rule 5: speech task"
    if "audio" in cats:
        return "audio", "rule 6: audio task"
    if "video" in cats:
        return "video", "rule 7: video-classification task"
    if "image" in cats:
        return "vision", "rule 8: image task"
    if "seq-to-seq-causal-lm" in tasks:
        return "encoder-decoder", "rule 9: seq-to-seq-causal-lm task"
    if tasks & STRONG_ENCODER_TASKS:
        return "encoder", "rule 10: masked-lm / next-sentence-prediction task"
    if "causal-lm" in tasks:
        return "decoder", "rule 11: causal-lm task"
    if tasks & ENCODER_TASKS:
        return "encoder", "rule 12: token-cls / QA / multiple-choice / text-encoding task without causal-lm"
    if "retrieval" in tasks:
        return "retrieval", "rule 13: retrieval task"
    if "backbone" in tasks:
        return "vision", "rule 14: backbone task"
    return None, ""


def derive_family_from_config(e: dict, parent_families: list[str | None]) -> tuple[str | None, str]:
    """Rules 15-18. A None in parent_families is a parent not resolved (yet): rules needing it wait."""
    keys = e["config_keys"]
    pf = {f for f in parent_families if f}
    complete = None not in parent_families
    if keys & VISION_KEYS:
        return "vision", "rule 15: config key " + ",".join(sorted(keys & VISION_KEYS))
    if not complete:
        return None, ""
    if keys & AUDIO_KEYS:
        return ("speech" if pf == {"speech"} else "audio"), "rule 16: config key audio, parents " + ",".join(sorted(pf))
    if "text_config" in keys and pf:
        if pf <= {"multimodal", "speech"}:
            return "decoder", "rule 17: text_config of " + ",".join(sorted(pf))
        if pf == {"vision-text"}:
            return "encoder", "rule 17: text_config of vision-text"
    if len(pf) == 1 and pf <= SINGLE_MODALITY_FAMILIES:
        return next(iter(pf)), "rule 18: sub-config of " + next(iter(pf))
    return None, ""


def derive_family_from_processors(e: dict) -> tuple[str | None, str]:
    p = e["processors"]
    if p["audio_fe"] and not (p["image"] or p["video"] or p["image_fe"]):
        return "audio", "rule 19: audio feature extractor"
    if p["video"] and not (p["tokenizer"] or p["audio_fe"]):
        return "video", "rule 20: video processor"
    if (p["image"] or p["image_fe"]) and not (p["tokenizer"] or p["audio_fe"] or p["video"]):
        return "vision", "rule 21: image processor"
    if e["is_encoder_decoder"] and p["tokenizer"] and not (p["image"] or p["image_fe"] or p["audio_fe"] or p["video"]):
        return "encoder-decoder", "rule 22: config is_encoder_decoder"
    return None, ""


# --------------------------------------------------------------------------------------------------
# MAX: dumped by a subprocess running MAX's own python.
# --------------------------------------------------------------------------------------------------

MAX_DUMP_SCRIPT = r"""
import importlib, json, logging, sys
logging.disable(logging.CRITICAL)
from importlib.metadata import version
from max.pipelines import PIPELINE_REGISTRY as R
lookup = R._arch_lookup
pending = []
for name, entries in dict(lookup._lazy_architectures).items():
    pending += [(m, s, p, False) for (m, s, p) in entries]
for target, entries in dict(getattr(lookup, "_lazy_speculators", {})).items():
    pending += [(m, s, p, True) for (m, s, p) in entries]
PREFIX = "max.pipelines.architectures."
out = []
for module, symbol, package, spec in pending:
    mod = importlib.import_module(module, package)
    decl = getattr(mod, symbol)
    arch = mod.__name__[len(PREFIX):].split(".")[0] if mod.__name__.startswith(PREFIX) else mod.__name__
    task = getattr(decl, "task", None)
    out.append({"arch": arch, "class": decl.name, "task": str(task) if task is not None and not spec else "",
                "speculator": spec})
for decl in list(lookup.architectures.values()):
    m = getattr(decl.pipeline_model, "__module__", "")
    arch = m[len(PREFIX):].split(".")[0] if m.startswith(PREFIX) else m
    if not any(o["class"] == decl.name for o in out):
        out.append({"arch": arch, "class": decl.name, "task": str(decl.task), "speculator": False})
json.dump({"max": version("max"), "architectures": out}, sys.stdout)
"""


def load_max(max_python: str) -> dict[str, dict]:
    if not os.path.exists(max_python):
        die(f"MAX python not found: {max_python} (see scripts/README.md)")
    r = subprocess.run([max_python, "-c", MAX_DUMP_SCRIPT], capture_output=True, text=True)
    if r.returncode != 0:
        die(f"MAX architecture dump failed ({max_python}):\n{r.stderr[-4000:]}")
    data = json.loads(r.stdout)
    if data["max"] != PINS["max"]:
        die(f"max {data['max']} installed at {max_python}; this importer is pinned to max=={PINS['max']}")
    archs: dict[str, dict] = {}
    for a in data["architectures"]:
        d = archs.setdefault(a["arch"], {"classes": set(), "tasks": set()})
        d["classes"].add(a["class"])
        if a["task"]:
            d["tasks"].add(a["task"])
    return archs


# --------------------------------------------------------------------------------------------------
# transformers
# --------------------------------------------------------------------------------------------------


def task_id(mapping_name: str) -> str:
    base = mapping_name[: -len("_MAPPING_NAMES")]
    if base == "MODEL":
        return "base-model"
    assert base.startswith("MODEL_FOR_"), mapping_name
    return base[len("MODEL_FOR_"):].lower().replace("_", "-")


def load_transformers() -> tuple[dict[str, dict], dict[str, str]]:
    import transformers

    if transformers.__version__ != PINS["transformers"]:
        die(f"transformers {transformers.__version__} installed; pinned to transformers=={PINS['transformers']}")
    # `from transformers.models.auto import modeling_auto` yields a dummy object without torch; import the
    # submodules directly.
    ca = importlib.import_module("transformers.models.auto.configuration_auto")
    ma = importlib.import_module("transformers.models.auto.modeling_auto")
    ta = importlib.import_module("transformers.models.auto.tokenization_auto")
    ia = importlib.import_module("transformers.models.auto.image_processing_auto")
    fa = importlib.import_module("transformers.models.auto.feature_extraction_auto")
    va = importlib.import_module("transformers.models.auto.video_processing_auto")

    entries: dict[str, dict] = {}
    cls_to_types: dict[int, list[str]] = {}
    for mt, cfg_name in ca.CONFIG_MAPPING_NAMES.items():
        cls = ca.CONFIG_MAPPING[mt]
        module = ca.model_type_to_module_name(mt)
        deprecated = module.startswith("deprecated.")
        if deprecated:
            module = module[len("deprecated."):]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ied = bool(getattr(cls(), "is_encoder_decoder", False))
        except Exception:
            ied = bool(getattr(cls, "is_encoder_decoder", False))
        bck = getattr(cls, "base_config_key", "") or ""
        bck = [bck] if isinstance(bck, str) else list(bck)
        entries[mt] = {
            "model_type": mt, "config_class": cfg_name, "hf_module": module, "deprecated": deprecated,
            "tasks": {}, "cls": cls, "is_encoder_decoder": ied, "base_config_keys": [k for k in bck if k],
            "sub_config_of": set(), "config_keys": set(k for k in bck if k),
            "processors": {"tokenizer": False, "image": False, "video": False, "audio_fe": False,
                           "image_fe": False},
        }
        cls_to_types.setdefault(id(cls), []).append(mt)

    # Sub-config relation: the parent's config class lists the child's config class in `sub_configs`.
    for mt, e in entries.items():
        for key, sub in (getattr(e["cls"], "sub_configs", None) or {}).items():
            for child in cls_to_types.get(id(sub), []):
                if child != mt:
                    entries[child]["sub_config_of"].add(mt)
                    entries[child]["config_keys"].add(key)

    mapping_names = sorted(n for n in dir(ma) if n.startswith("MODEL") and n.endswith("_MAPPING_NAMES"))
    for name in mapping_names:
        tid = task_id(name)
        for mt, classes in getattr(ma, name).items():
            if mt not in entries:
                die(f"{name} maps unknown model_type {mt!r}")
            classes = [classes] if isinstance(classes, str) else list(classes)
            entries[mt]["tasks"].setdefault(tid, set()).update(c for c in classes if c)
    unknown = sorted({t for e in entries.values() for t in e["tasks"]} - set(TASK_TO_CATEGORY))
    if unknown:
        die(f"transformers has task mappings the generator's categories don't know: {unknown}")

    image_processor_classes = set()
    for mt, v in ia.IMAGE_PROCESSOR_MAPPING_NAMES.items():
        if mt in entries:
            entries[mt]["processors"]["image"] = True
        for c in (v.values() if isinstance(v, dict) else [v]):
            if c:
                image_processor_classes.add(c)
    for mt in ta.TOKENIZER_MAPPING_NAMES:
        if mt in entries:  # a None class means an optional backend (e.g. sentencepiece) is missing here
            entries[mt]["processors"]["tokenizer"] = True
    for mt in va.VIDEO_PROCESSOR_MAPPING_NAMES:
        if mt in entries:
            entries[mt]["processors"]["video"] = True
    for mt, c in fa.FEATURE_EXTRACTOR_MAPPING_NAMES.items():
        if mt not in entries:
            continue
        obj = getattr(transformers, c, None)
        bases = [b.__name__ for b in getattr(obj, "__mro__", [])]
        is_image = ("ImageProcessor" in c or c in image_processor_classes or "ImageFeatureExtractor" in c
                    or any("ImageProcess" in b for b in bases))
        entries[mt]["processors"]["image_fe" if is_image else "audio_fe"] = True

    return entries, {tid: n for n in mapping_names for tid in [task_id(n)]}


# --------------------------------------------------------------------------------------------------
# candle
# --------------------------------------------------------------------------------------------------


def find_candle_src(arg: str | None) -> str:
    if arg:
        src = arg
    else:
        pat = os.path.expanduser(
            f"~/.cargo/registry/src/index.crates.io-*/candle-transformers-{PINS['candle_transformers']}/src/models")
        found = sorted(glob.glob(pat))
        if not found:
            die(f"candle-transformers {PINS['candle_transformers']} not found ({pat}); "
                "run `cargo fetch` or pass --candle-src")
        src = found[0]
    if not os.path.isdir(src):
        die(f"--candle-src {src} is not a directory")
    crate_dir = os.path.basename(os.path.dirname(os.path.dirname(os.path.abspath(src))))
    if crate_dir != f"candle-transformers-{PINS['candle_transformers']}":
        die(f"{src} is not candle-transformers-{PINS['candle_transformers']}/src/models (found {crate_dir})")
    return src


def load_candle(src: str, model_types: set[str]) -> tuple[dict[str, str], list[str], list[str]]:
    modules = sorted(
        (f[:-3] if f.endswith(".rs") else f)
        for f in os.listdir(src)
        if f != "mod.rs" and (f.endswith(".rs") or os.path.isdir(os.path.join(src, f)))
    )
    bad = [m for m in CANDLE_TABLE if m not in modules]
    if bad:
        die(f"CANDLE_TABLE names modules not in {src}: {bad}")
    bad = sorted({t for ts in CANDLE_TABLE.values() if ts for t in ts} - model_types)
    if bad:
        die(f"CANDLE_TABLE names model_types transformers does not register: {bad}")
    mt_to_module: dict[str, str] = {}
    unmapped, quantized = [], []
    for m in modules:
        if m.startswith("quantized_"):
            quantized.append(m)
            continue
        if m in CANDLE_TABLE:
            targets = CANDLE_TABLE[m] or []
        else:
            targets = [t for t in (m, m.replace("_", "-")) if t in model_types][:1]
        if not targets:
            unmapped.append(m)
        for t in targets:
            if t in mt_to_module:
                die(f"model_type {t} maps to two candle modules: {mt_to_module[t]} and {m}")
            mt_to_module[t] = m
    return mt_to_module, unmapped, quantized


# --------------------------------------------------------------------------------------------------
# YAML output (hand-written for byte-determinism) and existing-file reading
# --------------------------------------------------------------------------------------------------

_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf"}


def q(s: str) -> str:
    if _PLAIN.match(s) and s.lower() not in _YAML_WORDS:
        return s
    return json.dumps(s)


def flow(items) -> str:
    return "[" + ", ".join(q(i) for i in items) + "]"


HEADER = """\
# skillgen model registry: one entry per Hugging Face model_type.
# Produced by `python3 scripts/import_registry.py` (see scripts/README.md) from transformers {transformers},
# candle-transformers {candle_transformers} and MAX {max}. Hand edits survive a re-import: set `family` together
# with `family_source: curated`, `native`, `refused` and `notes`. Everything else is overwritten by the importer.
version: 1
sources:
  transformers: {q_transformers}
  candle_transformers: {q_candle_transformers}
  max: {q_max}
models:
"""


def render(models: list[dict]) -> str:
    out = [HEADER.format(**PINS, **{"q_" + k: q(v) for k, v in PINS.items()})]
    for m in models:
        out.append(f"  - model_type: {q(m['model_type'])}\n")
        out.append(f"    config_class: {q(m['config_class'])}\n")
        out.append(f"    hf_module: {q(m['hf_module'])}\n")
        if m.get("family"):
            out.append(f"    family: {q(m['family'])}\n")
            out.append(f"    family_source: {q(m['family_source'])}\n")
        out.append(f"    modalities: {flow(m['modalities'])}\n")
        if m["deprecated"]:
            out.append("    deprecated: true\n")
        if m["sub_config_of"]:
            out.append(f"    sub_config_of: {flow(m['sub_config_of'])}\n")
        if m["tasks"]:
            out.append("    tasks:\n")
            for t in sorted(m["tasks"]):
                out.append(f"      {q(t)}: {flow(sorted(m['tasks'][t]))}\n")
        if m.get("candle"):
            out.append(f"    candle: {q(m['candle'])}\n")
        if m.get("max"):
            out.append(f"    max: {flow(m['max'])}\n")
        if m.get("native"):
            out.append("    native:\n")
            for t in sorted(m["native"]):
                out.append(f"      {q(t)}: {q(m['native'][t])}\n")
        if m.get("refused"):
            out.append("    refused:\n")
            for b in sorted(m["refused"]):
                out.append(f"      {q(b)}: {json.dumps(m['refused'][b])}\n")
        if m.get("notes"):
            out.append(f"    notes: {json.dumps(m['notes'])}\n")
    return "".join(out)


def read_existing(path: str) -> dict[str, dict]:
    if not os.path.exists(path):
        return {}
    import yaml

    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f) or {}
    return {str(m["model_type"]): m for m in doc.get("models") or []}


# --------------------------------------------------------------------------------------------------


def die(msg: str, code: int = 2):
    print(f"import_registry: error: {msg}", file=sys.stderr)
    sys.exit(code)


def warn(msg: str):
    print(f"import_registry: warning: {msg}", file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT, help="output file (default: models.yaml at the repo root)")
    ap.add_argument("--candle-src", help="candle-transformers-0.11.1/src/models (default: the cargo registry)")
    ap.add_argument("--max-python", default=DEFAULT_MAX_PYTHON, help="python of the venv with modular==26.7.0")
    ap.add_argument("--check", action="store_true", help="exit 1 if the output file would change; write nothing")
    ap.add_argument("--verbose", action="store_true", help="print the rule that gave each derived family")
    args = ap.parse_args()

    logging.disable(logging.WARNING)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    entries, _ = load_transformers()
    all_types = set(entries)
    candle_src = find_candle_src(args.candle_src)
    candle_map, candle_unmapped, candle_quantized = load_candle(candle_src, all_types)
    max_archs = load_max(args.max_python)

    # MAX: a model_type is implemented when one of its HF classes is an architecture's class name
    # (the `_ModuleV3` suffix names the same HF class served by the ModuleV3 implementation).
    for mt, e in entries.items():
        classes = {c for cs in e["tasks"].values() for c in cs}
        hits = sorted(a for a, d in max_archs.items()
                      if classes & {c.removesuffix("_ModuleV3") for c in d["classes"]})
        plain = [a for a in hits if not a.endswith("_modulev3")]
        e["max"] = plain or hits

    # ---- family: tasks first, then config/processor evidence for generic-only entries (iterated, since
    # rules 13/14 read the parent's family).
    derived: dict[str, str | None] = {}
    why: dict[str, str] = {}
    for mt, e in entries.items():
        derived[mt], why[mt] = derive_family_from_tasks(set(e["tasks"]))
    existing = read_existing(args.out)

    def final_family(mt):  # what the output will say (curated wins), used as parent evidence
        old = existing.get(mt)
        if old and old.get("family") and old.get("family_source") == "curated":
            return old["family"]
        return derived[mt]

    changed = True
    while changed:
        changed = False
        for mt, e in entries.items():
            if derived[mt] is not None:
                continue
            parents = [final_family(p) for p in sorted(e["sub_config_of"])]
            fam, w = derive_family_from_config(e, parents)
            if fam is None and None not in parents:  # processor evidence only once the parents are settled
                fam, w = derive_family_from_processors(e)
            if fam is not None:
                derived[mt], why[mt] = fam, w
                changed = True
    # last pass: entries whose parents never resolved fall back to processor evidence
    for mt, e in entries.items():
        if derived[mt] is None:
            derived[mt], why[mt] = derive_family_from_processors(e)

    # ---- assemble entries, merging hand edits from the existing file
    models, unresolved, violations, decision_extra = [], [], [], []
    n_derived = n_curated = 0
    for mt in sorted(entries):
        e = entries[mt]
        old = existing.get(mt, {})
        fam, src = derived[mt], "derived"
        if old.get("family"):
            if old.get("family_source") == "curated":
                fam, src = old["family"], "curated"
            elif old["family"] != derived[mt]:
                warn(f"{mt}: family {old['family']!r} differs from derived {derived[mt]!r} but says "
                     "family_source: derived; keeping it as a hand edit (family_source: curated)")
                fam, src = old["family"], "curated"
        if fam is not None and fam not in FAMILIES:
            die(f"{mt}: family {fam!r} is not one of {FAMILIES}")
        if fam is None:
            unresolved.append(mt)
        elif src == "curated":
            n_curated += 1
        else:
            n_derived += 1
        cats = {TASK_TO_CATEGORY[t] for t in e["tasks"]}
        if fam and cats - FAMILY_ACCEPTS[fam]:
            violations.append(f"{mt} ({fam}): {sorted(cats - FAMILY_ACCEPTS[fam])} tasks "
                              + str(sorted(t for t in e["tasks"] if TASK_TO_CATEGORY[t] not in FAMILY_ACCEPTS[fam])))
        mods = set()
        p = e["processors"]
        if p["tokenizer"]:
            mods.add("text")
        if p["image"] or p["image_fe"]:
            mods.add("image")
        if p["video"]:
            mods.add("video")
        if p["audio_fe"]:
            mods.add("audio")
        for c in cats:
            mods.update(CATEGORY_MODALITIES[c])
        if fam:
            mods.update(FAMILY_DEFAULT_MODALITIES[fam])
        models.append({
            "model_type": mt, "config_class": e["config_class"], "hf_module": e["hf_module"],
            "family": fam, "family_source": src, "modalities": sorted(mods),
            "deprecated": e["deprecated"], "sub_config_of": sorted(e["sub_config_of"]),
            "tasks": e["tasks"], "candle": candle_map.get(mt), "max": e["max"],
            # hand-curated, kept as they are (the generator validates them: `native` tasks must be listed)
            "native": old.get("native"), "refused": old.get("refused"), "notes": old.get("notes"),
        })
        for t in sorted(old.get("native") or {}):
            if t not in e["tasks"]:
                warn(f"{mt}: `native` names task {t!r}, which transformers no longer lists for it; "
                     "skillgen will reject the entry until `native` is fixed by hand")
        if args.verbose and src == "derived" and fam:
            print(f"  {mt}: {fam} ({why[mt]})")
    text = render(models)
    n_classes = len({c for e in entries.values() for cs in e["tasks"].values() for c in cs})
    print(f"entries: {len(models)} ({sum(1 for e in entries.values() if e['sub_config_of'])} sub-configs)")
    print(f"distinct model classes: {n_classes}")
    print(f"family: {n_derived} derived, {n_curated} curated, {len(unresolved)} unresolved")
    print(f"candle-mapped model types: {len(candle_map)} "
          f"(from {len(set(candle_map.values()))} modules; {len(candle_quantized)} quantized_* variants skipped)")
    print(f"candle modules mapping to no model_type ({len(candle_unmapped)}): {' '.join(candle_unmapped)}")
    n_max = sum(1 for m in models if m["max"])
    print(f"MAX-mapped model types: {n_max} "
          f"({len({a for m in models for a in m['max']})} of {len(max_archs)} MAX architectures used)")
    if decision_extra:
        warn("decision head next to other tasks (family taken from the other tasks): " + " ".join(decision_extra))
    for v in violations:
        warn("tasks outside the family's categories: " + v)

    if args.check:
        cur = open(args.out, encoding="utf-8").read() if os.path.exists(args.out) else None
        if cur != text:
            print(f"{args.out} is out of date", file=sys.stderr)
            return 1
        print(f"{args.out} is up to date")
    else:
        tmp = args.out + ".tmp"
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, args.out)
        print(f"wrote {args.out}")
    if unresolved:
        print(f"unresolved family ({len(unresolved)}); set `family:` and `family_source: curated` in "
              f"{args.out}:\n  " + "\n  ".join(unresolved), file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
