"""DDP that pays: training samples/s of the guide-size encoders under Ray Train with 1 and 2 CPU workers (gloo).

Run: ``.venv/bin/python benchmarks/ddp.py [--encoders transformer gnn] [--seconds 20] [--global-batch 16]``
(~4 minutes on 2 cores).

The chain transformer (d_model 512, 6 layers x 8 heads, out 256; 19.4M parameters) and the option-graph GNN (hidden
512, 6 layers, 8 heads; 3.9M) from the design guide, on SYNTHETIC GOOG chains (``benchmarks/encoders.py`` inputs).
Each configuration is one ``TorchTrainer`` (``ScalingConfig(num_workers=w)``, one CPU and one torch thread per
worker, ``TorchConfig(backend="gloo")``) whose workers train the same model with ``ray.train.torch.prepare_model``
(DDP) on the same global batch, split evenly across ranks (each rank a different shard of it), forward + MSE +
backward + AdamW. After one warm-up step, rank 0 times steps until ``--seconds`` have passed; samples/s = global batch
x steps / seconds. Where the time goes, per step on rank 0: ``data`` (slicing the shard), ``compute`` (forward and
backward of the same shard under ``no_sync``, i.e. without gradient allreduce, timed on separate steps), ``allreduce``
(a synchronized step minus a ``no_sync`` one: the communication DDP could not hide behind backward) and
``optimizer``. Goal (issue 18): 2 workers >= 1.6x the samples/s of 1 worker.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encoders import SIZES, _graph_slice, prepare_inputs  # noqa: E402

GOAL = 1.6
GUIDE = SIZES["default"]


def train_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: DDP over the guide-size encoder, timing steps and their parts on rank 0."""
    import ray.train
    import torch
    import torch.distributed as dist
    from ray.train.torch import prepare_model

    from embedtune.models.chain_transformer import OptionChainTransformer
    from embedtune.models.gnn import OptionGraphEncoder

    torch.set_num_threads(1)
    torch.manual_seed(0)
    rank, world = ray.train.get_context().get_world_rank(), ray.train.get_context().get_world_size()
    data = torch.load(config["inputs"], weights_only=True)
    n_features = data["features"].shape[-1]
    local = config["global_batch"] // world
    lo = rank * local
    if config["encoder"] == "transformer":
        model = OptionChainTransformer(n_features, d_model=GUIDE["width"], n_heads=GUIDE["heads"],
                                       n_layers=GUIDE["layers"], dropout=0.0, out_dim=GUIDE["out"])

        def shard() -> tuple:  # type: ignore[type-arg]
            return tuple(data[k][lo:lo + local] for k in ("features", "mask", "strike_rank", "tte"))
    else:
        model = OptionGraphEncoder(n_features, hidden=GUIDE["width"], out_dim=GUIDE["out"], n_layers=GUIDE["layers"],
                                   heads=GUIDE["heads"])
        # The rank's graphs, re-based so node ids start at 0: a shard is graphs lo .. lo + local of the batch.
        x, edge_index, edge_attr, batch, _ = _graph_slice(data, lo + local)
        first = int(data["ptr"][lo])
        keep = edge_index[0] >= first
        mine = (x[first:], edge_index[:, keep] - first, edge_attr[keep], batch[first:] - lo, local)

        def shard() -> tuple:  # type: ignore[type-arg]
            return mine
    model = prepare_model(model, move_to_device=False)
    target = torch.randn(local, GUIDE["out"], generator=torch.Generator().manual_seed(rank))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    parts = {"data": 0.0, "compute": 0.0, "allreduce": 0.0, "optimizer": 0.0}

    def step(sync: bool) -> dict[str, float]:
        t0 = time.perf_counter()
        inputs = shard()
        t1 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        context = model.no_sync() if (not sync and world > 1) else _nullcontext()
        with context:
            loss = torch.nn.functional.mse_loss(model(*inputs), target)
            loss.backward()
        t2 = time.perf_counter()
        optimizer.step()
        t3 = time.perf_counter()
        return {"data": t1 - t0, "backward": t2 - t1, "optimizer": t3 - t2}

    step(True)  # warm-up: allocator, DDP buckets, gloo connections
    if world > 1:
        dist.barrier()
    start, steps, synced, unsynced = time.perf_counter(), 0, [], []
    while True:
        timing = step(True)
        synced.append(timing["backward"])
        parts["data"] += timing["data"]
        parts["optimizer"] += timing["optimizer"]
        steps += 1
        done = time.perf_counter() - start >= config["seconds"] and steps >= 3
        if world > 1:  # every rank stops at the same step (rank 0's clock decides)
            flag = torch.tensor([1.0 if done else 0.0])
            dist.broadcast(flag, src=0)
            done = bool(flag.item())
        if done:
            break
    seconds = time.perf_counter() - start
    for _ in range(min(steps, 3)):  # the same work without the allreduce, on separate steps
        unsynced.append(step(False)["backward"])
        if world > 1:
            dist.barrier()
    synced_median = float(sorted(synced)[len(synced) // 2])
    # One worker has no allreduce: its compute is every timed step's backward, and nothing is subtracted.
    compute = float(sorted(unsynced)[len(unsynced) // 2]) if world > 1 else synced_median
    per_step = {"data": parts["data"] / steps, "compute": compute,
                "allreduce": max(synced_median - compute, 0.0) if world > 1 else 0.0,
                "optimizer": parts["optimizer"] / steps, "step": seconds / steps}
    if rank == 0:  # the driver reads this file (same machine): Train V2 keeps metrics only beside checkpoints
        Path(config["out"]).write_text(json.dumps({
            "samples_per_s": config["global_batch"] * steps / seconds, "steps": steps,
            "params": sum(p.numel() for p in model.parameters()), **{f"s_{k}": v for k, v in per_step.items()}}))


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def run(encoder: str, workers: int, inputs: Path, global_batch: int, seconds: float, storage: Path) -> dict[str, Any]:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    started = time.perf_counter()
    out = storage.parent / f"{encoder}-{workers}.json"
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"encoder": encoder, "inputs": str(inputs), "global_batch": global_batch,
                           "seconds": seconds, "out": str(out)},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=False, resources_per_worker={"CPU": 1}),
        torch_config=TorchConfig(backend="gloo"),
        run_config=RunConfig(name=f"ddp-{encoder}-{workers}", storage_path=str(storage)),
    )
    trainer.fit()
    return {**json.loads(out.read_text()), "encoder": encoder, "workers": workers,
            "fit_s": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoders", nargs="+", choices=("transformer", "gnn"), default=["transformer", "gnn"])
    parser.add_argument("--seconds", type=float, default=20.0, help="timed seconds per configuration")
    parser.add_argument("--global-batch", type=int, default=16, help="samples per step over all workers")
    args = parser.parse_args(argv)
    import os

    import ray

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            inputs = Path(tmp) / "inputs.pt"
            shape = prepare_inputs(inputs, args.global_batch)
            for encoder in args.encoders:
                for workers in (1, 2):
                    rows.append(run(encoder, workers, inputs, args.global_batch, args.seconds, Path(tmp) / "ray"))
                    print(f"[ddp] {rows[-1]}", file=sys.stderr, flush=True)
    finally:
        ray.shutdown()
    report(rows, args, shape)
    return 0


def report(rows: list[dict[str, Any]], args: argparse.Namespace, shape: dict[str, int]) -> None:
    print(f"DDP on CPU: Ray Train TorchTrainer, gloo, 1 CPU + 1 torch thread per worker, local Ray with 2 CPUs; "
          f"guide-size encoders (width {GUIDE['width']}, {GUIDE['layers']} layers, {GUIDE['heads']} heads, out "
          f"{GUIDE['out']}); SYNTHETIC GOOG chains ({shape['options']} options/snapshot, {shape['edges_per_graph']} "
          f"edges/graph); global batch {args.global_batch} split evenly over the workers; {args.seconds:g} s timed "
          "per configuration after one warm-up step")
    header = (f"{'encoder':12} {'workers':>7} {'params':>11} {'samples/s':>10} {'vs 1':>6} {'step s':>7} "
              f"{'data':>7} {'compute':>8} {'allreduce':>9} {'optim':>7} {'start+fit s':>11}")
    print(header)
    print("-" * len(header))
    one = {r["encoder"]: r for r in rows if r["workers"] == 1}
    verdicts = []
    for r in rows:
        ratio = r["samples_per_s"] / one[r["encoder"]]["samples_per_s"]
        print(f"{r['encoder']:12} {r['workers']:>7} {int(r['params']):>11,} {r['samples_per_s']:>10.2f} "
              f"{ratio:>5.2f}x {r['s_step']:>7.3f} {r['s_data']:>7.4f} {r['s_compute']:>8.3f} "
              f"{r['s_allreduce']:>9.3f} {r['s_optimizer']:>7.3f} {r['fit_s']:>11.1f}")
        if r["workers"] == 2:
            base = one[r["encoder"]]
            # Against the ideal (half the 1-worker step): how much more each part took than half of it.
            excess = {k: r[f"s_{k}"] - (0.0 if k == "allreduce" else base[f"s_{k}"] / 2)
                      for k in ("data", "compute", "allreduce", "optimizer")}
            worst = max(excess, key=excess.get)  # type: ignore[arg-type]
            verdicts.append(
                f"{'PASS' if ratio >= GOAL else 'FAIL'} {r['encoder']}: 2 workers {ratio:.2f}x 1 worker (goal >= {GOAL}x); "
                f"step {r['s_step']:.3f} s against an ideal {base['s_step'] / 2:.3f} s; beyond half of 1 worker's: "
                + ", ".join(f"{k} {v:+.3f} s" for k, v in excess.items())
                + f" (largest: {worst}; compute per sample {r['s_compute'] / (args.global_batch / 2):.3f} s at 2 "
                f"workers vs {base['s_compute'] / args.global_batch:.3f} s at 1)")
    print("  per step on rank 0, seconds: data = slicing the rank's shard; compute = forward + backward under no_sync "
          "(no allreduce); allreduce = a synchronized backward minus a no_sync one (communication not hidden behind "
          "backward); optim = AdamW step")
    for line in verdicts:
        print(line)
    print(json.dumps(rows, default=float))


if __name__ == "__main__":
    sys.exit(main())
