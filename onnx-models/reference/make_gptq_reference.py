#!/usr/bin/env python3
"""Make tiny GPTQ-format Llama checkpoints and their dequantized reference logits.

Run from the repository root (about 10 s, CPU only, no network):

    python3 onnx-models/reference/make_gptq_reference.py

Writes ``onnx-models/reference/gptq/<variant>/``, each a Hugging Face folder as
AutoGPTQ saves one: ``config.json`` and ``model.safetensors`` whose linear
layers are ``qweight`` / ``qzeros`` / ``scales`` / ``g_idx`` (4 bits, group 128)
and whose other tensors are fp16, plus ``reference.safetensors``:

* ``input_ids`` int64 [1, 12] and ``logits`` float32 [1, 12, 512]: transformers'
  ``LlamaForCausalLM`` (fp32, eager) on the *dequantized* weights
  (``scale · (q − zero)``, what the checkpoint means), positions 0..11.

The model: hidden 256, 2 layers, 4 heads of 64, 2 key/value heads,
intermediate 512, vocab 512, 64 positions, untied lm_head. The weights are
random, then rounded to the nearest code of each group (RTN into GPTQ's
layout; GPTQ's own error-compensating rounding would give other codes in the
same layout, which is all the importer reads).

Variants:

* ``llama-g128``: symmetric, no act-order (``g_idx[k] = k // 128``),
  ``quantization_config`` in config.json, ``checkpoint_format: gptq`` (AutoGPTQ
  v1: ``qzeros`` holds each zero point minus one, so the symmetric 8 is stored as 7).
* ``llama-g128-actorder``: symmetric, ``desc_act: true``: each matrix's input
  channels quantized in a permuted order, groups of 128 consecutive channels
  of that order, so ``g_idx`` is a permutation of ``k // 128``; the settings
  in ``quantize_config.json`` (older AutoGPTQ) rather than config.json.
* ``llama-g128-asym``: ``sym: false``, zero points per group from the group's
  range, ``checkpoint_format: gptq_v2`` (zeros stored as they are).

Packing (AutoGPTQ's): ``qweight`` int32 [K/8, N], code of input k and output
n at bits ``4·(k % 8)`` of ``qweight[k // 8, n]``; ``qzeros`` int32
[groups, N/8], zero of output n at bits ``4·(n % 8)`` of ``qzeros[g, n // 8]``;
``scales`` fp16 [groups, N]; ``g_idx`` int32 [K].
"""

import json
import os
import shutil
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["CUDA_VISIBLE_DEVICES"] = ""

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

OUT = Path(__file__).resolve().parent / "gptq"
GROUP = 128
LINEARS = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
]


def config():
    return LlamaConfig(
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        vocab_size=512,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=1,
        attn_implementation="eager",
    )


def random_weights(cfg, seed):
    """Random fp16-representable weights; norms 1 + 0.1·randn, the rest 0.05·randn."""
    g = torch.Generator().manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    weights = {}
    for name, p in model.state_dict().items():
        base = 1.0 if "norm" in name else 0.0
        scale = 0.1 if "norm" in name else 0.05
        weights[name] = (base + scale * torch.randn(p.shape, generator=g)).half().float()
    return weights


def quantize(w, perm, sym):
    """RTN of w [N, K] (fp32) into GPTQ's layout, groups of GROUP over input channels
    in `perm` order. Returns (codes [N, K] in w's order, scales fp16 [G, N],
    zeros [G, N], g_idx [K])."""
    n, k = w.shape
    groups = k // GROUP
    g_idx = np.empty(k, dtype=np.int32)
    g_idx[perm] = np.arange(k) // GROUP
    codes = np.zeros((n, k), dtype=np.int64)
    scales = np.zeros((groups, n), dtype=np.float16)
    zeros = np.zeros((groups, n), dtype=np.int64)
    for g in range(groups):
        cols = perm[g * GROUP:(g + 1) * GROUP]
        block = w[:, cols]
        if sym:
            xmax = np.maximum(np.abs(block.min(axis=1)), block.max(axis=1))
            scale = (2 * xmax / 15).astype(np.float16).astype(np.float64)
            zero = np.full(n, 8)
        else:
            xmin, xmax = np.minimum(block.min(axis=1), 0), np.maximum(block.max(axis=1), 0)
            scale = ((xmax - xmin) / 15).astype(np.float16).astype(np.float64)
            zero = np.clip(np.round(-xmin / scale), 0, 15).astype(np.int64)
        q = np.clip(np.round(block / scale[:, None]) + zero[:, None], 0, 15).astype(np.int64)
        codes[:, cols] = q
        scales[g] = scale.astype(np.float16)
        zeros[g] = zero
    return codes, scales, zeros, g_idx


def pack_rows(values, axis_len):
    """Eight 4-bit values to an int32, low nibble first, along the first axis."""
    v = values.reshape(axis_len // 8, 8, -1).astype(np.uint32)
    packed = np.zeros(v[:, 0].shape, dtype=np.uint32)
    for i in range(8):
        packed |= v[:, i] << np.uint32(4 * i)
    return packed.view(np.int32)


def dequantize(codes, scales, zeros, g_idx):
    s = scales.astype(np.float32)[g_idx].T  # [N, K]
    z = zeros[g_idx].T
    return ((codes - z) * s).astype(np.float32)


def variant(name, weights, cfg, act_order, sym, v1, config_file):
    rng = np.random.default_rng(7)
    tensors, dequantized = {}, {}
    for key, w in weights.items():
        module = key.removesuffix(".weight")
        if not any(module.endswith(l) for l in LINEARS):
            tensors[key] = w.half()
            dequantized[key] = w
            continue
        w = w.numpy().astype(np.float64)
        k = w.shape[1]
        perm = rng.permutation(k) if act_order else np.arange(k)
        codes, scales, zeros, g_idx = quantize(w, perm, sym)
        stored_zeros = zeros - 1 if v1 else zeros
        tensors[f"{module}.qweight"] = torch.from_numpy(pack_rows(codes.T, k).copy())
        tensors[f"{module}.qzeros"] = torch.from_numpy(pack_rows(stored_zeros.T, stored_zeros.shape[1]).T.copy())
        tensors[f"{module}.scales"] = torch.from_numpy(scales.copy())
        tensors[f"{module}.g_idx"] = torch.from_numpy(g_idx.copy())
        dequantized[key] = torch.from_numpy(dequantize(codes, scales, zeros, g_idx))

    quant = {
        "bits": 4,
        "group_size": GROUP,
        "desc_act": act_order,
        "sym": sym,
        "true_sequential": True,
        "damp_percent": 0.01,
        "checkpoint_format": "gptq" if v1 else "gptq_v2",
    }
    folder = OUT / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    hf = cfg.to_dict()
    hf["dtype"] = "float16"
    if config_file:
        (folder / "quantize_config.json").write_text(json.dumps(quant, indent=2, sort_keys=True) + "\n")
    else:
        hf["quantization_config"] = {"quant_method": "gptq", **quant}
    (folder / "config.json").write_text(json.dumps(hf, indent=2, sort_keys=True) + "\n")
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})

    model = LlamaForCausalLM(cfg).eval()
    model.load_state_dict(dequantized)
    ids = torch.tensor([[292, 222, 418, 274, 469, 293, 260, 309, 5, 77, 300, 424]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
    save_file(
        {"input_ids": ids, "logits": logits.contiguous()},
        folder / "reference.safetensors",
        metadata={"built_with": f"torch {torch.__version__}, numpy {np.__version__}"},
    )
    # The round trip of the packing: unpack what was written and compare.
    q = tensors["model.layers.0.mlp.down_proj.qweight"].numpy().view(np.uint32)
    unpacked = np.stack([(q >> np.uint32(4 * i)) & 15 for i in range(8)], axis=1).reshape(-1, q.shape[1])
    zq = tensors["model.layers.0.mlp.down_proj.qzeros"].numpy().view(np.uint32)
    zu = np.stack([(zq >> np.uint32(4 * i)) & 15 for i in range(8)], axis=2).reshape(zq.shape[0], -1)
    w = dequantize(unpacked.T.astype(np.int64), tensors["model.layers.0.mlp.down_proj.scales"].numpy(),
                   zu.astype(np.int64) + (1 if v1 else 0), tensors["model.layers.0.mlp.down_proj.g_idx"].numpy())
    assert np.array_equal(w, dequantized["model.layers.0.mlp.down_proj.weight"].numpy()), name
    err = (dequantized["model.layers.0.mlp.down_proj.weight"] - weights["model.layers.0.mlp.down_proj.weight"]).abs()
    print(f"{name}: logits max |{logits.abs().max():.3f}|, quantization error max {err.max():.4f}")


def main():
    cfg = config()
    weights = random_weights(cfg, 22)
    variant("llama-g128", weights, cfg, act_order=False, sym=True, v1=True, config_file=False)
    variant("llama-g128-actorder", weights, cfg, act_order=True, sym=True, v1=True, config_file=True)
    variant("llama-g128-asym", weights, cfg, act_order=False, sym=False, v1=False, config_file=False)


if __name__ == "__main__":
    main()
