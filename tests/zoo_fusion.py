#!/usr/bin/env python3
"""For each transformer model of the shared zoo: the op histogram of the file (python onnx) and of
the graph kiln runs (`kiln info --optimized`: folded, fused, pruned), and checks that every
attention block was fused (no Softmax left, one kiln KnSdpa per Softmax of the file), every Erf /
Tanh-form GELU became a com.microsoft GELU op, and the residual adds feeding LayerNormalization
became SkipLayerNormalization. Exit status 1 on any unfused block."""
import argparse
import collections
import os
import subprocess
import sys

import onnx

MODELS = ["bert_feature", "bert_seqcls", "bert_tokcls", "distilbert_seqcls", "roberta_feature", "gpt2_lm", "vit_imgcls"]
SHOW = ["Softmax", "KnSdpa", "MatMul", "Transpose", "Erf", "Tanh", "Gelu", "BiasGelu", "FastGelu",
        "GemmFastGelu", "LayerNormalization", "SkipLayerNormalization", "Add", "Mul", "Div", "IsNaN", "Where"]


def kiln_ops(kiln, path):
    out = subprocess.run([kiln, "info", path, "--optimized"], capture_output=True, text=True, check=True).stdout
    ops, total, in_ops = collections.Counter(), 0, False
    for line in out.splitlines():
        if line.startswith("nodes:"):
            total = int(line.split()[1])
        elif line.startswith("ops:"):
            in_ops = True
        elif in_ops and line.startswith("  "):
            name, count = line.split()[:2]
            ops[name] += int(count)
        else:
            in_ops = False
    return ops, total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--zoo", required=True)
    a = ap.parse_args()
    bad = 0
    for m in MODELS:
        path = os.path.join(a.zoo, m, "model.onnx")
        if not os.path.exists(path):
            print(f"SKIP {m}: no model")
            continue
        g = onnx.load(path).graph
        before = collections.Counter(n.op_type for n in g.node)
        after, total = kiln_ops(a.kiln, path)
        print(f"== {m}: {len(g.node)} nodes in the file, {total} after optimisation")
        for op in SHOW:
            if before[op] or after[op]:
                print(f"   {op:24s} {before[op]:4d} -> {after[op]:4d}")
        # a FastGelu whose MatMul took it into its epilogue is GemmFastGelu
        gelus = after["Gelu"] + after["BiasGelu"] + after["FastGelu"] + after["GemmFastGelu"]
        # a pooler's Tanh (BERT classification heads) is no GELU: count only Tanh inside Pow-cubic GELUs
        tanh_gelus = sum(1 for n in g.node if n.op_type == "Pow")
        problems = []
        if after["Softmax"] or after["KnSdpa"] != before["Softmax"]:
            problems.append(f"attention: {before['Softmax']} Softmax, {after['KnSdpa']} fused, {after['Softmax']} left")
        if after["Erf"] or gelus != before["Erf"] + tanh_gelus:
            problems.append(f"gelu: {before['Erf']} Erf + {tanh_gelus} tanh forms, {gelus} fused")
        if after["SkipLayerNormalization"] == 0:
            problems.append("no SkipLayerNormalization")
        for p in problems:
            print(f"FAIL {m}: {p}")
        bad += bool(problems)
        if not problems:
            print(f"PASS {m}: {after['KnSdpa']} attention, {gelus} GELU, {after['SkipLayerNormalization']} skip-LayerNorm "
                  f"({before['LayerNormalization'] - after['LayerNormalization']} of {before['LayerNormalization']} LayerNorms)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
