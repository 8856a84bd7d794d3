"""The prepared GPU check: one command, at most ~5 minutes, run whenever a GPU machine is lent (DEVELOPERS.md).

Run: ``.venv/bin/python benchmarks/gpu.py`` (on a CUDA host; without CUDA it prints why and exits 0).
``--cpu-smoke`` runs the same code on CPU with the tiny encoders and no Tune trial, so CI proves the script works;
its numbers say nothing about a GPU.

What it reports, for the guide-size encoders (chain transformer and option-graph GNN: width 512, 6 layers, 8 heads,
out 256; ``benchmarks/encoders.py`` sizes) on SYNTHETIC GOOG chains:

1. training samples/s in fp32 and under bf16 autocast (goal: bf16 >= 2x fp32);
2. model FLOP utilization of the transformer: FLOPs of one training step counted by
   ``torch.utils.flop_counter.FlopCounterMode`` (forward + backward, matmuls and attention) x steps/s / the device's
   dense bf16 peak (a table by device name, or ``--peak-tflops``) (goal >= 30%);
3. ``torch.compile`` (inductor) on and off, bf16, training samples/s;
4. one Tune trial of ``tests/configs/tiny.yaml`` trained through a 1-GPU ``TorchTrainer`` (backend nccl) end to end
   via ``run_experiment``: its status, folds and wall time.
Each (encoder, variant) is timed for ``--min-seconds`` after a warm-up step; compile time is reported apart.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encoders import SIZES, _graph_slice, prepare_inputs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: Dense bf16 tensor-core peak (FLOP/s) by a substring of ``torch.cuda.get_device_name()``: vendor datasheets.
PEAK_BF16 = {"H200": 989e12, "H100 PCIe": 756e12, "H100 NVL": 835e12, "H100": 989e12, "A100": 312e12,
             "L40S": 362e12, "A10G": 70e12, "L4": 121e12}
GOAL_BF16, GOAL_MFU = 2.0, 0.30
BATCH = {"cuda": 64, "cpu": 8}


def peak_flops(name: str, override: float | None) -> float | None:
    if override:
        return override * 1e12
    return next((peak for key, peak in PEAK_BF16.items() if key in name), None)


def build(encoder: str, size: dict[str, int], n_features: int) -> Any:
    from embedtune.models.chain_transformer import OptionChainTransformer
    from embedtune.models.gnn import OptionGraphEncoder

    if encoder == "transformer":
        return OptionChainTransformer(n_features, d_model=size["width"], n_heads=size["heads"],
                                      n_layers=size["layers"], dropout=0.0, out_dim=size["out"])
    return OptionGraphEncoder(n_features, hidden=size["width"], out_dim=size["out"], n_layers=size["layers"],
                              heads=size["heads"])


def measure(encoder: str, size: dict[str, int], data: dict[str, Any], device: Any, bf16: bool, compiled: bool,
            min_seconds: float, batch: int) -> dict[str, float]:
    """Training samples/s of one encoder variant, plus the FLOPs of one step and the compile time."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model = build(encoder, size, data["features"].shape[-1]).to(device)
    if encoder == "transformer":
        inputs = tuple(data[k][:batch].to(device) for k in ("features", "mask", "strike_rank", "tte"))
    else:
        x, edge_index, edge_attr, graph_batch, graphs = _graph_slice(data, batch)
        inputs = (x.to(device), edge_index.to(device), edge_attr.to(device), graph_batch.to(device), graphs)
    target = torch.randn(batch, size["out"], device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    forward = torch.compile(model) if compiled else model
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            out = forward(*inputs)
        torch.nn.functional.mse_loss(out.float(), target).backward()
        optimizer.step()

    started = time.perf_counter()
    step()  # warm-up; with torch.compile this is where the graph is compiled
    sync()
    first_step_s = time.perf_counter() - started
    flops = 0.0
    if not compiled:
        with FlopCounterMode(display=False) as counter:
            step()
        flops = float(counter.get_total_flops())
    sync()
    start, n = time.perf_counter(), 0
    while n < 3 or time.perf_counter() - start < min_seconds:
        step()
        n += 1
    sync()
    seconds = time.perf_counter() - start
    return {"samples_per_s": batch * n / seconds, "steps_per_s": n / seconds, "flops_per_step": flops,
            "first_step_s": first_step_s}


def tune_trial(tmp: Path) -> dict[str, Any]:
    """One trial of the tiny config through a 1-GPU TorchTrainer (nccl), end to end via ``run_experiment``."""
    import pandas as pd
    import yaml

    from embedtune.experiment import run_experiment

    raw = yaml.safe_load((ROOT / "tests/configs/tiny.yaml").read_text())
    raw["name"] = "gpu-check"
    raw["search"].update(num_samples=1, max_concurrent=1)
    raw["resources"] = {"num_workers": 1, "use_gpu": True}
    raw["walk_forward"]["holdout_bars"] = 0
    config = tmp / "gpu.yaml"
    config.write_text(yaml.safe_dump(raw))
    started = time.perf_counter()
    result = run_experiment(config, output_root=str(tmp / "results"), verbose=0)
    table = pd.read_csv(result.leaderboard_csv)
    return {"status": str(table["status"].iloc[0]), "folds": int(table["folds"].iloc[0]),
            "seconds": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny encoders on CPU, no Tune trial (CI)")
    parser.add_argument("--min-seconds", type=float, default=5.0, help="timed seconds per variant")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak, TFLOP/s")
    parser.add_argument("--no-trial", action="store_true", help="skip the Tune trial through a TorchTrainer")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    args = parser.parse_args(argv)

    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        print(f"gpu: skipped: no CUDA device here (torch {torch.__version__}); run on a GPU host, or --cpu-smoke")
        return 0
    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    name = "CPU (smoke run: no GPU figures)" if args.cpu_smoke else torch.cuda.get_device_name()
    size = SIZES["tiny" if args.cpu_smoke else "default"]
    batch = BATCH[device.type]
    if args.cpu_smoke:
        torch.set_num_threads(1)
        args.no_trial, args.min_seconds = True, min(args.min_seconds, 0.2)
    wall = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        shape = prepare_inputs(tmp / "inputs.pt", batch)
        data = torch.load(tmp / "inputs.pt", weights_only=True)
        variants: list[tuple[str, bool, bool]] = [("fp32", False, False), ("bf16", True, False)]
        if not args.no_compile:
            variants.append(("bf16+compile", True, True))
        for encoder in ("transformer", "gnn"):
            for label, bf16, compiled in variants:
                try:
                    row = measure(encoder, size, data, device, bf16, compiled, args.min_seconds, batch)
                except Exception as exc:  # noqa: BLE001 - a variant that fails is reported, the others still run
                    row = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
                rows.append({"encoder": encoder, "variant": label, **row})
        trial = None if args.no_trial else tune_trial(tmp)
    report(rows, trial, name, size, batch, shape, peak_flops(name, args.peak_tflops), args,
           time.perf_counter() - wall)
    return 0


def report(rows: list[dict[str, Any]], trial: dict[str, Any] | None, name: str, size: dict[str, int], batch: int,
           shape: dict[str, int], peak: float | None, args: argparse.Namespace, wall: float) -> None:
    print(f"gpu check on {name}; torch {__import__('torch').__version__}; SYNTHETIC GOOG chains "
          f"({shape['options']} options/snapshot, {shape['edges_per_graph']} edges/graph); encoders width "
          f"{size['width']}, {size['layers']} layers, {size['heads']} heads, out {size['out']}; batch {batch}; "
          f"{args.min_seconds:g} s timed per variant after one warm-up step")
    header = f"{'encoder':12} {'variant':14} {'samples/s':>10} {'vs fp32':>8} {'GFLOP/step':>11} {'MFU':>6} {'1st step s':>10}"
    print(header)
    print("-" * len(header))
    fp32 = {r["encoder"]: r for r in rows if r["variant"] == "fp32" and "error" not in r}
    flops = {r["encoder"]: r["flops_per_step"] for r in fp32.values()}
    verdicts = []
    for r in rows:
        if "error" in r:
            print(f"{r['encoder']:12} {r['variant']:14} FAILED {r['error']}")
            continue
        base = fp32.get(r["encoder"])
        ratio = r["samples_per_s"] / base["samples_per_s"] if base else float("nan")
        step_flops = flops.get(r["encoder"], 0.0)
        mfu = step_flops * r["steps_per_s"] / peak if peak and step_flops and r["variant"] != "fp32" else None
        print(f"{r['encoder']:12} {r['variant']:14} {r['samples_per_s']:>10.1f} {ratio:>7.2f}x "
              f"{step_flops / 1e9:>11.2f} {'' if mfu is None else f'{mfu:.0%}':>6} {r['first_step_s']:>10.2f}")
        if r["variant"] == "bf16" and not args.cpu_smoke:
            verdicts.append(f"{'PASS' if ratio >= GOAL_BF16 else 'FAIL'} {r['encoder']} bf16 autocast {ratio:.2f}x "
                            f"fp32 (goal >= {GOAL_BF16}x)")
            if r["encoder"] == "transformer":
                verdicts.append("n/a transformer MFU: unknown device peak (pass --peak-tflops)" if mfu is None else
                                f"{'PASS' if mfu >= GOAL_MFU else 'FAIL'} transformer MFU {mfu:.0%} in bf16 "
                                f"(goal >= {GOAL_MFU:.0%}; peak {peak / 1e12:.0f} TFLOP/s dense bf16)")
    print("  GFLOP/step: FlopCounterMode over one fp32 training step (forward + backward); MFU = that x steps/s / "
          "the device's dense bf16 peak; 1st step s = the warm-up step (includes compilation for +compile)")
    if trial is not None:
        print(f"Tune trial through a 1-GPU TorchTrainer (nccl), tests/configs/tiny.yaml: {trial['status']}, "
              f"{trial['folds']} folds, {trial['seconds']:.0f} s end to end")
        verdicts.append(f"{'PASS' if trial['status'] == 'done' else 'FAIL'} one Tune trial on 1 GPU via TorchTrainer")
    for line in verdicts:
        print(line)
    print(f"whole check {wall:.0f} s")
    print(json.dumps({"device": name, "rows": rows, "trial": trial}))


if __name__ == "__main__":
    sys.exit(main())
