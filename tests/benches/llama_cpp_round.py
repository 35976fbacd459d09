#!/usr/bin/env python3
"""llama.cpp's side of the llama_cpp_speed bench (llama-cpp-python 0.3.36).

    llama_cpp_round.py quantize SRC.gguf DST.gguf q4_0|q8_0
    llama_cpp_round.py round FILE.gguf THREADS PROMPT_IDS(comma-separated) NEW_TOKENS

`round` loads the file, warms up on 8 tokens, then times the prompt in one
batch (pp) and NEW_TOKENS greedy steps of one token (tg), and prints one JSON
line: pp and tg in tokens/s, the resident set before the model was loaded
(the library is loaded by then) and its peak (VmHWM) at the end, in bytes.
"""

import ctypes
import json
import sys
import time

import numpy as np
import llama_cpp


def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def quantize(src, dst, kind):
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = {"q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0, "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0}[kind]
    params.allow_requantize = True
    params.nthread = 2
    if llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params)) != 0:
        sys.exit(f"llama_model_quantize {src} -> {dst} ({kind}) failed")


def round_(path, threads, prompt, new_tokens):
    base = status("VmRSS")
    llm = llama_cpp.Llama(
        model_path=path,
        n_threads=threads,
        n_threads_batch=threads,
        n_ctx=len(prompt) + new_tokens + 8,
        n_batch=len(prompt),
        n_ubatch=len(prompt),
        verbose=False,
    )
    llm.eval(prompt[:8])
    llm.reset()
    start = time.perf_counter()
    llm.eval(prompt)
    pp = len(prompt) / (time.perf_counter() - start)
    start = time.perf_counter()
    vocab = llm.n_vocab()
    for _ in range(new_tokens):
        # The logits of the batch's one row that asked for them (its last token).
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits(llm.ctx), shape=(vocab,))
        llm.eval([int(np.argmax(logits))])
    tg = new_tokens / (time.perf_counter() - start)
    print(json.dumps({"pp": pp, "tg": tg, "base_rss": base, "peak_rss": status("VmHWM")}))


if __name__ == "__main__":
    if sys.argv[1] == "quantize":
        quantize(*sys.argv[2:5])
    else:
        round_(sys.argv[2], int(sys.argv[3]), [int(t) for t in sys.argv[4].split(",")], int(sys.argv[5]))
