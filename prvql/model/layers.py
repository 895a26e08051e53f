"""Small building blocks shared by the stages: conv-BN-activation, attention with probed columns, FFN."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ConvBNAct(nn.Sequential):
    """conv3x3 (padding 1) -> BatchNorm (or GroupNorm with ``norm_groups`` groups) -> LeakyReLU (or ReLU)."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, leaky: bool = True, norm_groups: int = 0
    ) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
            nn.GroupNorm(norm_groups, out_channels) if norm_groups else nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(inplace=True) if leaky else nn.ReLU(inplace=True),
        )


class ChannelReduction(nn.Sequential):
    """Backbone channels -> model width, applied once to query and frames together: 2 x ConvBNAct."""

    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__(ConvBNAct(in_channels, dim), ConvBNAct(dim, dim))


class MultiHeadAttention(nn.Module):
    """Multi-head attention with ``nn.MultiheadAttention``'s parameter layout, computed with SDPA.

    Besides the output it can return ``P @ probe`` averaged over heads, where P are the attention probabilities
    ``[Nq, Nk]`` and ``probe`` a fixed ``[Nk, K]`` matrix (e.g. one-hot columns of the keys whose probabilities
    are wanted). The probe is appended to the values of the same fused SDPA call (queries and keys padded with
    zeros, explicit scale), so the ``[Nq, Nk]`` probability matrix is never materialised.

    Args:
        dim: model width.
        num_heads: attention heads (``dim`` divisible by it).
        dropout: dropout on the attention probabilities (training only).
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def _heads(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # [B, N, D] -> [B, h, N, d]

    def _project(self, x: Tensor, memory: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        if memory is None:
            q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        else:
            w_q, w_kv = self.in_proj_weight.split([x.shape[-1], 2 * x.shape[-1]])
            b_q, b_kv = self.in_proj_bias.split([x.shape[-1], 2 * x.shape[-1]])
            q = F.linear(x, w_q, b_q)
            k, v = F.linear(memory, w_kv, b_kv).chunk(2, dim=-1)
        return self._heads(q), self._heads(k), self._heads(v)

    def forward(
        self, x: Tensor, memory: Tensor | None = None, mask: Tensor | None = None, probe: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from ``x`` to ``memory`` (self-attention when None).

        Args:
            x: queries ``[B, Nq, D]``.
            memory: keys/values ``[B, Nk, D]`` or None.
            mask: boolean ``[Nq, Nk]``, True where attention is allowed.
            probe: ``[Nk, K]`` matrix; returns ``mean_heads(P) @ probe``.

        Returns:
            output ``[B, Nq, D]`` and the probed probabilities ``[B, Nq, K]`` (None without a probe).
        """
        dropout = self.dropout if self.training else 0.0
        if probe is None:
            q, k, v = self._project(x, memory)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
            return self.out_proj(out.transpose(1, 2).flatten(2)), None
        # SKG reads the probed probabilities (values near 1/Nk): projections and attention in float32 whatever the
        # autocast, so that training under bf16 sees the signal fp32 inference sees (a no-op without autocast)
        with torch.autocast(x.device.type, enabled=False):
            q, k, v = self._project(x.float(), None if memory is None else memory.float())
            head_dim, extra = q.shape[-1], -(-probe.shape[1] // 8) * 8  # pad to a multiple of 8 for fused kernels
            columns = F.pad(probe.float(), (0, extra - probe.shape[1])).expand(*v.shape[:2], -1, -1)
            out = F.scaled_dot_product_attention(
                F.pad(q, (0, extra)),
                F.pad(k, (0, extra)),
                torch.cat([v, columns], dim=-1),
                attn_mask=mask,
                dropout_p=dropout,
                scale=head_dim**-0.5,
            )
        probed = out[..., head_dim : head_dim + probe.shape[1]].mean(dim=1)
        return self.out_proj(out[..., :head_dim].transpose(1, 2).flatten(2)), probed

    def probabilities(self, x: Tensor, memory: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """The full head-averaged attention probabilities ``[B, Nq, Nk]`` in float32 (explicit, memory-hungry)."""
        q, k, _ = self._project(x, memory)
        scores = (q.float() @ k.float().transpose(-1, -2)) * q.shape[-1] ** -0.5
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return scores.softmax(dim=-1).mean(dim=1)


class FeedForward(nn.Module):
    """Post-norm FFN sub-layer: ``LN(x + Dropout(W2 GELU(W1 x)))``."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0, eps: float = 1e-5) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden_dim)
        self.linear2 = nn.Linear(hidden_dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        """``[..., D]`` -> ``[..., D]``."""
        return self.norm(x + self.dropout(self.linear2(F.gelu(self.linear1(x)))))
