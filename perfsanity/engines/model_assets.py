"""A tiny, weightless model directory for the Dynamo frontend, the mocker and aiperf.

The directory holds ``config.json``, ``generation_config.json``, the tokenizer files written by
``PreTrainedTokenizerFast.save_pretrained`` (``tokenizer.json``, ``tokenizer_config.json`` with the
chat template, ...) and no weights. The tokenizer is a ByteLevel BPE trained on text generated
here from a fixed seed, so the result is offline and deterministic.

The harness itself does not need ``tokenizers``/``transformers``: the generation script runs in
the Dynamo tool venv (see :mod:`perfsanity.engines.tooling`). Results are cached under
``$PERFSANITY_HOME/models/tiny-<hash>`` (built in a temp dir, renamed into place under a lock).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from perfsanity.common.errors import PerfsanityError
from perfsanity.engines import tooling

MODEL_NAME = "tiny"
VOCAB_SIZE = 2048
CORPUS_SEED = 20261124
CORPUS_LINES = 4000
GENERATE_TIMEOUT_S = 180.0
REQUIRED_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json")

BOS, EOS, PAD = "<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (BOS, EOS, PAD, IM_START, IM_END)

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# A llama-shaped config. Sizes are small but plausible; no weights exist. Token ids are filled in
# from the trained tokenizer (special tokens are trained first, so they take ids 0..4).
BASE_CONFIG: dict[str, object] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "head_dim": 64,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
}

_WORDS = (
    "the a an of to in on for with at by from as is are was were be been it this that these those "
    "model token cache prefill decode worker router frontend request response latency throughput "
    "batch queue block layer head memory transfer stream server client benchmark run job node "
    "time first second last next fast slow small large new old good best better more less many "
    "data text word line file path port host name value number list key state event plane "
    "we you they he she i and or not but if then else when while so because after before "
    "make take give send read write open close start stop wait check keep find show tell use "
    "one two three four five six seven eight nine ten hundred thousand"
).split()
_PUNCT = (".", ",", "?", "!", ";", ":")


class ModelAssetError(PerfsanityError):
    """Generating the tiny model directory failed; the message carries the generator's output."""

    exit_code = 5


# Runs inside the Dynamo venv: argv[1] = JSON params file. Kept free of harness imports.
GENERATOR_SCRIPT = r'''
import json, sys
from pathlib import Path
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

p = json.loads(Path(sys.argv[1]).read_text())
out = Path(p["out"])
lines = Path(p["corpus"]).read_text().splitlines()
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(vocab_size=p["vocab_size"], special_tokens=p["special_tokens"],
                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                              show_progress=False)
tok.train_from_iterator(lines, trainer=trainer)
fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=p["bos"], eos_token=p["eos"],
                               pad_token=p["pad"], model_max_length=p["max_len"],
                               chat_template=p["chat_template"])
fast.save_pretrained(out)
# Readable by transformers 4.x and 5.x alike, and by readers that only look in tokenizer_config.json
# for the chat template (save_pretrained of transformers 5 writes chat_template.jinja instead).
tc_path = out / "tokenizer_config.json"
tc = json.loads(tc_path.read_text())
tc.update(tokenizer_class="PreTrainedTokenizerFast", chat_template=p["chat_template"])
tc_path.write_text(json.dumps(tc, indent=2, sort_keys=True) + "\n")
(out / "chat_template.jinja").write_text(p["chat_template"])
ids = {name: tok.token_to_id(p[name]) for name in ("bos", "eos", "pad", "im_end")}
config = dict(p["config"], vocab_size=tok.get_vocab_size(), bos_token_id=ids["bos"],
              eos_token_id=ids["eos"], pad_token_id=ids["pad"])
(out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
gen = {"bos_token_id": ids["bos"], "eos_token_id": [ids["eos"], ids["im_end"]],
       "pad_token_id": ids["pad"]}
(out / "generation_config.json").write_text(json.dumps(gen, indent=2, sort_keys=True) + "\n")
print(json.dumps({"vocab_size": tok.get_vocab_size(), **ids}))
'''


def build_corpus(seed: int = CORPUS_SEED, lines: int = CORPUS_LINES) -> str:
    """Deterministic pseudo-English text (plus digits and punctuation) to train the BPE on."""
    rng = random.Random(seed)
    out: list[str] = []
    for _ in range(lines):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 18))]
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words)), str(rng.randint(0, 99999)))
        sentence = " ".join(words)
        out.append(sentence[0].upper() + sentence[1:] + rng.choice(_PUNCT))
    return "\n".join(out) + "\n"


def generator_params(out: Path, corpus: Path) -> dict[str, object]:
    """The JSON parameters handed to :data:`GENERATOR_SCRIPT`."""
    return {
        "out": str(out), "corpus": str(corpus), "vocab_size": VOCAB_SIZE,
        "special_tokens": list(SPECIAL_TOKENS), "bos": BOS, "eos": EOS, "pad": PAD,
        "im_end": IM_END, "max_len": BASE_CONFIG["max_position_embeddings"],
        "chat_template": CHAT_TEMPLATE, "config": BASE_CONFIG,
    }


def asset_key(tool_fingerprint: str) -> str:
    """Hash of everything that determines the directory's content (inputs + tool versions)."""
    payload = json.dumps({
        "script": GENERATOR_SCRIPT, "params": generator_params(Path("-"), Path("-")),
        "corpus": [CORPUS_SEED, CORPUS_LINES, _WORDS, _PUNCT], "tool": tool_fingerprint,
    }, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def cache_dir(key: str) -> Path:
    """Where the model with ``key`` is cached."""
    return tooling.perfsanity_home() / "models" / f"{MODEL_NAME}-{key}"


def is_complete(path: Path) -> bool:
    """True when ``path`` holds every file the frontend, mocker and aiperf read."""
    return all((path / name).is_file() for name in REQUIRED_FILES)


def _run_generator(python: Path, out: Path) -> None:
    """Write the model files into the (empty) directory ``out`` using ``python``."""
    with tempfile.TemporaryDirectory(prefix="perfsanity-tiny-") as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text(build_corpus())
        params = Path(tmp) / "params.json"
        params.write_text(json.dumps(generator_params(out, corpus)))
        script = Path(tmp) / "generate.py"
        script.write_text(GENERATOR_SCRIPT)
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   RAYON_NUM_THREADS="1", TRANSFORMERS_VERBOSITY="error")
        try:
            proc = subprocess.run([str(python), str(script), str(params)], capture_output=True,
                                  text=True, env=env, timeout=GENERATE_TIMEOUT_S,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise ModelAssetError(f"tiny model generation timed out after {exc.timeout}s") from exc
    if proc.returncode != 0 or not is_complete(out):
        raise ModelAssetError(
            f"tiny model generation failed (exit {proc.returncode}) with {python}:\n"
            f"{proc.stdout[-2000:]}{proc.stderr[-4000:]}")


def _build_into_cache(python: Path, target: Path) -> None:
    """Generate in a sibling temp dir and rename it to ``target`` (atomic publish)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _run_generator(python, staging)
        staging.chmod(0o755)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _copy_to(src: Path, dest: Path) -> Path:
    """Copy the cached model into ``dest`` (atomically: temp sibling, then rename)."""
    if is_complete(dest):
        return dest
    if dest.exists() and any(dest.iterdir()):
        raise ModelAssetError(f"{dest} exists, is not empty and is not a complete model directory")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        for item in src.iterdir():
            shutil.copy2(item, staging / item.name)
        staging.chmod(0o755)
        try:
            os.replace(staging, dest)  # rename(2) may replace an empty directory
        except OSError:
            if not is_complete(dest):  # else another process just put the same files there
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return dest


def ensure_cached_model(tool: tooling.ToolEnv | None = None,
                        fingerprint: str | None = None) -> Path:
    """Return the cached tiny model dir, generating it (once, under a lock) if missing."""
    key = asset_key(fingerprint or tooling.TOOLS["dynamo"].fingerprint())
    target = cache_dir(key)
    if is_complete(target):
        return target
    tool = tool or tooling.ensure_tool("dynamo")  # only generation needs the venv
    lock = target.with_name(f".{target.name}.lock")
    with tooling.file_lock(lock, f"generation of tiny model {target}", tooling.install_timeout()):
        if not is_complete(target):
            started = time.monotonic()
            print(f"[perfsanity] generating tiny model into {target}", file=sys.stderr,
                  flush=True)
            if target.exists():
                shutil.rmtree(target)
            _build_into_cache(tool.python, target)
            print(f"[perfsanity] tiny model ready in {time.monotonic() - started:.1f}s",
                  file=sys.stderr, flush=True)
    return target


def ensure_tiny_model(dest: Path | None = None, *, tool: tooling.ToolEnv | None = None) -> Path:
    """Return a ready tiny model directory.

    Without ``dest`` this is the shared cache dir. With ``dest`` the cached files are copied there
    (e.g. into a job directory on a filesystem all nodes share) unless ``dest`` is already complete;
    ``dest`` must be missing or empty otherwise.
    """
    cached = ensure_cached_model(tool)
    if dest is None:
        return cached
    return _copy_to(cached, Path(dest))
