"""DDP and recovery, checked against the single-process run they must reproduce."""
from __future__ import annotations

import copy

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from embedtune.config import load_config
from embedtune.data.bundled import load_bundled
from embedtune.data.market import MarketData
from embedtune.dataset import prepare
from embedtune.train.fold import fit_fold

OVERRIDES = {
    "training.epochs": 3, "training.batch_size": 30, "walk_forward.n_folds": 1, "walk_forward.test_bars": 60,
    "walk_forward.train_bars": 213, "model.dropout": 0.0, "model.d_model": 16, "model.n_heads": 2,
    "training.lr_schedule": "cosine",
}


def setup():
    cfg = load_config("tests/configs/temporal.yaml").with_overrides(OVERRIDES)
    bars = load_bundled("goog_daily").bars.iloc[:400]
    return cfg, prepare(cfg, market=MarketData(name="goog", bars=bars, source="test"))


def test_a_resumed_fold_makes_the_same_updates_as_an_uninterrupted_one() -> None:
    cfg, data = setup()
    fold = data.folds[0]
    states: dict[int, dict] = {}
    # The states passed are live views of the training objects: keeping one means copying it.
    full = fit_fold(cfg, data, fold, seed=5,
                    on_epoch=lambda epoch, state: states.__setitem__(epoch, copy.deepcopy(state)))
    assert sorted(states) == [0, 1]  # the last epoch is covered by the fold's own checkpoint
    resumed = fit_fold(cfg, data, fold, seed=5, resume=states[0])
    pd.testing.assert_frame_equal(full.predictions, resumed.predictions)
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


RANK_SCRIPT = textwrap.dedent("""
    import os, sys, torch, torch.distributed as dist
    sys.path.insert(0, {tests!r})
    from test_distributed import setup
    from embedtune.train.fold import fit_fold
    dist.init_process_group("gloo", rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]))
    cfg, data = setup()
    out = fit_fold(cfg, data, data.folds[0], seed=5)
    if dist.get_rank() == 0:
        torch.save(out.model.state_dict(), {out!r})
        out.predictions.to_parquet({out!r} + ".parquet")
    dist.destroy_process_group()
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ddp_workers_make_the_same_updates_as_one_with_the_same_global_batch(tmp_path: Path) -> None:
    cfg, data = setup()
    fold = data.folds[0]
    n_train = int((~np.isnan(data.labels[fold.train]).any(axis=1)).sum())
    remainder = n_train % cfg.training.batch_size
    assert remainder >= 2 and remainder % 2 == 1  # the last global batch splits unevenly (2 vs 1), on purpose
    reference = fit_fold(cfg, data, fold, seed=5)
    single = reference.model.state_dict()

    out = tmp_path / "rank0.pt"
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT.format(tests=str(Path(__file__).parent), out=str(out)))
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
           "OMP_NUM_THREADS": "1"}
    ranks = [subprocess.Popen([sys.executable, str(script)], env={**env, "RANK": str(r)}, cwd=os.getcwd(),
                              stderr=subprocess.PIPE, text=True) for r in range(2)]
    for proc in ranks:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    ddp = torch.load(out, weights_only=True)
    assert single.keys() == ddp.keys()
    d = cfg.model.d_model
    for name in single:
        a, b = ddp[name], single[name]
        if name.endswith("self_attn.in_proj_bias"):
            # The key bias has an exactly zero gradient (softmax ignores a shift); Adam turns float noise in that
            # zero into lr-sized steps, so only the query and value parts are comparable.
            a, b = torch.cat([a[:d], a[2 * d:]]), torch.cat([b[:d], b[2 * d:]])
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    pd.testing.assert_frame_equal(pd.read_parquet(str(out) + ".parquet"), reference.predictions, rtol=1e-4,
                                  atol=1e-5)


def test_torch_compile_path_trains_to_the_same_model() -> None:
    """``training.compile`` wraps the DDP model in ``torch.compile``; the eager backend must not change the math."""
    cfg, data = setup()
    cfg = cfg.with_overrides({"training.epochs": 1})
    fold = data.folds[0]
    plain = fit_fold(cfg, data, fold, seed=5)
    compiled = fit_fold(cfg.with_overrides({"training.compile": True, "training.compile_backend": "eager"}),
                        data, fold, seed=5)
    pd.testing.assert_frame_equal(plain.predictions, compiled.predictions, rtol=1e-5, atol=1e-6)
