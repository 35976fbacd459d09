#!/usr/bin/env python3
"""Where ONNX Runtime spends a generation's time in one of our exports, by op type.

    python3 tests/benches/ort_profile.py EXPORT_DIR [THREADS] [PROMPT] [STEPS]

Runs, with ONNX Runtime's profiler on (all graph optimizations, THREADS intra-op
threads, default 2): one prompt of PROMPT tokens (default 128) and STEPS
one-token steps (default 16) on the growing cache, after a warm-up, then
prints the share of kernel time of each op type (and of the lm_head) for the prompt and for the
steps (per step), and what the kernels leave of each run's wall time (the
session's own work between kernels).
"""

import collections
import json
import os
import sys
import tempfile

import numpy as np
import onnxruntime as ort


def main():
    folder = sys.argv[1]
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    prompt = int(sys.argv[3]) if len(sys.argv) > 3 else 128
    steps = int(sys.argv[4]) if len(sys.argv) > 4 else 16
    manifest = json.load(open(os.path.join(folder, "edgehil.json")))
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    session = ort.InferenceSession(os.path.join(folder, "model.onnx"), so, providers=["CPUExecutionProvider"])
    kv, hd, vocab = manifest["kv_heads"], manifest["head_dim"], manifest["config"]["vocab"]

    def run(ids, past):
        n, cached = len(ids), past[0].shape[2]
        feed = {
            "input_ids": np.array([ids], dtype=np.int64),
            "attention_mask": np.ones((1, cached + n), dtype=np.int64),
            "position_ids": np.arange(cached, cached + n, dtype=np.int64)[None],
        }
        for layer, heads in enumerate(kv):
            feed[f"past_key_values.{layer}.key"] = past[2 * layer]
            feed[f"past_key_values.{layer}.value"] = past[2 * layer + 1]
        out = session.run(None, feed)
        return int(out[0][0, -1].argmax()), out[1:]

    empty = [np.zeros((1, h, 0, hd), dtype=np.float32) for h in kv for _ in range(2)]
    ids = [300 + (i * 37) % 20000 for i in range(prompt)]
    run(ids[:8], empty)  # warm-up
    token, past = run(ids, empty)
    for _ in range(steps):
        token, past = run([token], past)
    events = json.load(open(session.end_profiling()))

    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])[1:]
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    for label, chosen in [(f"prompt of {prompt}", runs[:1]), (f"{steps} one-token steps", runs[1:])]:
        by_op = collections.Counter()
        head = 0
        for r in chosen:
            for k in kernels:
                if r["ts"] <= k["ts"] <= r["ts"] + r["dur"]:
                    by_op[k["args"]["op_name"]] += k["dur"]
                    shapes = [list(t.values())[0] for t in k["args"].get("output_type_shape", [])]
                    head += k["dur"] if shapes and shapes[0][-1:] == [vocab] else 0
        wall = sum(r["dur"] for r in chosen)
        total = sum(by_op.values())
        print(
            f"{label}: {wall / 1e3 / len(chosen):.1f} ms a run, kernels {total / max(wall, 1):.0%} of it; "
            f"the vocabulary's rows (lm_head) {head / max(total, 1):.0%} of the kernels"
        )
        for op, us in by_op.most_common(8):
            print(f"  {op:24} {us / total:6.1%}  {us / 1e3 / len(chosen):8.2f} ms a run")


if __name__ == "__main__":
    main()
