"""Graph encoder over option graphs (``embedtune.chains.graph``): typed, weighted relations between options.

GATv2 attention reads the edge attributes (kind one-hot and similarity weights) inside its scores, so a parity
partner and a calendar neighbour are weighted differently. Layers are pre-norm residual blocks; a gated attention
pooling (``AttentionalAggregation``) turns the nodes into one embedding per graph. Every operation is per node or
a sum/softmax over neighbours, so the output does not depend on how nodes are numbered.
"""
from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn import GATv2Conv
from torch_geometric.nn.aggr import AttentionalAggregation

from embedtune.chains.graph import EDGE_DIM


class OptionGraphBlock(nn.Module):
    """h + Dropout(GELU(GATv2(LayerNorm(h)))): attention over neighbours that uses the edge attributes."""

    def __init__(self, hidden: int, heads: int, edge_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        # Self-loops get the mean of a node's incoming edge attributes, so a node also attends to itself.
        self.conv = GATv2Conv(hidden, hidden // heads, heads=heads, edge_dim=edge_dim, add_self_loops=True,
                              fill_value="mean", dropout=dropout)
        self.act = nn.GELU()
        self.dropout = nn.Dropout(dropout)

    def reset_parameters(self) -> None:
        self.norm.reset_parameters()
        self.conv.reset_parameters()

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
        return x + self.dropout(self.act(self.conv(self.norm(x), edge_index, edge_attr)))


class OptionGraphEncoder(nn.Module):
    """Node features of a batch of option graphs -> (num_graphs, out_dim) graph embeddings."""

    def __init__(
        self, in_dim: int = 50, hidden: int = 128, out_dim: int = 256, n_layers: int = 3, heads: int = 4,
        edge_dim: int = EDGE_DIM, dropout: float = 0.0,
    ) -> None:
        super().__init__()
        for name, value in (("in_dim", in_dim), ("hidden", hidden), ("out_dim", out_dim), ("n_layers", n_layers),
                            ("heads", heads), ("edge_dim", edge_dim)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if hidden % heads:
            raise ValueError(f"heads={heads} must divide hidden={hidden}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_dim, self.hidden, self.out_dim, self.edge_dim = in_dim, hidden, out_dim, edge_dim
        self.input = nn.Linear(in_dim, hidden)
        self.layers = nn.ModuleList(OptionGraphBlock(hidden, heads, edge_dim, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(hidden)
        # No bias on the gate's last layer: the softmax over a graph's nodes ignores a constant shift, so that bias
        # would never receive a gradient.
        self.pool = AttentionalAggregation(
            gate_nn=nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 1, bias=False)),
            nn=nn.Sequential(nn.Linear(hidden, hidden), nn.GELU()),
        )
        self.project = nn.Linear(hidden, out_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.input.reset_parameters()
        for layer in self.layers:
            layer.reset_parameters()
        self.norm.reset_parameters()
        self.pool.reset_parameters()
        self.project.reset_parameters()

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor,
                batch: torch.Tensor | None = None, num_graphs: int | None = None) -> torch.Tensor:
        """``batch`` maps nodes to graphs (``Batch.batch``; None: one graph). Passing ``num_graphs`` (e.g.
        ``Batch.num_graphs``) saves a device sync on GPU."""
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"x must be (num_nodes, {self.in_dim}), got {tuple(x.shape)}")
        if edge_attr.dim() != 2 or edge_attr.shape != (edge_index.shape[1], self.edge_dim):
            raise ValueError(f"edge_attr must be (num_edges={edge_index.shape[1]}, {self.edge_dim}), "
                             f"got {tuple(edge_attr.shape)}")
        if batch is None:
            batch = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        h = self.input(x)
        for layer in self.layers:
            h = layer(h, edge_index, edge_attr)
        if num_graphs is None:
            num_graphs = int(batch.max()) + 1 if batch.numel() else 0
        return self.project(self.pool(self.norm(h), batch, dim_size=num_graphs))
