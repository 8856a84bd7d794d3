"""Training and prediction for one walk-forward fold: early stopping, epoch checkpoints, pretraining, and the test
block's predictions, embeddings and head metrics.

Under DDP every rank builds the same model from the same seed, walks the same shuffled order and takes its own
disjoint slice of every global batch, so N workers with global batch B make the same updates as one worker with
batch B. A classical ``model.type`` is handed to ``train.classical``.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from embedtune.backtest.splits import Fold
from embedtune.config.schema import ExperimentConfig, TrainingConfig
from embedtune.dataset import PreparedData
from embedtune.evaluation import head_metrics
from embedtune.labels import DIRECTION_CLASSES, PREDICTION_COLUMNS, label_column, unscale_predictions
from embedtune.models.contrastive import contrastive_pairs, pretrain_encoder
from embedtune.models.ensemble import EmbeddingModel, build_model
from embedtune.models.heads import multitask_loss
from embedtune.models.quality import cluster_purity, retrieval_accuracy
from embedtune.train.data import FoldScaler, WindowDataset, move, scale_chains, scale_graphs
from embedtune.train.distributed import from_rank_zero, shard, unwrap, world, wrap_ddp
from embedtune.train.outcome import FoldOutcome, fold_train
from embedtune.train.timing import PhaseTimer
from embedtune.train.validation import split_validation


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    return torch.Generator().manual_seed(seed)


EpochCallback = Callable[[int, dict[str, Any]], None]


class EarlyStopping:
    """The patience rule on the validation loss, as plain numbers, so an epoch state can carry it exactly.

    After epoch ``e`` (0-based) with validation loss ``v``: an improvement is ``v < best - min_delta`` (never a NaN
    loss); it resets the count of bad epochs and keeps a copy of the weights. Otherwise the count grows, and training
    stops once it reaches ``patience``. ``best_epoch`` is 0-based here (like the epoch state's ``epoch``), -1 before
    any improvement."""

    def __init__(self, patience: int, min_delta: float) -> None:
        self.patience, self.min_delta = patience, min_delta
        self.best_loss = math.inf
        self.best_epoch = -1
        self.bad_epochs = 0
        self.history: list[float] = []
        self.best_state: dict[str, torch.Tensor] = {}

    def update(self, epoch: int, loss: float, model: torch.nn.Module) -> bool:
        """Record epoch ``epoch``'s validation loss; True when training should stop now."""
        self.history.append(loss)
        if loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_epoch, self.bad_epochs = loss, epoch, 0
            # Clones, never mutated afterwards: the epoch state may hand them out without another copy.
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        self.bad_epochs += 1
        return self.bad_epochs >= self.patience

    def state(self) -> dict[str, Any]:
        """The rule's part of an epoch state (tensors and numbers only: read back with ``weights_only=True``)."""
        return {"val_history": torch.tensor(self.history, dtype=torch.float64), "best_model": self.best_state,
                "best_val_loss": float(self.best_loss), "best_epoch": int(self.best_epoch),
                "bad_epochs": int(self.bad_epochs)}

    def load(self, state: dict[str, Any]) -> None:
        """Continue from ``state()``'s keys; a state written before early stopping existed starts the rule afresh."""
        if "val_history" not in state:
            return
        self.history = [float(v) for v in state["val_history"]]
        self.best_state = {k: v.detach().clone() for k, v in state["best_model"].items()}
        self.best_loss, self.best_epoch = float(state["best_val_loss"]), int(state["best_epoch"])
        self.bad_epochs = int(state["bad_epochs"])


def balanced_direction_weights(direction: np.ndarray, n_classes: int = len(DIRECTION_CLASSES)) -> torch.Tensor:
    """``n_samples / (n_classes * count_c)`` per direction class over the labels trained on (sklearn's "balanced").

    A class absent from them gets weight 1 (the unweighted loss's): no training target has it, so it only matters on
    the validation slice, where weight 0 could leave a batch with no weight at all (0/0, a NaN loss)."""
    counts = np.bincount(np.asarray(direction, dtype=np.int64), minlength=n_classes)[:n_classes].astype(np.float64)
    safe = np.where(counts > 0, counts, 1.0)
    weights = np.where(counts > 0, counts.sum() / (n_classes * safe), 1.0)
    return torch.tensor(weights, dtype=torch.float32)


@torch.no_grad()
def validation_loss(model: EmbeddingModel, dataset: WindowDataset, lambdas: dict[str, float], device: torch.device,
                    direction_weights: torch.Tensor | None = None, label_smoothing: float = 0.0,
                    batch_size: int = 1024) -> float:
    """The fixed-lambda multitask total (with the training's class weights and label smoothing) on the whole
    ``dataset``, in eval mode and float32 like ``predict``: the losses over all samples at once, so the number does
    not depend on the chunking. Under ``model.loss_weighting: uncertainty`` this is still the plain lambda-weighted
    total, not the learned weighting's (whose log-variance terms move as it learns): epochs stay comparable."""
    was_training = model.training
    model.eval()
    chunks: dict[str, list[torch.Tensor]] = {"direction": [], "volatility": [], "volume": [], "regime": []}
    targets = []
    for start in range(0, len(dataset), batch_size):
        inputs, y = dataset.batch(torch.arange(start, min(start + batch_size, len(dataset))))
        out = model(move(inputs, device))
        for key, parts in chunks.items():
            parts.append(out[key].float())
        targets.append(y.to(device))
    model.train(was_training)
    outputs = {key: torch.cat(parts) for key, parts in chunks.items()}
    weights = direction_weights.to(device) if direction_weights is not None else None
    return float(multitask_loss(outputs, torch.cat(targets), lambdas, weights, label_smoothing).total)


def fit_linear_base(cfg: ExperimentConfig, data: PreparedData, scaler: FoldScaler, model: EmbeddingModel,
                    rows: np.ndarray, seed: int) -> None:
    """``model.linear_base``: the classical ``linear`` model (``model.linear``) fit on these training samples' scaled
    latest-bar features, copied into the model's frozen base. Every training sample, validation slice included,
    exactly as the ``linear`` baseline fits: early stopping then judges the network's residual against a base that
    has seen the validation rows, which can only make it keep less of the network."""
    from embedtune.models.classical import fit_classical

    x, y = scaler.features(data.features), scaler.targets(data.labels)
    linear = fit_classical("linear", x[rows], y[rows], x[:0], y[:0], cfg.model.linear, seed)
    model.linear_base.load_classical(linear)


def make_optimizer(tc: TrainingConfig, model: EmbeddingModel) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW over the network and the LR schedule over ``training.epochs``. Learned log-variances get no weight
    decay (decay would pull them back to fixed unit weights) and their own rate (``training.loss_weight_lr``: at the
    network's rate they may barely move in a short training)."""
    learned = list(model.loss_weights.parameters()) if model.loss_weights is not None else []
    others = [p for p in model.parameters() if all(p is not q for q in learned)]
    weight_lr = tc.loss_weight_lr if tc.loss_weight_lr is not None else tc.learning_rate
    optimizer = torch.optim.AdamW([{"params": others}, {"params": learned, "weight_decay": 0.0, "lr": weight_lr}],
                                  lr=tc.learning_rate, weight_decay=tc.weight_decay)
    schedule = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=tc.epochs) if tc.lr_schedule == "cosine"
                else torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0))
    return optimizer, schedule


def train_epoch(model: EmbeddingModel, forward: Callable[..., Any], dataset: WindowDataset,
                optimizer: torch.optim.Optimizer, generator: torch.Generator, lambdas: dict[str, float],
                direction_weights: torch.Tensor | None, tc: TrainingConfig, device: torch.device) -> float:
    """One pass over ``dataset`` in the generator's shuffled order, every rank on its slice of each global batch;
    the mean training loss of its steps."""
    autocast = tc.precision == "bf16" and device.type == "cuda"
    order = torch.randperm(len(dataset), generator=generator)
    epoch_loss, steps = 0.0, 0
    for start in range(0, len(order), tc.batch_size):
        batch = order[start: start + tc.batch_size]
        if len(batch) < world()[1]:  # too few samples to give every rank one: skip the remainder
            continue
        local, weight = shard(batch)
        inputs, y = dataset.batch(local)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
            outputs = forward(move(inputs, device))
        outputs = {k: v.float() for k, v in outputs.items()}
        losses = multitask_loss(outputs, y.to(device), lambdas, direction_weights, tc.label_smoothing)
        total = model.loss_weights(losses.parts) if model.loss_weights is not None else losses.total
        optimizer.zero_grad(set_to_none=True)
        (total * weight).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        optimizer.step()
        epoch_loss += float(total.detach())
        steps += 1
    return epoch_loss / max(steps, 1)


def refit(cfg: ExperimentConfig, data: PreparedData, scaler: FoldScaler, dataset: WindowDataset,
          positions: np.ndarray, seed: int, epochs: int, device: torch.device,
          direction_weights: torch.Tensor | None, timer: PhaseTimer) -> EmbeddingModel:
    """``training.early_stopping.refit``: a fresh model from ``seed`` (pretrained again when pretraining is on)
    trained ``epochs`` epochs on ``dataset`` (the whole training segment) with the same optimizer, schedule and
    losses. Deterministic given the seed, so a fold resumed from an epoch state refits to the same weights."""
    tc = cfg.training
    generator = seed_everything(seed)
    model = build_model(cfg.model, n_features=data.features.shape[1], feature_names=data.feature_names,
                        n_symbols=n_symbols(data)).to(device)
    if cfg.model.linear_base:
        fit_linear_base(cfg, data, scaler, model, positions, seed)
    if cfg.model.pretrain.enabled:
        with timer.phase("pretrain"):
            pretrain(cfg, data, model, dataset, positions, generator, seed)
    optimizer, schedule = make_optimizer(tc, model)
    net = wrap_ddp(model, device)
    forward = torch.compile(net, backend=tc.compile_backend) if tc.compile else net
    lambdas = tc.lambdas.model_dump()
    net.train()
    with timer.phase("train"):
        for _ in range(epochs):
            train_epoch(model, forward, dataset, optimizer, generator, lambdas, direction_weights, tc, device)
            schedule.step()
    return unwrap(net)


def fit_fold(
    cfg: ExperimentConfig, data: PreparedData, fold: Fold, seed: int, device: torch.device | None = None,
    resume: dict[str, Any] | None = None, on_epoch: EpochCallback | None = None,
) -> FoldOutcome:
    """Train one fold and predict its test block.

    ``on_epoch(epoch, state)`` receives everything needed to continue exactly where training stopped (model,
    optimizer, LR schedule, the shuffling generator and torch's RNG, and the early-stopping rule: ``val_history``,
    ``best_model``, ``best_val_loss``, ``best_epoch`` (0-based), ``bad_epochs``); ``resume`` is such a state. A
    resumed fold makes the same updates and stop decision as an uninterrupted one, so a worker failure costs at most
    one epoch. It is not called after the last epoch, nor after the one at which early stopping stops.

    Early stopping (``training.early_stopping``): the latest samples of the training segment are the validation slice
    (``split_validation``, purged from the samples trained on); training stops after ``patience`` epochs without
    improving the validation loss and the best epoch's weights predict the test block. The scaler is still fit on the
    whole training segment (never the test block). Heads: ``epochs_run``, ``best_epoch`` (1-based: the epoch whose
    weights the returned model holds, the last one without validation), ``best_val_loss`` and ``val_loss_last``
    (NaN without validation).
    """
    from embedtune.config.schema import CLASSICAL_MODELS

    if cfg.model.type in CLASSICAL_MODELS:  # one fit, no epochs: nothing to resume or checkpoint per epoch
        from embedtune.train.classical import fit_classical_fold

        return fit_classical_fold(cfg, data, fold, seed)
    device = device or torch.device("cpu")
    window = cfg.model.window
    tc = cfg.training
    es = tc.early_stopping
    timer = PhaseTimer()
    timer.start("scaling")
    train = fold_train(data, fold)
    row_time = data.panel.row_time if data.panel is not None else None
    split = split_validation(train, es.validation_fraction if es.enabled else 0.0,
                             max(cfg.walk_forward.purge_bars, cfg.labels.horizon), row_time)
    windows = data.window_index(window)  # a universe's windows stay within a symbol; None: one instrument
    scaler = FoldScaler.fit(data.features, data.labels, train, window, windows)
    features = torch.from_numpy(scaler.features(data.features))
    targets = torch.from_numpy(np.nan_to_num(scaler.targets(data.labels), nan=0.0))

    chains = scale_chains(data.chains, train)
    graphs = scale_graphs(data.graphs, chains)
    symbols = sample_symbols(cfg, data)

    def dataset_for(positions: np.ndarray) -> WindowDataset:
        return WindowDataset(features, targets, positions, window, chains, graphs, windows, symbols)

    dataset = dataset_for(split.fit)
    validate = dataset_for(split.validate) if len(split.validate) else None
    timer.stop()
    generator = seed_everything(seed)
    model = build_model(cfg.model, n_features=features.shape[1], feature_names=data.feature_names,
                        n_symbols=n_symbols(data)).to(device)
    if cfg.model.linear_base and resume is None:  # a resumed fold's state dict holds the fitted base
        fit_linear_base(cfg, data, scaler, model, train, seed)
    pretrain_loss: list[float] = []
    if cfg.model.pretrain.enabled and resume is None:  # a resumed fold's weights already hold the pretraining
        with timer.phase("pretrain"):
            pretrain_loss = pretrain(cfg, data, model, dataset, split.fit, generator, seed)
    optimizer, schedule = make_optimizer(tc, model)
    # Before a resumed state is loaded: the fold's starting weights (a fresh model's), whether resumed or not.
    start_lambdas = model.loss_weights.effective_lambdas() if model.loss_weights is not None else {}
    history: list[float] = []
    stopping = EarlyStopping(es.patience, es.min_delta)
    first_epoch = 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        schedule.load_state_dict(resume["schedule"])
        generator.set_state(resume["generator"])
        torch.set_rng_state(resume["torch_rng"])
        history = [float(v) for v in resume["history"]]
        stopping.load(resume)
        first_epoch = int(resume["epoch"]) + 1
    net = wrap_ddp(model, device)
    forward = torch.compile(net, backend=tc.compile_backend) if tc.compile else net
    lambdas = tc.lambdas.model_dump()
    # From the labels trained on (the same on every rank); kept on the device the losses are computed on.
    direction_weights = (balanced_direction_weights(data.labels[split.fit, label_column("direction")]).to(device)
                         if tc.direction_class_weights == "balanced" else None)
    if validate is not None and resume is None and cfg.model.linear_base:
        # The untrained network adds nothing to the linear base: "no epochs" is a candidate the deep part must beat.
        stopping.update(-1, from_rank_zero(validation_loss(model, validate, lambdas, device, direction_weights,
                                                           tc.label_smoothing), device), model)
    net.train()
    timer.start("train")
    for epoch in range(first_epoch, tc.epochs):
        epoch_loss = train_epoch(model, forward, dataset, optimizer, generator, lambdas, direction_weights, tc, device)
        schedule.step()
        history.append(epoch_loss)
        stop = False
        if validate is not None:
            # Under DDP every rank holds the same weights and evaluates the whole (small) validation slice with the
            # unwrapped model, unsharded and in eval mode (no DDP forward: nothing to synchronize); rank 0's loss is
            # then broadcast, so every rank takes the same stop decision even if their floats differed.
            loss = validation_loss(model, validate, lambdas, device, direction_weights, tc.label_smoothing)
            stop = stopping.update(epoch, from_rank_zero(loss, device), model)
        if on_epoch is not None and epoch < tc.epochs - 1 and not stop:  # the fold's own checkpoint covers the end
            # Live views (state_dict() tensors alias the weights): written before training goes on, never kept,
            # so no copy is paid every epoch; a caller that keeps a state must copy it.
            on_epoch(epoch, {
                "epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(), "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state(), "history": torch.tensor(history, dtype=torch.float64),
                **stopping.state(),
            })
        if stop:
            break

    model = unwrap(net)
    epochs_run = len(history)
    best_epoch = epochs_run
    if stopping.best_state:  # no improvement ever (every validation loss NaN): the last weights stay
        model.load_state_dict(stopping.best_state)
        best_epoch = stopping.best_epoch + 1
        if es.refit:
            # The validation slice chose the number of epochs; the weights that predict are trained afresh (same
            # seed, same recipe) on the whole training segment for that many epochs, so the model sees the same
            # samples a classical baseline fits on, the latest ones included.
            model = refit(cfg, data, scaler, dataset_for(train), train, seed, best_epoch, device, direction_weights,
                          timer)
    timer.start("predict")
    predictions, test_embeddings, fusion = predict(model, dataset_for(fold.test), scaler, data.index, device)
    # The retrieval bank is the whole training segment, validation slice included: its labels are known before the
    # test block as well.
    _, train_embeddings, _ = predict(model, dataset_for(train), scaler, data.index, device)
    heads = {
        **fusion,
        **head_metrics(predictions, data.labels[fold.test], data.required_labels),
        **embedding_quality(test_embeddings, fold.test, train_embeddings, train, data.labels, cfg.labels.horizon,
                            row_time, data.required_labels),
        "epochs_run": float(epochs_run),
        "best_epoch": float(best_epoch),
        "best_val_loss": float(stopping.best_loss) if stopping.best_state else float("nan"),
        "val_loss_last": stopping.history[-1] if stopping.history else float("nan"),
    }
    if model.loss_weights is not None:
        end_lambdas = model.loss_weights.effective_lambdas()
        heads.update({f"lambda_eff_{k}": v for k, v in end_lambdas.items()})
        heads["loss_weight_shift"] = loss_weight_shift(start_lambdas, end_lambdas)
    if pretrain_loss:
        heads["pretrain_loss"] = pretrain_loss[-1]
    timer.stop()
    return FoldOutcome(fold=fold.index, predictions=predictions, train_loss=history, heads=heads, model=model,
                       scaler=scaler, seconds=timer.seconds)


def restore_outcome(cfg: ExperimentConfig, data: PreparedData, fold: Fold, predictions: pd.DataFrame,
                    heads: dict[str, float], train_loss: list[float], model_state: dict[str, Any]) -> FoldOutcome:
    """A finished repeat of a fold rebuilt from what an epoch checkpoint kept of it (``training.seeds > 1``, a stop
    mid-fold): its model is rebuilt and loaded, its scaler refit (it depends on the fold only, not on the seed)."""
    model = build_model(cfg.model, n_features=data.features.shape[1], feature_names=data.feature_names,
                        n_symbols=n_symbols(data))
    model.load_state_dict(model_state)
    scaler = FoldScaler.fit(data.features, data.labels, fold_train(data, fold), cfg.model.window,
                            data.window_index(cfg.model.window))
    return FoldOutcome(fold=fold.index, predictions=predictions, train_loss=[float(v) for v in train_loss],
                       heads={k: float(v) for k, v in heads.items()}, model=model, scaler=scaler)


def n_symbols(data: PreparedData) -> int:
    """The symbol vocabulary of ``model.symbol_embedding``: the universe's symbols (0 for one instrument)."""
    return len(data.panel.symbols) if data.panel is not None else 0


def sample_symbols(cfg: ExperimentConfig, data: PreparedData) -> np.ndarray | None:
    """Each row's symbol code, given to the model only when it embeds symbols (``model.symbol_embedding``)."""
    if data.panel is None or cfg.model.symbol_embedding == 0:
        return None
    return data.panel.symbol_code


def loss_weight_shift(start: dict[str, float], end: dict[str, float]) -> float:
    """max over tasks of |log(end / start)| of the effective loss weights: how far learned weighting moved away
    from where it started (0: it stayed at its initial weights, i.e. it did nothing a fixed lambda would not)."""
    return max((abs(math.log(end[task] / start[task])) for task in start), default=0.0)


def pretrain(cfg: ExperimentConfig, data: PreparedData, model: EmbeddingModel, dataset: WindowDataset,
             train: np.ndarray, generator: torch.Generator, seed: int) -> list[float]:
    """NT-Xent on pairs drawn from the training segment only; the encoders then fine-tune with the heads."""
    pc = cfg.model.pretrain
    close = data.bars["close"].to_numpy()
    returns = np.diff(np.log(close), prepend=np.nan)
    vol = pd.Series(returns).rolling(cfg.labels.vol_window, min_periods=2).std().to_numpy()
    anchors, positives = contrastive_pairs(
        data.index, np.nan_to_num(returns), np.nan_to_num(vol), data.labels[:, label_column("regime")], train, pc.n_pairs,
        np.random.default_rng(seed),
    )
    if len(anchors) < 2:
        return []
    return pretrain_encoder(_PositionEncoder(model, dataset), lambda positions: torch.as_tensor(positions),
                            anchors, positives, pc.epochs, pc.learning_rate, pc.temperature, pc.batch_size,
                            generator)


class _PositionEncoder(torch.nn.Module):
    """Bar positions -> the model's fused embedding, the interface ``pretrain_encoder`` expects."""

    def __init__(self, model: EmbeddingModel, dataset: WindowDataset) -> None:
        super().__init__()
        self.model = model
        self.dataset = dataset

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, None]:
        device = next(self.model.parameters()).device
        return self.model.encode(move(self.dataset.inputs_at(positions.cpu()), device))[0], None


@torch.no_grad()
def predict(model: EmbeddingModel, dataset: WindowDataset, scaler: FoldScaler, index: pd.Index,
            device: torch.device, batch_size: int = 1024) -> tuple[pd.DataFrame, np.ndarray, dict[str, float]]:
    """Head outputs (regression heads back in label units), embeddings, and mean fusion weight per source."""
    was_training = model.training
    model.eval()
    chunks, embeddings = [], []
    fusion: dict[str, float] = {}
    for start in range(0, len(dataset), batch_size):
        inputs, _ = dataset.batch(torch.arange(start, min(start + batch_size, len(dataset))))
        out = model(move(inputs, device))
        chunks.append(torch.cat([
            torch.softmax(out["direction"], -1), out["volatility"][:, None], out["volume"][:, None],
            torch.softmax(out["regime"], -1),
        ], dim=1).cpu())
        embeddings.append(out["embedding"].cpu())
        for key, weights in out.items():
            if key.startswith("fusion_"):
                fusion[key] = fusion.get(key, 0.0) + float(weights.sum())
    model.train(was_training)
    values = torch.cat(chunks).numpy().astype(np.float64)
    unscale_predictions(values, scaler.unscale_regression)
    positions = dataset.positions.numpy()
    return (pd.DataFrame(values, index=index[positions], columns=list(PREDICTION_COLUMNS)),
            torch.cat(embeddings).numpy(), {k: v / len(dataset) for k, v in fusion.items()})


#: Most test rows and bank rows the embedding diagnostics read: retrieval compares every query with every bank item
#: (and k-means every query with every centre), so on a universe (test and bank both grow with the symbols) the cost
#: was quadratic in symbols: 30 min of a 500-symbol fold's prediction phase (BENCHMARKS.md, "universe"). Above a cap,
#: evenly spaced rows (deterministic, spanning the whole block) stand in; one instrument's folds are far below them.
QUALITY_QUERIES = 4_096
QUALITY_BANK = 65_536


def evenly_spaced(n: int, cap: int) -> np.ndarray:
    """Positions 0..n-1, or ``cap`` of them evenly spaced from the first to the last when n is larger."""
    return np.arange(n) if n <= cap else np.unique(np.linspace(0, n - 1, cap).round().astype(np.int64))


def embedding_quality(test_embeddings: np.ndarray, test: np.ndarray, bank_embeddings: np.ndarray,
                      bank: np.ndarray, labels: np.ndarray, horizon: int, row_time: np.ndarray | None = None,
                      required: list[int] | None = None) -> dict[str, float]:
    """Regime purity of the test embeddings; nearest-historical-neighbour retrieval of direction and regime.

    The bank is the training segment, each item dated when its label became known (t + horizon), so retrieval
    only ever looks at history whose outcome was already public. ``row_time`` (a universe): positions are rows, and
    this is each row's calendar position, the time retrieval compares; ``required``: as ``head_metrics``'. At most
    ``QUALITY_QUERIES`` test rows and ``QUALITY_BANK`` bank rows are read (``evenly_spaced``).
    """
    keep_test, keep_bank = evenly_spaced(len(test), QUALITY_QUERIES), evenly_spaced(len(bank), QUALITY_BANK)
    test_embeddings, test = test_embeddings[keep_test], test[keep_test]
    bank_embeddings, bank = bank_embeddings[keep_bank], bank[keep_bank]
    checked = labels[test] if required is None else labels[test][:, required]
    known = ~np.isnan(checked).any(axis=1)
    if known.sum() < 10:
        return {}
    times = row_time if row_time is not None else np.arange(len(labels))
    query, q_labels, q_times = test_embeddings[known], labels[test][known], times[test][known]
    out = {"regime_purity": cluster_purity(query, q_labels[:, label_column("regime")])}
    for name in ("direction", "regime"):
        column = label_column(name)
        out[f"retrieval_{name}"] = retrieval_accuracy(query, q_labels[:, column], bank_embeddings,
                                                      labels[bank, column], times[bank] + horizon, q_times)
    return out
