"""kiln train --device cuda through NCCL on real GPUs (runtime/comm_nccl.c; a CUDA build that found
NCCL). One process with --comm nccl (a one-rank NCCL communicator: the device trainer's gradients go
through ncclAllReduce) against --device cpu: the 16-example random BERT classifier of
train.cli_textcls, 2 epochs of 4 steps: every logged loss within 1e-5 relative, the written weights
within 1e-4 (the device trainer's own tolerance, tests/gpu/train_device_cli.py). With two GPUs and
mpirun also `mpirun -np 2 kiln train --device cuda` (NCCL chosen by itself, one GPU per rank by local
rank) against the one process on the GPU, with --batch-size halved. Exit 77 without a GPU."""
import argparse
import os
import shutil
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "pipelines"))
from train_cli import check, failures, make_classifier, read_log, text_rows, write_jsonl  # noqa: E402

MPI_ENV = dict(os.environ, OMPI_MCA_rmaps_base_oversubscribe="1")


def weights(path):
    import onnx
    from onnx import numpy_helper
    m = onnx.load(path)
    return {i.name: numpy_helper.to_array(i).astype(np.float64) for i in m.graph.initializer}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    folder = os.path.join(args.work, "textcls_base")
    make_classifier(folder, "textcls")
    data = os.path.join(args.work, "nccl_train.jsonl")
    write_jsonl(data, text_rows(16, 1))

    def train(tag, dev, batch, extra=(), pre=()):
        out, log = os.path.join(args.work, f"nccl_{tag}"), os.path.join(args.work, f"nccl_{tag}.jsonl")
        shutil.rmtree(out, ignore_errors=True)
        r = subprocess.run([*pre, args.kiln, "train", "--model", folder, "--type", "textClassification", "--train",
                            data, "--output", out, "--epochs", "2", "--batch-size", str(batch), "--lr", "1e-3",
                            "--no-shuffle", "--log", log, "--threads", "2", "--device", dev, *extra],
                           capture_output=True, text=True, env=MPI_ENV, timeout=900)
        if r.returncode and any(s in r.stderr for s in ("no CUDA device", "without NCCL", "no such device")):
            print(f"SKIP: no GPU: {r.stderr.strip()[-300:]}")
            sys.exit(77)
        check(r.returncode == 0, f"{tag}: kiln train exits 0 {r.stderr[-2000:] if r.returncode else ''}")
        if r.returncode:
            return None
        return [e["loss"] for e in read_log(log)], weights(os.path.join(out, "model.onnx")), r.stderr

    def agree(tag, a, b, wtol=1e-4):
        if not a or not b:
            return
        rel = max(abs(x - y) / abs(y) for x, y in zip(a[0], b[0]))
        wd = max(float(np.max(np.abs(a[1][k] - b[1][k]))) for k in b[1])
        check(len(a[0]) == len(b[0]) == 8 and rel <= 1e-5 and wd <= wtol,
              f"{tag}: 8 losses within 1e-5 relative (max {rel:.2e}), weights within {wtol:g} (max {wd:.2e})")

    gpu = train("gpu_1", "cuda", 4, ["--comm", "nccl"])
    cpu = train("cpu", "cpu", 4)
    agree("1 process, NCCL on the GPU vs the CPU", gpu, cpu)
    n_gpus = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.count("GPU ")
    if n_gpus >= 2 and shutil.which("mpirun"):
        two = train("gpu_2", "cuda", 2, pre=["mpirun", "--allow-run-as-root", "-np", "2"])
        if two:
            check("2 ranks (nccl/mpi)" in two[2], "2 ranks: rank 0 reports NCCL over MPI")
        agree("mpirun -np 2 on 2 GPUs vs 1 process on the GPU", two, gpu, 1e-5)
    else:
        print(f"(one GPU or no mpirun: the 2-rank NCCL run is left out; {n_gpus} GPU(s))")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
