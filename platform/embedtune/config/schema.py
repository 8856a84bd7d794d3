"""One YAML file is one experiment: the strict, typed schema.

Every section is a pydantic model with ``extra="forbid"``, so a typo is an error at load time that names its key path
(``training.lambdas.directon``), never a silent default discovered after an hour of tuning. Rules that span sections
or need the feature and strategy registries live in ``checks``; reading files in ``loading``; the hash in ``hashing``.
"""
from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, ValidationError, field_validator,
                      model_serializer, model_validator)

from embedtune.config.hashing import CPCV_ONLY, science_hash
from embedtune.config.paths import set_path
from embedtune.metric_registry import (CROSS_TRIAL_METRICS, METRICS_MAXIMIZED, METRICS_MINIMIZED,  # noqa: F401
                                       PER_TRIAL_METRICS, metric_mode)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SyntheticMarketConfig(Strict):
    n_bars: int = Field(default=2000, ge=200)
    seed: int = 0
    signal_strength: float = Field(default=0.0, ge=0.0, lt=1.0)
    regimes: bool = True


class SyntheticChainConfig(Strict):
    """The option-chain generator used when ``data.option_chains: synthetic``."""

    seed: int = 0
    every: int = Field(default=5, ge=1)
    n_expiries: int = Field(default=4, ge=1, le=24)
    strikes_per_side: int = Field(default=8, ge=1, le=100)
    rate: float = Field(default=0.02, ge=-0.1, le=1.0)
    #: A PLANTED look-ahead signal in the smile skew, for ground-truth tests of chain encoders only.
    informed_skew: float = Field(default=0.0, ge=0.0, le=0.5)
    informed_horizon: int = Field(default=5, ge=1)


class OrderFlowGeneratorConfig(Strict):
    """The quote/trade generator used when ``data.quotes`` or ``data.trades`` is ``synthetic``: an EKOP arrival
    process laid over the bars (``embedtune.data.synthetic_trades``); the stream is labelled synthetic everywhere."""

    seed: int = 0
    trades_per_bar: float = Field(default=50.0, gt=0.0, le=10_000.0)
    #: Share of bars inside informed-trading episodes, and the chance of an information event inside / outside one.
    episode_share: float = Field(default=0.15, gt=0.0, lt=1.0)
    alpha_episode: float = Field(default=0.8, ge=0.0, le=1.0)
    alpha_normal: float = Field(default=0.05, ge=0.0, le=1.0)
    #: Informed trades on an event, as a multiple of ``trades_per_bar``.
    informed_intensity: float = Field(default=0.6, ge=0.0, le=100.0)
    #: 0: informed traders know their own bar's move (EKOP; nothing after the bar's close). k >= 1: a PLANTED
    #: look-ahead signal, they know bar t+k's return, so order flow predicts it (ground-truth tests only).
    informed_lead: int = Field(default=0, ge=0, le=250)


#: Keys of ``DataConfig`` that only matter when order flow is attached (``quotes`` or ``trades`` not ``none``).
ORDER_FLOW_KEYS = ("quotes", "trades", "order_flow_generator")


class DataConfig(Strict):
    #: ``bundled:<name>``, ``synthetic`` (see ``synthetic``), or a path to a CSV/Parquet bar file.
    source: str = "bundled:goog_daily"
    synthetic: SyntheticMarketConfig = SyntheticMarketConfig()
    #: ``none``, ``synthetic`` (generated from the bars, labelled synthetic) or a path to an option-chain file.
    option_chains: str = "none"
    chain_generator: SyntheticChainConfig = SyntheticChainConfig()
    start: str | None = None
    end: str | None = None
    #: Time of day (``HH:MM``, optionally followed by an IANA time zone, e.g. ``16:00 America/New_York``) at which a
    #: date-only option-chain timestamp becomes visible (end-of-day vendor files). Required when such chains meet
    #: intraday bars: a date alone would make the chain visible at midnight, before its quotes existed.
    chain_time: str | None = None
    #: The price the bars are traded and featurized at: ``close`` as written, or ``adj_close`` (a column of the bar
    #: file, e.g. ``Adj Close``): open, high, low and close are rescaled by adj_close / close bar by bar.
    price: Literal["close", "adj_close"] = "close"
    #: One model over many instruments instead of ``source``: a long bar file (``timestamp, symbol, ...``, CSV or
    #: Parquet), a folder of one bar file per symbol, or ``bundled:<name>`` (``embedtune.data.universe``).
    universe: str | None = None
    #: ``universe`` only: the symbols to run on (default: all of them).
    symbols: list[str] | None = Field(default=None, min_length=1)
    #: Order flow for the microstructure family: ``none``, ``synthetic`` (``order_flow_generator``, driven by the
    #: bars) or a path to a CSV/Parquet file: quotes ``timestamp, bid, ask, bid_size, ask_size``; trades
    #: ``timestamp, price, size`` and optional ``side``. Each bar aggregates the events in (previous bar, its stamp].
    quotes: str = "none"
    trades: str = "none"
    order_flow_generator: OrderFlowGeneratorConfig = OrderFlowGeneratorConfig()

    @field_validator("quotes", "trades")
    @classmethod
    def _stream_named(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("give none, synthetic or a path to a file")
        return value

    @model_serializer(mode="wrap")
    def _omit_inert_order_flow(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Inert order-flow keys are left out of the dump: without order flow all of them, so the config hash of
        every experiment written before they existed is unchanged; without a synthetic stream the generator, which
        nothing reads then (``checks.data_errors`` refuses it written out). The dump validates back to the same
        config."""
        out = handler(self)
        if "synthetic" not in (self.quotes, self.trades):
            out.pop("order_flow_generator", None)
        if self.quotes == "none" and self.trades == "none":
            for key in ORDER_FLOW_KEYS:
                out.pop(key, None)
        return out

    @field_validator("chain_time")
    @classmethod
    def _chain_time_format(cls, value: str | None) -> str | None:
        from embedtune.data.chain_time import parse_chain_time

        if value is not None:
            parse_chain_time(value)
        return value


class LabelConfig(Strict):
    horizon: int = Field(default=5, ge=1, le=250)
    #: Neutral band of the direction label, in units of trailing volatility * sqrt(horizon).
    neutral_band: float = Field(default=0.25, ge=0.0, le=5.0)
    vol_window: int = Field(default=20, ge=2)
    trend_sigmas: float = Field(default=0.5, gt=0.0)
    crash_sigmas: float = Field(default=2.5, gt=0.0)
    high_vol_ratio: float = Field(default=1.5, gt=1.0)


class ChainEncoderConfig(Strict):
    """Transformer over the option chain snapshot visible at each bar (one token per option, plus a CLS token)."""

    enabled: bool = False
    n_features: int = Field(default=50, ge=24, le=512)
    d_model: int = Field(default=512, ge=4)
    n_heads: int = Field(default=8, ge=1)
    n_layers: int = Field(default=6, ge=1, le=48)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    out_dim: int = Field(default=256, ge=2)
    #: Options kept per snapshot (nearest the money first); fixed so tensors never depend on later snapshots.
    max_options: int = Field(default=128, ge=4)

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "ChainEncoderConfig":
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads: d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        return self


EdgeKind = Literal["same_expiry", "calendar", "parity", "spread"]


class GraphEncoderConfig(Strict):
    """GNN over the option-chain graph (attention message passing with edge attributes, attention pooling)."""

    enabled: bool = False
    hidden: int = Field(default=128, ge=4)
    heads: int = Field(default=4, ge=1)
    n_layers: int = Field(default=3, ge=1, le=16)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    out_dim: int = Field(default=256, ge=2)
    #: Edge kinds that must exist in every snapshot's graph (a missing kind is a config error before training).
    required_edge_kinds: list[EdgeKind] = Field(default_factory=list)

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "GraphEncoderConfig":
        if self.hidden % self.heads:
            raise ValueError(f"heads: hidden {self.hidden} is not divisible by heads {self.heads}")
        return self


class FusionConfig(Strict):
    type: Literal["concat", "attention", "hierarchical"] = "attention"
    out_dim: int = Field(default=32, ge=2)
    #: Source order (the chain order of hierarchical fusion); default: temporal, chain, graph, then the groups.
    order: list[str] | None = None


class PretrainConfig(Strict):
    """Contrastive (NT-Xent) pretraining of the encoders on each fold's training segment before fine-tuning."""

    enabled: bool = False
    epochs: int = Field(default=2, ge=1)
    temperature: float = Field(default=0.5, gt=0.0, le=10.0)
    n_pairs: int = Field(default=512, ge=8)
    batch_size: int = Field(default=64, ge=2)
    learning_rate: float = Field(default=1e-3, gt=0.0, le=1.0)


class LinearConfig(Strict):
    """``model.type: linear``: L2-regularized logistic regression per class head, ridge per regression head."""

    #: L2 penalty on the coefficients of the standardized features (sklearn's ``1 / C`` for the logistic heads,
    #: ``alpha`` for the ridge heads).
    l2: float = Field(default=1.0, gt=0.0, le=1e6)


class LightGBMConfig(Strict):
    """``model.type: lightgbm``: one gradient-boosted tree model per head (the ``lightgbm`` package)."""

    num_leaves: int = Field(default=15, ge=2, le=4096)
    learning_rate: float = Field(default=0.05, gt=0.0, le=1.0)
    #: Most boosting rounds; with early stopping on the validation slice, the best round is kept.
    n_estimators: int = Field(default=300, ge=1, le=100_000)
    min_child_samples: int = Field(default=20, ge=1)
    feature_fraction: float = Field(default=1.0, gt=0.0, le=1.0)
    l2: float = Field(default=0.0, ge=0.0)


#: Models that read the latest bar's scaled features (not a window, not option-chain tensors) and train without torch.
CLASSICAL_MODELS = ("linear", "lightgbm")


class ModelConfig(Strict):
    #: ``temporal_transformer``: the feature-sequence encoder alone; ``ensemble``: it plus the enabled chain
    #: transformer, graph network and per-family group encoders, joined by ``fusion``; ``mlp``: the latest bar's
    #: features through an MLP; ``linear`` / ``lightgbm``: the classical baselines on the latest bar's features.
    type: Literal["temporal_transformer", "ensemble", "mlp", "linear", "lightgbm"] = "temporal_transformer"
    linear: LinearConfig = LinearConfig()
    lightgbm: LightGBMConfig = LightGBMConfig()
    window: int = Field(default=32, ge=2, le=4096)
    d_model: int = Field(default=32, ge=4)
    n_heads: int = Field(default=4, ge=1)
    n_layers: int = Field(default=2, ge=1, le=48)
    dim_feedforward: int = Field(default=64, ge=4)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    embedding_dim: int = Field(default=16, ge=2)
    chain: ChainEncoderConfig = ChainEncoderConfig()
    graph: GraphEncoderConfig = GraphEncoderConfig()
    #: Feature families that also get their own encoder (latest values -> MLP), e.g. [wavelet, microstructure].
    groups: list[str] = Field(default_factory=list)
    fusion: FusionConfig = FusionConfig()
    #: ``fixed``: training.lambdas; ``uncertainty``: learned homoscedastic uncertainty weights (Kendall et al.).
    loss_weighting: Literal["fixed", "uncertainty"] = "fixed"
    pretrain: PretrainConfig = PretrainConfig()
    #: ``data.universe`` only: width of a learned per-symbol vector appended to every step of a sample's window
    #: (``models.symbol_embedding``); 0: none, the model does not know which symbol a sample is.
    symbol_embedding: int = Field(default=0, ge=0, le=512)
    #: Deep models: every head's output is the classical linear model's (``model.linear``, fit in closed form on the
    #: fold's training samples, latest bar's features, frozen) plus the network's, whose output layers start at zero:
    #: the network learns a residual over the linear model, and early stopping may keep none of it
    #: (``models/linear_base.py``; README, "Models that learn"). A classical ``type`` ignores it (it is the linear
    #: model), so an experiment's baseline rows stay the plain classical models.
    linear_base: bool = False

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "ModelConfig":
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads: d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        return self

    @property
    def sources(self) -> list[str]:
        """Embedding sources the fusion joins, in default order."""
        if self.type == "temporal_transformer":
            return ["temporal"]
        if self.type == "mlp":
            return ["latest"]
        return (["temporal"] + (["chain"] if self.chain.enabled else []) + (["graph"] if self.graph.enabled else [])
                + list(self.groups))


class LambdaConfig(Strict):
    direction: float = Field(default=1.0, ge=0.0)
    volatility: float = Field(default=1.0, ge=0.0)
    volume: float = Field(default=1.0, ge=0.0)
    regime: float = Field(default=1.0, ge=0.0)

    @model_validator(mode="after")
    def _not_all_zero(self) -> "LambdaConfig":
        if self.direction + self.volatility + self.volume + self.regime <= 0:
            raise ValueError("at least one lambda must be positive")
        return self


class EarlyStoppingConfig(Strict):
    """Early stopping on the validation slice at the end of each fold's training segment (``train/validation.py``):
    purged from the samples trained on, never the test block; the best epoch's weights are restored."""

    enabled: bool = True
    #: Share of the fold's training samples (the latest ones) held out to validate on.
    validation_fraction: float = Field(default=0.2, ge=0.0, le=0.5)
    #: Epochs without an improvement of at least ``min_delta`` before training stops.
    patience: int = Field(default=3, ge=1)
    min_delta: float = Field(default=0.0, ge=0.0)
    #: After stopping, train a fresh model (same seed) for the best epoch count on the whole training segment,
    #: validation slice included, and predict with it: the slice chooses how long to train, not which samples are
    #: left out (costs up to one more training per fold).
    refit: bool = False


class TrainingConfig(Strict):
    #: Most epochs per fold (early stopping may stop sooner).
    epochs: int = Field(default=5, ge=1, le=10_000)
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    #: ``balanced``: direction cross-entropy weighted by inverse class frequency in the fold's training labels, so a
    #: rare class is not simply never predicted.
    direction_class_weights: Literal["none", "balanced"] = "none"
    #: Label smoothing of the direction cross-entropy (0: none).
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)
    batch_size: int = Field(default=64, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0.0, le=1.0)
    weight_decay: float = Field(default=1e-4, ge=0.0)
    grad_clip: float = Field(default=1.0, gt=0.0)
    lambdas: LambdaConfig = LambdaConfig()
    #: Repeats of every trial's folds with different seeds (common random numbers: the seeds depend on the experiment
    #: seed, the fold and the repeat only); metrics are means over repeats, ``<metric>_seed_std`` their spread.
    seeds: int = Field(default=1, ge=1, le=32)
    #: Learning rate of learned loss weights (``model.loss_weighting: uncertainty``); None: ``learning_rate``.
    #: Default 0.01: four scalars with small gradients; at a network's rate (1e-3) Adam moves them at most ~0.2 in log
    #: space over 200 steps, so "learned" weights would stay at their start and the baseline would be fixed weights.
    loss_weight_lr: float | None = Field(default=0.01, gt=0.0, le=10.0)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    #: ``bf16`` autocasts the forward pass on GPU (CPU runs stay fp32: bf16 is slower there).
    precision: Literal["fp32", "bf16"] = "fp32"
    #: ``torch.compile`` the model (``compile_backend``: inductor on GPU clusters; eager/aot_eager to debug).
    compile: bool = False
    compile_backend: str = "inductor"


#: Most trainings one trial may run under ``scheme: cpcv`` (C(n_groups, n_test_groups)); a typo such as
#: ``n_groups: 60`` must fail at load time, not after a day of training.
MAX_CPCV_SPLITS = 1000
WALK_FORWARD_ONLY = ("n_folds", "test_bars", "train_bars")
#: Sections the driver prepares once for all trials (bars, labels, folds, output places): not searchable.
#: (``features`` is searchable with finite choices: the driver precomputes every feature configuration the search space
#: can produce, at most ``MAX_FEATURE_VARIANTS``, and each trial gets its own; see ``feature_variants``.)
PREPARED_ONCE = ("data", "labels", "walk_forward", "resources", "output", "search", "objective")
#: Most feature configurations a search space may produce (the product of the sizes of its finite ``features.*``
#: choices): each is computed, and held in memory, before any trial starts.
MAX_FEATURE_VARIANTS = 32


class WalkForwardConfig(Strict):
    """How samples are split into training and out-of-sample test sets.

    ``rolling`` / ``anchored``: walk-forward, ``n_folds`` consecutive test blocks of ``test_bars`` at the end of the
    data, each trained on the ``train_bars`` before it (anchored: on all history). ``cpcv``: combinatorial purged
    cross-validation (Lopez de Prado, AFML ch. 12): all samples cut into ``n_groups`` contiguous groups, one split per
    choice of ``n_test_groups`` of them, purged and embargoed around every test group, backtested along the
    ``n_test_groups / n_groups * C(n_groups, n_test_groups)`` paths. Keys of the other kind of scheme must stay at
    their defaults (they would be silently ignored otherwise).
    """

    scheme: Literal["rolling", "anchored", "cpcv"] = "rolling"
    n_folds: int = Field(default=3, ge=1)
    test_bars: int = Field(default=250, ge=1)
    train_bars: int | None = Field(default=750, ge=10)
    purge_bars: int = Field(default=5, ge=0)
    embargo_bars: int = Field(default=5, ge=0)
    #: cpcv only: N contiguous groups over all samples ...
    n_groups: int = Field(default=6, ge=3)
    #: ... of which each split tests on k (2 <= k < N; k = 1 would give a single path and no path distribution).
    n_test_groups: int = Field(default=2, ge=2)
    #: The lockbox: the last samples, never seen by any trial, sampler, scheduler or search report, behind a purge and
    #: an embargo. ``auto``: 20% of the samples, at least one ``test_bars`` block (walk-forward); ``0`` turns it off.
    #: After the search the selected trials are trained once on the data before it and evaluated once on it.
    holdout_bars: int | Literal["auto"] = "auto"

    @field_validator("holdout_bars")
    @classmethod
    def _holdout_not_negative(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 0:
            raise ValueError("must be >= 0 (0 turns the holdout off) or 'auto'")
        return value

    @model_validator(mode="after")
    def _scheme_keys(self) -> "WalkForwardConfig":
        fields = type(self).model_fields
        if self.scheme != "cpcv":
            for name in CPCV_ONLY:
                if getattr(self, name) != fields[name].default:
                    raise ValueError(f"{name}: only used by scheme cpcv (scheme is {self.scheme})")
            return self
        for name in WALK_FORWARD_ONLY:
            if getattr(self, name) != fields[name].default:
                raise ValueError(f"{name}: not used by scheme cpcv (it runs C(n_groups, n_test_groups) splits over "
                                 "all samples); remove it")
        if self.n_test_groups >= self.n_groups:
            raise ValueError(f"n_test_groups: must be below n_groups ({self.n_groups}), got {self.n_test_groups}")
        if self.n_splits > MAX_CPCV_SPLITS:
            raise ValueError(f"n_test_groups: C({self.n_groups}, {self.n_test_groups}) = {self.n_splits} trainings "
                             f"per trial exceeds {MAX_CPCV_SPLITS}; use fewer groups")
        return self

    @property
    def n_splits(self) -> int:
        """Folds a trial trains, and reports after, in order: ``n_folds``, or C(n_groups, n_test_groups) for cpcv."""
        return math.comb(self.n_groups, self.n_test_groups) if self.scheme == "cpcv" else self.n_folds

    @property
    def n_paths(self) -> int:
        """Backtest paths: 1 for walk-forward (the joined test blocks), k/N * C(N, k) = C(N-1, k-1) for cpcv."""
        return math.comb(self.n_groups - 1, self.n_test_groups - 1) if self.scheme == "cpcv" else 1


class FactorConfig(Strict):
    """``data.universe`` only: the factor analysis of the out-of-sample predictions (``backtest.factor``)."""

    #: The score ranked across symbols at each timestamp: ``edge`` = p_up - p_down (what ``top_bottom_quantile``
    #: trades), ``p_up``, ``neg_p_down`` = -p_down, ``neg_vol_pred`` = -predicted volatility.
    score: Literal["edge", "p_up", "neg_p_down", "neg_vol_pred"] = "edge"
    #: Score quantiles per timestamp (quantile returns, top-minus-bottom spread, turnover).
    quantiles: int = Field(default=5, ge=2, le=100)


class StrategyConfig(Strict):
    name: str = "direction_threshold"
    params: dict[str, Any] = Field(default_factory=dict)
    #: Folder of strategy plugins, relative to the working directory.
    path: str = "strategies"
    fees: float = Field(default=0.0005, ge=0.0, lt=0.1)
    slippage: float = Field(default=0.0005, ge=0.0, lt=0.1)
    #: ``data.universe`` only: when a bar's target weights trade, at the next bar's open or close. Default: the open
    #: where the universe has opens, else the close (a close-only panel can only trade at closes).
    execution: Literal["next_open", "next_close"] | None = None
    factor: FactorConfig = FactorConfig()


#: What a trial can be scored on: the per-trial metrics of the registry (cross-trial ones are refused by name, see
#: ``cross_trial_problem``: no single trial has a value to be scored or constrained on).
Metric = Literal[PER_TRIAL_METRICS]  # type: ignore[valid-type]


def cross_trial_problem(metric: Any, instead: str) -> str | None:
    """Why ``metric`` cannot be what a trial is scored or constrained on (one line, naming ``instead``), or None."""
    if not isinstance(metric, str) or metric not in CROSS_TRIAL_METRICS:
        return None
    return (f"{metric!r} is {CROSS_TRIAL_METRICS[metric]}, computed once after the search: no trial has a value to "
            f"be scored or constrained on (the search would run blind); use {instead} and read {metric} in the "
            "leaderboard")


class RiskAdjustedConfig(Strict):
    """``risk_adjusted = -annual_return + a * annual_volatility + b * max_drawdown + c * |corr(strategy, benchmark)|``
    (minimized), the seed guide's custom loss."""

    a: float = Field(default=1.0, ge=0.0)
    b: float = Field(default=1.0, ge=0.0)
    c: float = Field(default=0.0, ge=0.0)


class ConstraintsConfig(Strict):
    """Upper limits a trial must satisfy; infeasible trials are ranked after feasible ones and steer Optuna."""

    max_drawdown: float | None = Field(default=None, gt=0.0, le=1.0)
    turnover: float | None = Field(default=None, gt=0.0)
    #: Largest single trade as a fraction of trailing average daily dollar volume (at ``objective.capital``).
    capacity: float | None = Field(default=None, gt=0.0)

    @model_validator(mode="before")
    @classmethod
    def _per_trial_only(cls, raw: Any) -> Any:
        for name in raw if isinstance(raw, dict) else ():
            problem = cross_trial_problem(name, f"a per-trial constraint ({', '.join(cls.model_fields)})")
            if problem:
                raise ValueError(f"{name}: {problem}")
        return raw

    def active(self) -> dict[str, float]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class ObjectiveConfig(Strict):
    #: Single-objective search (TPE) on this metric ...
    metric: Metric = "sharpe"
    #: ... or, when given, multi-objective search (NSGA-II) on these, e.g. [sharpe, max_drawdown].
    metrics: list[Metric] | None = Field(default=None, min_length=2)
    risk_adjusted: RiskAdjustedConfig = RiskAdjustedConfig()
    constraints: ConstraintsConfig = ConstraintsConfig()
    #: Capital assumed when measuring capacity (traded size against average dollar volume).
    capital: float = Field(default=1_000_000.0, gt=0.0)
    capacity_window: int = Field(default=20, ge=1)

    @field_validator("metric", "metrics", mode="before")
    @classmethod
    def _per_trial_only(cls, value: Any) -> Any:
        for metric in value if isinstance(value, list) else [value]:
            problem = cross_trial_problem(metric, f"a per-trial metric ({', '.join(PER_TRIAL_METRICS)})")
            if problem:
                raise ValueError(problem)
        return value

    @property
    def mode(self) -> Literal["max", "min"]:
        return metric_mode(self.metric)

    @property
    def targets(self) -> list[str]:
        """The metrics the search optimizes, in order."""
        return list(self.metrics) if self.metrics else [self.metric]


class SearchParam(Strict):
    type: Literal["loguniform", "uniform", "int", "choice"]
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> "SearchParam":
        if self.type == "choice":
            if not self.values:
                raise ValueError("values: a 'choice' parameter needs a non-empty list of values")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"low/high: a '{self.type}' parameter needs both bounds")
        if not self.low < self.high:
            raise ValueError(f"low: must be below high ({self.low} >= {self.high})")
        if self.type == "loguniform" and self.low <= 0:
            raise ValueError("low: a loguniform lower bound must be positive")
        return self


class SchedulerConfig(Strict):
    """``asha`` stops weak trials at fold boundaries (a report after each fold); Optuna only proposes."""

    type: Literal["fifo", "asha"] = "fifo"
    grace_period: int = Field(default=1, ge=1)
    reduction_factor: float = Field(default=2.0, gt=1.0)


class SearchConfig(Strict):
    num_samples: int = Field(default=8, ge=1)
    max_concurrent: int = Field(default=2, ge=1)
    #: The sampler learns results in trial order: trial k is proposed once trials 0..k-max_concurrent are done, so the
    #: same config and seed propose the same trials (reproducible leaderboards); a slot idles only while a trial that
    #: finished before an elder waits for it. ``false`` tells each result as it comes and never idles a slot, at the
    #: price of proposals that depend on the order in which trials finish. Default: true under FIFO, false under ASHA
    #: (whose stop decisions depend on the order trials reach a rung anyway, and whose stopped trials would leave
    #: slots idle behind their elders).
    in_order: bool | None = None

    @property
    def proposes_in_order(self) -> bool:
        return self.in_order if self.in_order is not None else self.scheduler.type == "fifo"
    #: ``tpe`` (single objective), ``nsga2`` (multi-objective; the default when objective.metrics is set), ``random``.
    sampler: Literal["tpe", "nsga2", "random"] = "tpe"
    n_startup_trials: int = Field(default=4, ge=1)
    scheduler: SchedulerConfig = SchedulerConfig()
    #: Optuna study storage (any SQLAlchemy URL); default: an SQLite file next to the experiment's results, which
    #: optuna-dashboard opens as is.
    storage: str | None = None
    #: Dotted config paths (``training.lambdas.direction``) mapped to distributions.
    space: dict[str, SearchParam] = Field(default_factory=dict)
    #: Put the searched lambdas on a simplex: after sampling they are rescaled to sum to the number of tasks, so only
    #: their ratios are searched (their common scale would just duplicate the learning rate).
    lambdas_on_simplex: bool = False
    #: Also run one trial with learned uncertainty loss weights (Kendall et al.), the baseline that tuned lambdas
    #: must beat; it is ranked in the same leaderboard.
    uncertainty_baseline: bool = True
    #: Trials (best first by the objective) trained once more on the data before the lockbox holdout and evaluated
    #: once on it, besides every baseline trial.
    holdout_top_k: int = Field(default=3, ge=1)
    #: Classical baselines run in every experiment on the same features, folds, labels, strategy, costs and holdout
    #: as the tuned trials (``[]``: none). Each is one trial at the config's ``model.linear`` / ``model.lightgbm``
    #: settings, counted in the ledger and evaluated on the holdout.
    baselines: list[Literal["linear", "lightgbm"]] = Field(default_factory=lambda: ["linear", "lightgbm"])
    #: An extra row: the averaged head outputs of the top k searched trials (by the objective on the search folds)
    #: through the same strategy, on the search folds and the holdout. 0: none.
    ensemble_top_k: int = Field(default=3, ge=0)

    @field_validator("baselines")
    @classmethod
    def _unique_baselines(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"lists a baseline twice: {value}")
        return value

    @field_validator("ensemble_top_k")
    @classmethod
    def _ensemble_of_several(cls, value: int) -> int:
        if value == 1:
            raise ValueError("an ensemble of one trial is that trial: use 0 (none) or at least 2")
        return value


class ResourcesConfig(Strict):
    #: Ray Train workers per trial (DDP world size). 0 runs Train's local mode in the trial process.
    num_workers: int = Field(default=1, ge=0)
    cpus_per_worker: float = Field(default=1.0, gt=0.0)
    use_gpu: bool = False
    #: CPU held by each Tune trial driver; fractional so trials never starve their own workers on small machines.
    trial_cpus: float = Field(default=0.01, gt=0.0)
    #: CPUs of the embedded local Ray when no cluster address is set (None: all cores).
    local_cpus: int | None = Field(default=None, ge=1)


class OutputConfig(Strict):
    root: str = "results"
    #: Feature cache folder (per family, keyed by data hash + family config + family code); null disables it.
    feature_cache: str | None = ".cache/features"
    #: Cross-experiment leaderboard (any SQLAlchemy URL, e.g. PostgreSQL on a cluster); default
    #: ``sqlite:///<root>/leaderboard.db``; every finished run is ingested in one transaction.
    leaderboard_db: str | None = None
    #: Optional experiment tracking through Ray Tune callbacks (TensorBoard event files or a local MLflow store
    #: under ``root``); mlflow needs the ``tracking`` extra.
    tracking: Literal["none", "tensorboard", "mlflow"] = "none"


def features_section(value: dict[str, dict[str, Any] | None]) -> dict[str, dict[str, Any]]:
    """A ``features`` mapping (family -> parameters) with empty parameters written ``{}``; at least one family. Shared
    by every config that names feature families (experiments, real-time serving)."""
    if not value:
        raise ValueError("at least one feature family is required")
    return {k: (v or {}) for k, v in value.items()}


#: ``data`` keys of one instrument's source, which a ``data.universe`` replaces (refused unless at their defaults).
SINGLE_SOURCE_KEYS = ("source", "synthetic", "option_chains", "chain_generator", "chain_time", "quotes", "trades",
                      "order_flow_generator")
#: Section -> keys only a ``data.universe`` experiment reads (see ``ExperimentConfig._omit_inert_universe_keys``).
UNIVERSE_ONLY_KEYS: dict[str, tuple[str, ...]] = {
    "data": ("universe", "symbols"), "model": ("symbol_embedding",), "strategy": ("execution", "factor"),
}


class ExperimentConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    description: str = ""
    seed: int = 0
    data: DataConfig = DataConfig()
    features: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"base": {}})
    labels: LabelConfig = LabelConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    walk_forward: WalkForwardConfig = WalkForwardConfig()
    strategy: StrategyConfig = StrategyConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    search: SearchConfig = SearchConfig()
    resources: ResourcesConfig = ResourcesConfig()
    output: OutputConfig = OutputConfig()

    @field_validator("features")
    @classmethod
    def _some_features(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return features_section(value)

    @model_serializer(mode="wrap")
    def _omit_inert_universe_keys(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Keys only a ``data.universe`` experiment reads are left out of the dump at their defaults when there is no
        universe, so every single-instrument config keeps the hash it had before universes existed (a key set
        without a universe is refused at load, ``config.universe_checks``)."""
        out = handler(self)
        if self.data.universe is not None:  # the one instrument's source keys, at their defaults, say nothing
            defaults = type(self.data).model_fields
            for key in SINGLE_SOURCE_KEYS:
                if key in defaults and getattr(self.data, key) == defaults[key].get_default(call_default_factory=True):
                    out["data"].pop(key, None)
            return out
        for section, keys in UNIVERSE_ONLY_KEYS.items():
            model = getattr(self, section)
            fields = type(model).model_fields
            for key in keys:
                if getattr(model, key) == fields[key].get_default(call_default_factory=True):
                    out[section].pop(key, None)
        return out

    @property
    def config_hash(self) -> str:
        return science_hash(self.model_dump(mode="json"))

    def with_overrides(self, overrides: dict[str, Any]) -> "ExperimentConfig":
        """A validated copy with dotted-path overrides applied (how a trial's sampled values enter the config)."""
        raw = self.model_dump(mode="json")
        for key, value in overrides.items():
            set_path(raw, key, value)
        return ExperimentConfig.model_validate(raw)


def first_error(err: ValidationError) -> tuple[str, str]:
    """The first problem pydantic found, as (dotted key path, one-line message)."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
        # Model-level validators name their field as "field: message".
        head, sep, tail = msg.partition(": ")
        if sep and head.isidentifier():
            loc = f"{loc}.{head}" if loc else head
            msg = tail
    return loc, msg
