"""One option-chain snapshot as a graph: options are nodes, tradable relations between them are typed edges.

Edge kinds (``EDGE_KINDS``, stored as ``edge_type`` and one-hot in ``edge_attr``), all undirected (both directions
stored) and within one right unless said otherwise:

0. ``same_expiry``: same expiry, adjacent strikes among that expiry's listed strikes.
1. ``calendar``: same strike, the next expiry that lists that strike (expiry order within the snapshot).
2. ``parity``: put-call parity pairs, call <-> put at the same strike and expiry.
3. ``spread``: verticals (same expiry, strikes two listed steps apart) and diagonals (adjacent expiries of the
   snapshot, adjacent strikes on the snapshot's union strike grid).

Edge weights after the one-hot columns (``EDGE_ATTR_NAMES``), each in [0, 1]:

* ``volume_sim`` = 1 - |v_i - v_j| / (v_i + v_j) (1 when both traded nothing);
* ``theta_sim`` = 1 - |theta_i - theta_j| / (|theta_i| + |theta_j|) on theta / spot (time-decay similarity);
* ``iv_sim`` = 1 - |iv_i - iv_j| / (iv_i + iv_j), implied-volatility co-movement proxied by the similarity of IV
  levels within the snapshot (0 where either IV is missing). Levels are used rather than correlations of IV
  changes over past snapshots because they are defined for the first snapshot and for newly listed strikes, and
  keep each graph a function of its own snapshot, hence causal by construction.

Construction is vectorized: consecutive rows of lexsorted keys give the adjacency kinds, a dense key table the
diagonals; no Python loop over options or pairs.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
import torch
from torch_geometric.data import Data

from embedtune.chains.tensorize import FEATURE_INDEX, OPTION_FEATURES, ChainTensors

EDGE_KINDS: tuple[str, ...] = ("same_expiry", "calendar", "parity", "spread")
EDGE_ATTR_NAMES: tuple[str, ...] = (*(f"kind_{k}" for k in EDGE_KINDS), "volume_sim", "theta_sim", "iv_sim")
EDGE_DIM = len(EDGE_ATTR_NAMES)


class OptionGraph(Data):
    """A ``Data`` whose ``validate()`` also checks the option-graph rules (typed, one-hot, undirected edges)."""

    def validate(self, raise_on_error: bool = True) -> bool:
        ok = super().validate(raise_on_error)
        problems: list[str] = []
        edge_index, edge_attr = self.edge_index, self.edge_attr
        edge_type = getattr(self, "edge_type", None)
        n_edges = 0 if edge_index is None else edge_index.size(1)
        if edge_attr is None or edge_attr.shape != (n_edges, EDGE_DIM):
            problems.append(f"edge_attr must be ({n_edges}, {EDGE_DIM}), got "
                            f"{None if edge_attr is None else tuple(edge_attr.shape)}")
        elif edge_type is None or edge_type.shape != (n_edges,):
            problems.append("edge_type must hold one kind per edge")
        elif n_edges:
            if int(edge_type.min()) < 0 or int(edge_type.max()) >= len(EDGE_KINDS):
                problems.append(f"edge_type outside 0..{len(EDGE_KINDS) - 1}")
            elif not torch.equal(edge_attr[:, : len(EDGE_KINDS)].argmax(dim=1), edge_type):
                problems.append("edge_attr kind one-hot disagrees with edge_type")
            weights = edge_attr[:, len(EDGE_KINDS):]
            if not bool(((weights >= 0) & (weights <= 1)).all()):
                problems.append("edge weights must lie in [0, 1]")
            n = int(self.num_nodes)
            src, dst, kind = edge_index[0].long(), edge_index[1].long(), edge_type.long()
            forward = torch.sort((src * n + dst) * len(EDGE_KINDS) + kind).values
            backward = torch.sort((dst * n + src) * len(EDGE_KINDS) + kind).values
            if not torch.equal(forward, backward):
                problems.append("edges are not undirected (some edge lacks its reverse of the same kind)")
            if bool((src == dst).any()):
                problems.append("self-loops are not option relations")
        if self.x is not None and not bool(torch.isfinite(self.x).all()):
            problems.append("node features must be finite")
        for problem in problems:
            if raise_on_error:
                raise ValueError(f"invalid {type(self).__name__}: {problem}")
            import warnings

            warnings.warn(f"invalid {type(self).__name__}: {problem}", stacklevel=2)
        return ok and not problems


def _consecutive(keys: list[np.ndarray], order_keys: list[np.ndarray], step: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``step`` apart in the lexsort by ``keys`` then ``order_keys`` that agree on every group key."""
    order = np.lexsort([*reversed(order_keys), *reversed(keys)])
    if order.size <= step:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    a, b = order[:-step], order[step:]
    same = np.logical_and.reduce([k[a] == k[b] for k in keys])
    return a[same], b[same]


def _similarity(a: np.ndarray, b: np.ndarray, both_zero: float) -> np.ndarray:
    total = np.abs(a) + np.abs(b)
    with np.errstate(divide="ignore", invalid="ignore"):
        sim = 1.0 - np.abs(a - b) / total
    return np.clip(np.where(total > 0, sim, both_zero), 0.0, 1.0)


def _kind_ids(required_kinds: Iterable[str | int]) -> list[int]:
    ids = []
    for kind in required_kinds:
        if isinstance(kind, str):
            if kind not in EDGE_KINDS:
                raise ValueError(f"unknown edge kind {kind!r}; known: {EDGE_KINDS}")
            ids.append(EDGE_KINDS.index(kind))
        elif 0 <= int(kind) < len(EDGE_KINDS):
            ids.append(int(kind))
        else:
            raise ValueError(f"edge kind id {kind} outside 0..{len(EDGE_KINDS) - 1}")
    return ids


def build_option_graph(
    snapshot: pd.DataFrame, features: np.ndarray | torch.Tensor, required_kinds: Iterable[str | int] = (),
    chain_row: np.ndarray | None = None,
) -> OptionGraph:
    """Graph of one snapshot; node i is ``snapshot.iloc[i]`` with features ``features[i]``.

    ``features`` must start with ``OPTION_FEATURES`` (as from ``per_option_features`` or ``ChainTensors``): the
    theta and IV weights read those columns. ``required_kinds`` (names or ids) raise a ``ValueError`` naming the
    kind when it yields no edges, e.g. a single-expiry chain has no ``calendar`` edges.
    """
    n = len(snapshot)
    if n == 0:
        raise ValueError("snapshot has no rows: an option graph needs at least one option")
    x = torch.as_tensor(np.asarray(features, dtype=np.float32) if not isinstance(features, torch.Tensor)
                        else features, dtype=torch.float32)
    if x.dim() != 2 or x.shape[0] != n or x.shape[1] < len(OPTION_FEATURES):
        raise ValueError(f"features must be (n_options={n}, >= {len(OPTION_FEATURES)}), got {tuple(x.shape)}")
    missing = [c for c in ("expiry", "strike", "right") if c not in snapshot.columns]
    if missing:
        raise ValueError(f"snapshot lacks columns {missing}")
    wanted = _kind_ids(required_kinds)

    right = snapshot["right"].astype(str).str.upper().to_numpy()
    if not np.isin(right, ["C", "P"]).all():
        raise ValueError("right must be 'C' or 'P'")
    put = (right == "P").astype(np.int64)
    if pd.to_datetime(snapshot["expiry"]).isna().any():
        raise ValueError("snapshot has missing expiries")
    expiry = pd.factorize(pd.DatetimeIndex(pd.to_datetime(snapshot["expiry"])).as_unit("ns").asi8,
                          sort=True)[0].astype(np.int64)
    strike_values = pd.to_numeric(snapshot["strike"], errors="coerce").to_numpy(dtype=float)
    if not np.isfinite(strike_values).all():
        raise ValueError("snapshot has missing strikes")
    strike = pd.factorize(strike_values, sort=True)[0].astype(np.int64)
    n_expiry, n_strike = int(expiry.max()) + 1, int(strike.max()) + 1
    key = (expiry * n_strike + strike) * 2 + put
    if np.unique(key).size != n:
        raise ValueError("snapshot has duplicate (expiry, strike, right) rows")

    pairs: list[tuple[np.ndarray, np.ndarray]] = [
        _consecutive([expiry, put], [strike], 1),   # same expiry, adjacent strikes
        _consecutive([put, strike], [expiry], 1),   # calendar: same strike, next listed expiry
        _consecutive([expiry, strike], [put], 1),   # parity: call <-> put
    ]
    vertical = _consecutive([expiry, put], [strike], 2)
    table = np.full(n_expiry * n_strike * 2, -1, dtype=np.int64)
    table[key] = np.arange(n)
    diagonal_src, diagonal_dst = [], []
    for offset in (-1, 1):  # two fixed directions, each vectorized over all options
        target_strike = strike + offset
        ok = (expiry + 1 < n_expiry) & (target_strike >= 0) & (target_strike < n_strike)
        found = np.full(n, -1, dtype=np.int64)
        found[ok] = table[((expiry[ok] + 1) * n_strike + target_strike[ok]) * 2 + put[ok]]
        hit = found >= 0
        diagonal_src.append(np.flatnonzero(hit))
        diagonal_dst.append(found[hit])
    pairs.append((np.concatenate([vertical[0], *diagonal_src]), np.concatenate([vertical[1], *diagonal_dst])))

    src = np.concatenate([np.concatenate([a, b]) for a, b in pairs]).astype(np.int64)
    dst = np.concatenate([np.concatenate([b, a]) for a, b in pairs]).astype(np.int64)
    kind = np.concatenate([np.full(2 * len(a), k, dtype=np.int64) for k, (a, _) in enumerate(pairs)])
    counts = np.bincount(kind, minlength=len(EDGE_KINDS))
    for k in wanted:
        if counts[k] == 0:
            raise ValueError(f"edge kind '{EDGE_KINDS[k]}' ({k}) yielded no edges for this snapshot "
                             f"({n} options, {n_expiry} expiries, {n_strike} strikes)")

    volume = pd.to_numeric(snapshot["volume"], errors="coerce").to_numpy(dtype=float) \
        if "volume" in snapshot.columns else np.zeros(n)
    volume = np.where(np.isfinite(volume) & (volume > 0), volume, 0.0)
    feats = x.detach().cpu().numpy()
    theta = feats[:, FEATURE_INDEX["theta_spot"]].astype(float)
    iv = feats[:, FEATURE_INDEX["iv"]].astype(float)
    attr = np.zeros((src.size, EDGE_DIM), dtype=np.float32)
    attr[np.arange(src.size), kind] = 1.0
    attr[:, len(EDGE_KINDS)] = _similarity(volume[src], volume[dst], 1.0)
    attr[:, len(EDGE_KINDS) + 1] = _similarity(theta[src], theta[dst], 1.0)
    iv_ok = (iv[src] > 0) & (iv[dst] > 0)
    attr[:, len(EDGE_KINDS) + 2] = np.where(iv_ok, _similarity(iv[src], iv[dst], 0.0), 0.0)

    graph = OptionGraph(
        x=x, edge_index=torch.from_numpy(np.stack([src, dst])), edge_attr=torch.from_numpy(attr),
        edge_type=torch.from_numpy(kind), num_nodes=n,
    )
    if chain_row is not None:
        graph.chain_row = torch.as_tensor(np.asarray(chain_row, dtype=np.int64))
    return graph


def build_graphs(
    chains: pd.DataFrame, tensors: ChainTensors, required_kinds: Iterable[str | int] = (),
) -> list[OptionGraph]:
    """One graph per snapshot of ``tensors`` (built from this same ``chains`` frame), nodes in slot order.

    Node features are the tensorized features, so the graph and the transformer see identical inputs; a snapshot
    with no live option raises (there is no graph to encode).
    """
    if len(chains) == 0:
        raise ValueError("chains has no rows: an option chain needs at least one contract")
    if tensors.row.size and int(tensors.row.max()) >= len(chains):
        raise ValueError("tensors were built from a different (longer) chains frame")
    kinds = list(required_kinds)
    graphs = []
    for s in range(tensors.n_snapshots):
        real = tensors.mask[s]
        rows = tensors.row[s, real]
        if rows.size == 0:
            raise ValueError(f"snapshot {tensors.snapshot_times[s]} has no live options")
        graph = build_option_graph(chains.iloc[rows], tensors.features[s, real], kinds, chain_row=rows)
        graph.snapshot = s
        graphs.append(graph)
    return graphs


def edge_counts(data: Data) -> dict[str, int]:
    """Directed edge count per kind (each undirected relation counts twice, once per direction)."""
    counts = torch.bincount(data.edge_type.long(), minlength=len(EDGE_KINDS)).tolist()
    return dict(zip(EDGE_KINDS, (int(c) for c in counts), strict=True))
