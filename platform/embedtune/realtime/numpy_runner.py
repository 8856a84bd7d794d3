"""``NumpyModelRunner``: a model with a single temporal or MLP source served in NumPy (float64).

For one window per tick torch's per-operator dispatch costs more than the arithmetic, so the full pass (LayerNorm
folded into the following linear maps, attention over the window), the partial update (the cached pooled term plus the
newest row through the direct path) and the heads run as NumPy on the trained weights; ``of`` returns None for any other
model, which then runs in torch's ``ModelRunner``. Equal to the torch pass to about 1e-6
(``tests/test_realtime_parity.py``); measured in ``benchmarks/realtime.py``.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import ndtr
from torch import nn

from embedtune.models.ensemble import EmbeddingModel
from embedtune.models.sources import GroupSource, TemporalSource
from embedtune.models.temporal import TemporalTransformerEncoder
from embedtune.realtime.model import DenseStack, ModelRunner, Runner, base_outputs, base_terms


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().double().numpy().copy()


def _centre(width: int) -> np.ndarray:
    """The centring matrix I - 11'/width: ``v @ C`` is ``v`` minus its mean."""
    return np.eye(width) - 1.0 / width


def _fold(norm: nn.LayerNorm, linear: nn.Linear) -> tuple[np.ndarray, np.ndarray]:
    """``linear(norm.weight * z + norm.bias)`` as ``W @ z + b`` (column layout): the LayerNorm affine folded in."""
    weight = _array(linear.weight)
    bias = _array(linear.bias) if linear.bias is not None else np.zeros(weight.shape[0])
    return weight * _array(norm.weight)[None, :], weight @ _array(norm.bias) + bias


class _EncoderLayer:
    """One pre-norm ``nn.TransformerEncoderLayer`` (ReLU or exact GELU feed-forward), inference only.

    Columns are time steps (a (width, rows) residual stream), so every head's queries, keys and values are contiguous
    blocks and each product is one BLAS call. The stream is kept centred (the residual updates are projected onto
    zero-mean vectors), which is all a LayerNorm needs of its input, so a norm is one scale per column. The
    LayerNorm affines and the query scaling are folded into the projections that follow them.
    """

    def __init__(self, layer: nn.TransformerEncoderLayer) -> None:
        attention = layer.self_attn
        width = attention.embed_dim
        centre = _centre(width)
        self.heads = attention.num_heads
        self.head_width = width // self.heads
        self.scale = np.full(width, 1.0 / width)
        self.eps1, self.eps2 = layer.norm1.eps, layer.norm2.eps
        weight = _array(attention.in_proj_weight)
        bias = _array(attention.in_proj_bias) if attention.in_proj_bias is not None else np.zeros(3 * width)
        query = 1.0 / math.sqrt(self.head_width)
        weight[:width] *= query
        bias[:width] *= query
        gain, shift = _array(layer.norm1.weight), _array(layer.norm1.bias)
        self.qkv_w, self.qkv_b = weight * gain[None, :], (weight @ shift + bias)[:, None]
        out_bias = _array(attention.out_proj.bias) if attention.out_proj.bias is not None else np.zeros(width)
        self.out_w, self.out_b = centre @ _array(attention.out_proj.weight), (centre @ out_bias)[:, None]
        ff1_w, ff1_b = _fold(layer.norm2, layer.linear1)
        self.ff1_w, self.ff1_b = ff1_w, ff1_b[:, None]
        self.ff2_w, self.ff2_b = centre @ _array(layer.linear2.weight), (centre @ _array(layer.linear2.bias))[:, None]
        self.gelu = layer.activation_relu_or_gelu == 2

    @staticmethod
    def supported(layer: nn.Module) -> bool:
        """The layers this class reproduces: pre-norm, ReLU or exact GELU, plain packed attention."""
        if not isinstance(layer, nn.TransformerEncoderLayer):
            return False
        attention = layer.self_attn
        gelu_ok = layer.activation_relu_or_gelu == 1 or getattr(layer.activation, "approximate", "none") == "none"
        return bool(layer.norm_first and layer.activation_relu_or_gelu in (1, 2) and gelu_ok and attention.batch_first
                    and attention._qkv_same_embed_dim and attention.bias_k is None and not attention.add_zero_attn
                    and layer.linear1.bias is not None and layer.linear2.bias is not None)

    def __call__(self, h: np.ndarray) -> np.ndarray:
        """(width, rows) centred stream in, the layer's output (centred) out; ``h`` is updated in place."""
        t = h.shape[1]
        z = h / np.sqrt(self.scale @ (h * h) + self.eps1)
        qkv = self.qkv_w @ z
        qkv += self.qkv_b
        q, k, v = qkv.reshape(3, self.heads, self.head_width, t)  # each (heads, head width, rows)
        scores = k.transpose(0, 2, 1) @ q  # (heads, key, query)
        scores -= scores.max()
        np.exp(scores, out=scores)
        total = np.ones(t) @ scores  # (heads, query)
        if total.min() < 1e-290:  # a query far below the largest score: shift each query by its own maximum
            scores = k.transpose(0, 2, 1) @ q
            scores -= scores.max(axis=1, keepdims=True)
            np.exp(scores, out=scores)
            total = np.ones(t) @ scores
        attended = v @ scores  # (heads, head width, query)
        attended /= total[:, None, :]
        h += self.out_w @ attended.reshape(-1, t)
        h += self.out_b
        z = h / np.sqrt(self.scale @ (h * h) + self.eps2)
        hidden = self.ff1_w @ z
        hidden += self.ff1_b
        if self.gelu:
            hidden *= ndtr(hidden)  # exact GELU: x * Phi(x)
        else:
            np.maximum(hidden, 0.0, out=hidden)
        h += self.ff2_w @ hidden
        h += self.ff2_b
        return h


class _TemporalEncoder:
    """``TemporalTransformerEncoder.forward`` for one window in float64: (embedding, attention-pooled term)."""

    def __init__(self, encoder: TemporalTransformerEncoder) -> None:
        width = encoder.input.weight.shape[0]
        centre = _centre(width)
        self.input_w = centre @ _array(encoder.input.weight)
        self.position = centre @ (_array(encoder.position)[0] + _array(encoder.input.bias)).T  # (width, window)
        self.layers = [_EncoderLayer(layer) for layer in encoder.encoder.layers]
        self.scale = np.full(width, 1.0 / width)
        self.eps = encoder.norm.eps
        self.score_w, score_b = _fold(encoder.norm, encoder.pool.score[0])
        self.score_b = score_b[:, None]
        self.score_v = _array(encoder.pool.score[2].weight)[0]
        # The pooled column is a convex combination of normalized columns: the final norm's shift passes through.
        self.project_w, self.project_b = _fold(encoder.norm, encoder.project)
        self.latest_w, self.latest_b = _array(encoder.latest.weight).T.copy(), _array(encoder.latest.bias)

    @staticmethod
    def supported(encoder: nn.Module) -> bool:
        if not isinstance(encoder, TemporalTransformerEncoder) or encoder.encoder.norm is not None:
            return False
        score = encoder.pool.score
        return (len(score) == 3 and isinstance(score[0], nn.Linear) and isinstance(score[1], nn.Tanh)
                and isinstance(score[2], nn.Linear) and score[2].bias is None
                and all(_EncoderLayer.supported(layer) for layer in encoder.encoder.layers))

    def latest(self, row: np.ndarray) -> np.ndarray:
        return row @ self.latest_w + self.latest_b

    def __call__(self, window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = window.shape[0]
        h = self.input_w @ window.T
        h += self.position[:, -t:]
        for layer in self.layers:
            h = layer(h)
        z = h / np.sqrt(self.scale @ (h * h) + self.eps)
        scores = self.score_v @ np.tanh(self.score_w @ z + self.score_b)
        weights = np.exp(scores - scores.max())
        pooled = self.project_w @ (z @ weights) / weights.sum() + self.project_b
        return pooled + self.latest(window[-1]), pooled


class _Heads:
    """The direction, volatility and volume heads (each GELU, Linear, GELU, Linear) as one stacked pass: the shared
    first GELU once, the three first layers as one matrix, the three last ones as one block-diagonal matrix."""

    def __init__(self, heads: nn.Module) -> None:
        blocks = [heads.direction, heads.volatility, heads.volume]
        firsts, lasts = [b[1] for b in blocks], [b[3] for b in blocks]
        self.first_w = np.concatenate([_array(layer.weight).T for layer in firsts], axis=1)
        self.first_b = np.concatenate([_array(layer.bias) for layer in firsts])
        hidden = [layer.in_features for layer in lasts]
        outs = [layer.out_features for layer in lasts]
        self.last_w = np.zeros((sum(hidden), sum(outs)))
        row = col = 0
        for layer, rows, cols in zip(lasts, hidden, outs):
            self.last_w[row:row + rows, col:col + cols] = _array(layer.weight).T
            row, col = row + rows, col + cols
        self.last_b = np.concatenate([_array(layer.bias) for layer in lasts])
        self.n_direction = outs[0]

    @staticmethod
    def supported(heads: nn.Module) -> bool:
        """``MultiTaskHeads``' direction (3 classes), volatility and volume heads, with exact GELUs."""
        blocks = [getattr(heads, name, None) for name in ("direction", "volatility", "volume")]
        return all(isinstance(b, nn.Sequential) and len(b) == 4 and isinstance(b[1], nn.Linear)
                   and isinstance(b[3], nn.Linear) and b[1].bias is not None and b[3].bias is not None
                   and all(isinstance(b[i], nn.GELU) and b[i].approximate == "none" for i in (0, 2))
                   for b in blocks) and [b[3].out_features for b in blocks] == [3, 1, 1]  # type: ignore[index]

    def __call__(self, embedding: np.ndarray, linear: np.ndarray | None = None) -> np.ndarray:
        """``HEAD_COLUMNS``: softmax of the direction logits, the two standardized regressions, p_up - p_down.
        ``linear``: a linear base's 5 outputs for the newest row, added before the softmax."""
        x = embedding * ndtr(embedding)  # exact GELU: x * Phi(x)
        x = x @ self.first_w + self.first_b
        x *= ndtr(x)
        raw = x @ self.last_w + self.last_b
        out = (raw if linear is None else raw + linear).tolist()
        k = self.n_direction
        logits = out[:k]
        top = max(logits)
        p = [math.exp(v - top) for v in logits]
        total = sum(p)
        p = [v / total for v in p]
        return np.array([*p, out[k], out[k + 1], p[2] - p[0]])


class NumpyModelRunner(Runner):
    """``ModelRunner``'s full and partial passes and heads in NumPy (float64) for a model with a single temporal
    source or a single group source (``temporal_transformer``, ``mlp``).

    For one window per tick, torch's per-operator dispatch costs more than the arithmetic: the temporal encoder's
    full pass takes about 3x longer in torch than the same float64 arithmetic here, the heads (run on every tick)
    4x, the partial update 7x (``benchmarks/realtime.py``). The values are the model's (equal to the torch float32
    pass to float32 rounding, about 1e-6); ``of`` returns None for anything else (fusions, chain or graph sources,
    other layer types), which ``ModelRunner`` serves. The key is the model's, and ``state`` has ``ModelRunner``'s
    form (source name -> pooled term), so either runner of one model can restore the other's cached refresh.
    """

    has_heads = True

    def __init__(self, model: EmbeddingModel) -> None:
        self.reference = ModelRunner(model)  # the torch passes: the key, the window and batched predictions
        self.key, self.window = self.reference.key, self.reference.window
        name, source = next(iter(model.sources.items()))
        self.name = name
        self.temporal = _TemporalEncoder(source.encoder) if isinstance(source, TemporalSource) else None
        self.group = None if isinstance(source, TemporalSource) else (
            source.columns.numpy().copy(), DenseStack(source.mlp))  # type: ignore[union-attr]
        self._heads = _Heads(model.heads)
        self._base = base_terms(model)
        self._pooled: np.ndarray | None = None

    @classmethod
    def of(cls, model: EmbeddingModel) -> "NumpyModelRunner | None":
        """The NumPy runner of ``model``, or None when it has a part this class does not reproduce."""
        sources = list(model.sources.values())
        if len(sources) != 1 or model.fusion is not None or getattr(model, "symbol_embedding", None) is not None:
            return None
        source = sources[0]
        if isinstance(source, TemporalSource):
            ok = _TemporalEncoder.supported(source.encoder)
        else:
            ok = isinstance(source, GroupSource) and all(isinstance(m, (nn.Linear, nn.GELU)) for m in source.mlp) \
                and all(m.approximate == "none" for m in source.mlp if isinstance(m, nn.GELU))
        return cls(model.eval()) if ok and _Heads.supported(model.heads) else None

    def full(self, window: np.ndarray) -> np.ndarray:
        x = np.asarray(window, dtype=np.float64)
        if self.temporal is None:
            return self.partial(x[-1])
        embedding, self._pooled = self.temporal(x)
        return embedding

    def partial(self, row: np.ndarray) -> np.ndarray:
        x = np.asarray(row, dtype=np.float64)
        if self.temporal is None:
            columns, mlp = self.group  # type: ignore[misc]
            return mlp(x[columns])
        if self._pooled is None:
            raise RuntimeError("partial update before any full refresh: nothing cached to reuse")
        return self._pooled + self.temporal.latest(x)

    def state(self) -> object:
        return {} if self._pooled is None else {self.name: torch.from_numpy(self._pooled)[None]}

    def restore(self, state: object) -> None:
        pooled = state.get(self.name) if isinstance(state, dict) else None
        self._pooled = None if pooled is None else np.asarray(pooled, dtype=np.float64).reshape(-1)

    def heads(self, embedding: np.ndarray, row: np.ndarray | None = None) -> np.ndarray:
        return self._heads(embedding, base_outputs(self._base, row))

    def predict_direction(self, windows: np.ndarray) -> np.ndarray:
        return self.reference.predict_direction(windows)
