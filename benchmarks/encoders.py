"""Chain-encoder benchmarks: training samples/s, inference embeddings/s and peak memory, printed as one table.

Run: ``.venv/bin/python benchmarks/encoders.py [--device cpu|cuda] [--sizes tiny default] [--precision fp32 bf16]``.

* Inputs are SYNTHETIC chains off the bundled GOOG bars (4 expiries x 17 strikes x C/P = 136 options/snapshot,
  ~1220 directed edges/graph), tensorized once by the parent; each (encoder, size, precision) runs in a fresh
  subprocess so its memory numbers are its own.
* Throughput: one warm-up batch, then batches until ``--min-seconds`` have passed (at least two); training is
  forward + MSE to a fixed target + backward + AdamW step; inference is ``torch.inference_mode`` in eval mode.
* Peak memory, CPU: growth of the process's peak RSS over each phase (warm-up included). The kernel's RSS
  high-water mark (the counter ``getrusage(...).ru_maxrss`` reports) is reset through ``/proc/self/clear_refs``
  before the phase, after ``malloc_trim`` has returned freed heap to the OS, and read as ``VmHWM`` after it, minus
  the RSS at the start. Where the reset is refused it falls back to the ``ru_maxrss`` delta, which hides a phase
  peaking below an earlier one. tracemalloc is not used: it does not see torch's tensor allocations.
  CUDA: ``torch.cuda.max_memory_allocated`` minus the allocated memory at the start of each phase, after
  ``reset_peak_memory_stats``.
* ``--device cuda`` compares fp32 with bf16 autocast; without a GPU it prints a notice and exits 0. CPU defaults
  to one intra-op thread (``--threads``): the machine is shared.

Sizes: ``tiny`` is d_model/hidden 32, 2 layers, 4 heads, out 32; ``default`` is d_model/hidden 512, 6 layers,
8 heads, out 256 for both encoders (the GNN's constructor default is 3 layers, so its row is an upper bound).
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

SIZES: dict[str, dict[str, int]] = {
    "tiny": {"width": 32, "layers": 2, "heads": 4, "out": 32},
    "default": {"width": 512, "layers": 6, "heads": 8, "out": 256},
}
#: (train batch, inference batch) per device and size: large enough to be representative, small enough for CPU.
BATCHES: dict[tuple[str, str], tuple[int, int]] = {
    ("cpu", "tiny"): (32, 128), ("cpu", "default"): (8, 32),
    ("cuda", "tiny"): (256, 1024), ("cuda", "default"): (64, 256),
}
ENCODERS = ("transformer", "gnn")


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (what ru_maxrss reports); False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _release_free_heap() -> None:
    """Hand freed heap pages back to the OS (glibc ``malloc_trim``), so an earlier phase's freed buffers are not
    silently reused by the next one and hidden from its RSS growth."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss_phase_start() -> tuple[int, bool]:
    """(baseline bytes, whether the peak was reset): current RSS after a reset, else the ru_maxrss so far."""
    gc.collect()
    _release_free_heap()
    if _reset_peak_rss():
        return _status_kib("VmRSS") * 1024, True
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, False


def _peak_rss_bytes(was_reset: bool) -> int:
    if was_reset:
        return _status_kib("VmHWM") * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def prepare_inputs(path: Path, n_graphs: int) -> dict[str, int]:
    """Tensorize synthetic GOOG chains and save the first ``n_graphs`` snapshots as tensors and collated graphs."""
    import torch
    from torch_geometric.data import Batch

    from embedtune.chains import build_graphs, tensorize_chains
    from embedtune.data.bundled import load_bundled
    from embedtune.data.synthetic_options import generate_option_chains

    bars = load_bundled("goog_daily").bars
    chains = generate_option_chains(bars)
    tensors = tensorize_chains(chains, bars)
    n = min(n_graphs, tensors.n_snapshots)
    batch = Batch.from_data_list(build_graphs(chains, tensors)[:n])
    torch.save({
        "features": torch.from_numpy(tensors.features[:n]), "mask": torch.from_numpy(tensors.mask[:n]),
        "strike_rank": torch.from_numpy(tensors.strike_rank[:n]), "tte": torch.from_numpy(tensors.tte[:n]),
        "x": batch.x, "edge_index": batch.edge_index, "edge_attr": batch.edge_attr, "batch": batch.batch,
        "ptr": batch.ptr,
    }, path)
    return {"snapshots": n, "options": int(tensors.mask.shape[1]), "edges_per_graph": batch.num_edges // n}


def _graph_slice(data: dict, n: int) -> tuple:  # type: ignore[type-arg]
    """The first ``n`` graphs of the collated batch (nodes and edges of a batch are stored graph by graph)."""
    nodes = int(data["ptr"][n])
    keep = data["edge_index"][0] < nodes
    return data["x"][:nodes], data["edge_index"][:, keep], data["edge_attr"][keep], data["batch"][:nodes], n


def run_worker(args: argparse.Namespace) -> dict[str, object]:
    """Benchmark one (encoder, size, precision) in this process; returns one table row."""
    import torch

    from embedtune.models.chain_transformer import OptionChainTransformer
    from embedtune.models.gnn import OptionGraphEncoder

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    size = SIZES[args.size]
    train_batch, infer_batch = BATCHES[(args.device, args.size)]
    data = torch.load(args.inputs, weights_only=True)
    n_available = data["features"].shape[0]
    train_batch, infer_batch = min(train_batch, n_available), min(infer_batch, n_available)
    n_features = data["features"].shape[-1]
    if args.encoder == "transformer":
        model: torch.nn.Module = OptionChainTransformer(
            n_features, d_model=size["width"], n_heads=size["heads"], n_layers=size["layers"], dropout=0.0,
            out_dim=size["out"])

        def inputs(n: int) -> tuple:  # type: ignore[type-arg]
            return tuple(data[k][:n].to(device) for k in ("features", "mask", "strike_rank", "tte"))
    else:
        model = OptionGraphEncoder(n_features, hidden=size["width"], out_dim=size["out"], n_layers=size["layers"],
                                   heads=size["heads"])

        def inputs(n: int) -> tuple:  # type: ignore[type-arg]
            x, edge_index, edge_attr, batch, graphs = _graph_slice(data, n)
            return x.to(device), edge_index.to(device), edge_attr.to(device), batch.to(device), graphs
    model.to(device)
    train_inputs, infer_inputs = inputs(train_batch), inputs(infer_batch)
    target = torch.randn(train_batch, size["out"], device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def throughput(step: Callable[[], None], items: int) -> float:
        step()  # warm-up (allocator, kernels, lazy init)
        sync()
        start, n = time.perf_counter(), 0
        while n < 2 or time.perf_counter() - start < args.min_seconds:
            step()
            n += 1
            sync()
        return items * n / (time.perf_counter() - start)

    def infer() -> None:
        with torch.inference_mode(), autocast:
            model(*infer_inputs)

    def train() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            out = model(*train_inputs)
        torch.nn.functional.mse_loss(out.float(), target).backward()
        optimizer.step()

    def measured(step: Callable[[], None], items: int) -> tuple[float, float]:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            rate = throughput(step, items)
            return rate, (torch.cuda.max_memory_allocated() - base) / 2**20
        base, was_reset = _rss_phase_start()
        rate = throughput(step, items)
        return rate, max(_peak_rss_bytes(was_reset) - base, 0) / 2**20

    model.eval()
    infer_rate, infer_mem = measured(infer, infer_batch)
    model.train()
    train_rate, train_mem = measured(train, train_batch)
    return {
        "encoder": args.encoder, "size": args.size, "precision": args.precision, "device": args.device,
        "params": sum(p.numel() for p in model.parameters()), "train_batch": train_batch, "infer_batch": infer_batch,
        "train_per_s": train_rate, "infer_per_s": infer_rate, "train_mem_mib": train_mem, "infer_mem_mib": infer_mem,
        "threads": args.threads,
    }


def _worker_command(args: argparse.Namespace, inputs: Path, encoder: str, size: str, precision: str) -> list[str]:
    return [sys.executable, __file__, "--worker", "--inputs", str(inputs), "--encoder", encoder, "--size", size,
            "--precision", precision, "--device", args.device, "--threads", str(args.threads),
            "--min-seconds", str(args.min_seconds)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--sizes", nargs="+", choices=tuple(SIZES), default=list(SIZES))
    parser.add_argument("--encoders", nargs="+", choices=ENCODERS, default=list(ENCODERS))
    parser.add_argument("--precision", nargs="+", choices=("fp32", "bf16"), default=None,
                        help="default: fp32 on CPU, fp32 and bf16 autocast on CUDA")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="timed seconds per phase (after warm-up)")
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    parser.add_argument("--encoder", choices=ENCODERS, help=argparse.SUPPRESS)
    parser.add_argument("--size", choices=tuple(SIZES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.precision = args.precision[0]
        print(json.dumps(run_worker(args)))
        return 0

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available on this machine: skipping the GPU benchmark (run it on a GPU host).")
        return 0
    precisions = args.precision or (["fp32", "bf16"] if args.device == "cuda" else ["fp32"])
    need = max(BATCHES[(args.device, s)][1] for s in args.sizes)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "inputs.pt"
        shape = prepare_inputs(inputs, need)
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
        for encoder in args.encoders:
            for size in args.sizes:
                for precision in precisions:
                    proc = subprocess.run(_worker_command(args, inputs, encoder, size, precision),
                                          capture_output=True, text=True, env=env, check=False)
                    if proc.returncode:
                        print(f"{encoder}/{size}/{precision} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                        return proc.returncode
                    rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))

    device_name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {args.threads} thread(s)"
    memory = "CUDA max_memory_allocated delta" if args.device == "cuda" else "peak RSS (VmHWM) delta per phase"
    print(f"chain encoders on {device_name}; SYNTHETIC GOOG chains: {shape['options']} options/snapshot, "
          f"{shape['edges_per_graph']} edges/graph; peak memory = {memory} (MiB)")
    header = (f"{'encoder':12} {'size':8} {'prec':5} {'params':>11} {'train/s':>10} {'infer/s':>10} "
              f"{'train MiB':>10} {'infer MiB':>10} {'batch t/i':>10}")
    print(header)
    print("-" * len(header))
    fp32 = {(r["encoder"], r["size"]): r for r in rows if r["precision"] == "fp32"}
    for r in rows:
        line = (f"{r['encoder']:12} {r['size']:8} {r['precision']:5} {r['params']:>11,} {r['train_per_s']:>10.1f} "
                f"{r['infer_per_s']:>10.1f} {r['train_mem_mib']:>10.1f} {r['infer_mem_mib']:>10.1f} "
                f"{str(r['train_batch']) + '/' + str(r['infer_batch']):>10}")
        base = fp32.get((r["encoder"], r["size"]))
        if r["precision"] != "fp32" and base:
            line += (f"  x{r['train_per_s'] / base['train_per_s']:.2f} train, "
                     f"x{r['infer_per_s'] / base['infer_per_s']:.2f} infer vs fp32")
        print(line)
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
