"""Data-parallel kiln train --device cuda through kiln-sim (the CUDA backend on the SIMT interpreter;
no NCCL there, so the device trainer stages its gradients through host memory and the MPI or TCP
collectives, autograd/trainer_device.c dev_reduce). The small random BERT text classifier of
train.cli_textcls, 17 examples in global batches of 4 (the last global batch holds 1 example: one
rank trains on it with weight 2, the other on none), shuffled, AdamW, clipping: `mpirun -np 2
kiln-sim train --device cuda --batch-size 2` and the same 2 ranks launched torchrun-style (RANK,
WORLD_SIZE, MASTER_ADDR, MASTER_PORT) against one process with --batch-size 4 on the device: every
logged loss and grad norm within 1e-5 relative, the written weights within 1e-5 of the largest
weight. Also against `mpirun -np 2 kiln-sim train --device cpu` (the CPU data-parallel path) within
the same bounds. The mpirun runs are skipped (and reported) without mpirun or an MPI build.
Each 2-rank device run is made twice: with the all-reduce overlapped with the backward (the
default: buckets queued on a communication stream after their gradients' kernels, autograd/
trainer_device.c) and with --no-overlap (after the whole backward); the two agree bit for bit
(every logged loss and grad norm, every written weight), the overlapped run reports more than 0
bucket all-reduces started during the backward, and the --no-overlap run 0."""
import argparse
import json
import re
import os
import shutil
import socket
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "pipelines"))
from train_cli import check, failures, make_classifier, text_rows, write_jsonl  # noqa: E402

MPIRUN = ["mpirun", "--oversubscribe", "--allow-run-as-root", "--bind-to", "none"]
MPI_ENV = dict(os.environ, OMPI_MCA_rmaps_base_oversubscribe="1", OMPI_MCA_btl="self,vader",
               OMPI_MCA_btl_vader_single_copy_mechanism="none")


def weights(path):
    import onnx
    from onnx import numpy_helper
    m = onnx.load(path)
    return {i.name: numpy_helper.to_array(i).astype(np.float64) for i in m.graph.initializer
            if i.data_type == onnx.TensorProto.FLOAT}


def torchrun(cmd, n):
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        port = so.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_", "PMI_"))}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(env, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(n),
                                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))) for r in range(n)]
    outs = [p.communicate(timeout=900) for p in procs]
    return subprocess.CompletedProcess(cmd, max(p.returncode for p in procs), outs[0][0], "".join(o[1] for o in outs))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    folder = os.path.join(args.work, "textcls_base")
    make_classifier(folder, "textcls")
    data = os.path.join(args.work, "dp_train.jsonl")
    write_jsonl(data, text_rows(17, 1))
    mpi = shutil.which("mpirun") is not None and " mpi" in subprocess.run(
        [args.kiln, "--version"], capture_output=True, text=True).stdout

    def train(tag, dev, batch, launch=None, n=1, extra=()):
        out, log = os.path.join(args.work, f"dp_{tag}"), os.path.join(args.work, f"dp_{tag}.jsonl")
        shutil.rmtree(out, ignore_errors=True)
        cmd = [args.kiln, "train", "--model", folder, "--type", "textClassification", "--train", data, "--output",
               out, "--epochs", "1", "--batch-size", str(batch), "--lr", "1e-3", "--seed", "3", "--log", log,
               "--threads", "1", "--device", dev] + list(extra)
        if n > 1:
            cmd += ["--bucket-mb", "0.02"]  # several buckets, so that their order and overlap are exercised
        if launch == "mpi":
            r = subprocess.run(MPIRUN + ["-np", str(n)] + cmd, capture_output=True, text=True, env=MPI_ENV,
                               timeout=900)
        elif launch == "tcp":
            r = torchrun(cmd, n)
        else:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        check(r.returncode == 0, f"{tag}: kiln-sim train exits 0 {r.stderr[-2000:] if r.returncode else ''}")
        if r.returncode:
            return None
        if n > 1:
            check(f"{n} ranks ({launch})" in r.stderr, f"{tag}: rank 0 reports {n} ranks over {launch}")
            m = re.search(r"(\d+) buckets, (\d+) bucket all-reduces started during the backward \(overlap (on|off)\)",
                          r.stderr)
            check(m is not None, f"{tag}: rank 0 prints the data-parallel summary")
            if m:
                nbk, early, on = int(m.group(1)), int(m.group(2)), m.group(3) == "on"
                print(f"{tag}: {early} bucket all-reduces of {nbk} buckets x 5 steps started during the backward")
                check(nbk > 1, f"{tag}: {nbk} buckets")
                if dev == "cuda" and on:
                    check(0 < early <= 5 * nbk, f"{tag}: {early} bucket all-reduces started during the backward")
                elif not on:
                    check(early == 0, f"{tag}: none started during the backward with --no-overlap ({early})")
        return weights(os.path.join(out, "model.onnx")), [json.loads(x) for x in open(log)]

    def same(tag, run, ref):
        if not run or not ref:
            return
        (w, logs), (w0, l0) = run, ref
        check([(a["loss"], a["grad_norm"]) for a in logs] == [(b["loss"], b["grad_norm"]) for b in l0],
              f"{tag}: the same losses and grad norms bit for bit")
        check(w.keys() == w0.keys() and all(np.array_equal(w[k], w0[k]) for k in w0),
              f"{tag}: the same weights bit for bit")

    def agree(tag, run, ref, tol=1e-5):
        if not run or not ref:
            return
        (w, logs), (w0, l0) = run, ref
        check(len(logs) == len(l0) == 5, f"{tag}: 5 steps logged ({len(logs)}, {len(l0)})")
        dl = max(abs(a["loss"] - b["loss"]) / abs(b["loss"]) for a, b in zip(logs, l0))
        dg = max(abs(a["grad_norm"] - b["grad_norm"]) / abs(b["grad_norm"]) for a, b in zip(logs, l0))
        # the attention key biases have an exactly zero gradient: Adam turns the rounding noise that
        # reaches them into lr-sized steps (tests/train_dp.py --case agree); held to 1e-3 apart
        gmax = max(float(np.max(np.abs(v))) for v in w0.values())
        gd = max(float(np.max(np.abs(w[k] - v))) for k, v in w0.items() if not k.endswith("attention.self.key.bias"))
        kb = max((float(np.max(np.abs(w[k] - v))) for k, v in w0.items() if k.endswith("attention.self.key.bias")),
                 default=0.0)
        check(kb / gmax <= 1e-3, f"{tag}: the zero-gradient key biases within 1e-3 (max {kb / gmax:.2e})")
        check(dl <= tol and dg <= 10 * tol and gd / gmax <= tol,
              f"{tag}: losses within {tol:g} relative (max {dl:.2e}), grad norms (max {dg:.2e}), weights "
              f"(max |diff| / max |w| {gd / gmax:.2e})")

    one = train("cuda_1", "cuda", 4)
    tcp = train("cuda_tcp2", "cuda", 2, "tcp", 2)
    agree("tcp 2 ranks cuda vs 1 process cuda", tcp, one)
    same("tcp 2 ranks cuda: overlap vs --no-overlap", tcp,
         train("cuda_tcp2_noov", "cuda", 2, "tcp", 2, ["--no-overlap"]))
    if mpi:
        dp = train("cuda_mpi2", "cuda", 2, "mpi", 2)
        agree("mpirun -np 2 cuda vs 1 process cuda", dp, one)
        same("mpirun -np 2 cuda: overlap vs --no-overlap", dp,
             train("cuda_mpi2_noov", "cuda", 2, "mpi", 2, ["--no-overlap"]))
        agree("mpirun -np 2 cuda vs mpirun -np 2 cpu", dp, train("cpu_mpi2", "cpu", 2, "mpi", 2))
    else:
        print("SKIP the mpirun runs: no mpirun, or kiln-sim was built without MPI")
    print("PASS" if not failures else f"FAIL: {len(failures)} check(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
