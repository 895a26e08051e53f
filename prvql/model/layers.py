"""Small building blocks shared by the stages: conv-BN-activation, attention with probed columns, FFN."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast disabled on ``device`` for a float32 region (a no-op on a device without autocast, such as the
    ``meta`` device FLOP counting runs on)."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def _probe_precision(x: Tensor, probe: Tensor | None) -> contextlib.AbstractContextManager:
    """SKG reads the probed probabilities (values near 1/Nk): with a probe, projections and attention run in float32
    whatever the autocast, so that training under bf16 sees the signal fp32 inference sees (a no-op without a probe
    or without autocast); the caller casts its inputs to float32 inside."""
    return contextlib.nullcontext() if probe is None else autocast_off(x.device)


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

    def fuse_batch_norm(self) -> None:
        """Fold the eval-mode BatchNorm into the conv (same function at inference; irreversible, not for training)."""
        if isinstance(self[1], nn.BatchNorm2d):
            self[0] = fuse_conv_bn_eval(self[0].eval(), self[1].eval())
            self[1] = nn.Identity()

    def output_channels(self, x: Tensor, start: int = 0, stop: int | None = None, padding: int = 1) -> Tensor:
        """Output channels ``start .. stop - 1`` only (all by default), ``[N, C_in, H, W]`` -> ``[N, C', H', W']``:
        the same numbers as ``self(x)[:, start:stop]`` for a fraction of the work; ``padding=0`` evaluates the conv
        only where its window lies inside ``x``. Eval mode (running BatchNorm statistics) or fused; not with
        GroupNorm, whose statistics mix channels and positions."""
        conv, norm, act = self
        if isinstance(norm, nn.GroupNorm) or (isinstance(norm, nn.BatchNorm2d) and norm.training):
            raise ValueError("output_channels needs a fused or eval-mode batch norm")
        bias = None if conv.bias is None else conv.bias[start:stop]
        y = F.conv2d(x, conv.weight[start:stop], bias, conv.stride, padding)
        if isinstance(norm, nn.BatchNorm2d):
            mean, var = norm.running_mean[start:stop], norm.running_var[start:stop]
            y = F.batch_norm(y, mean, var, norm.weight[start:stop], norm.bias[start:stop], False, 0.0, norm.eps)
        return act(y)


class ChannelReduction(nn.Sequential):
    """Backbone channels -> model width, applied once to query and frames together: 2 x ConvBNAct."""

    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__(ConvBNAct(in_channels, dim), ConvBNAct(dim, dim))


class MultiHeadAttention(nn.Module):
    """Multi-head attention with ``nn.MultiheadAttention``'s parameter layout, computed with SDPA.

    Besides the output it can return ``P @ probe`` averaged over heads, where P are the attention probabilities
    ``[Nq, Nk]`` and ``probe`` a fixed ``[Nk, K]`` matrix (e.g. one-hot columns of the keys whose probabilities
    are wanted), or ``[K]`` key indices (one-hot columns). The probe is appended to the values of the same fused
    SDPA call (queries and keys padded with zeros, explicit scale), so the ``[Nq, Nk]`` probability matrix is never
    materialised. Key indices without gradients on the CPU instead read ``P[:, key] = exp(s(q, k_key) - lse(q))``
    from the softmax normaliser lse that the fused CPU kernel returns: the same numbers without the padding (one
    dot product per query and key index).

    Attributes:
        normaliser_probe: use the normaliser for key-index probes when it applies (False: always pad; benchmarks
            and tests compare the two).

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
        self.normaliser_probe = True
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
            probe: ``[Nk, K]`` matrix, or ``[K]`` key indices (long); returns ``mean_heads(P) @ probe``.

        Returns:
            output ``[B, Nq, D]`` and the probed probabilities ``[B, Nq, K]`` (None without a probe).
        """
        with _probe_precision(x, probe):
            if probe is not None:
                x, memory = x.float(), None if memory is None else memory.float()
            q, k, v = self._project(x, memory)
            out, probed = self._attend(q, k, v, mask, probe)
        return self.out_proj(out.transpose(1, 2).flatten(2)), probed

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, probe: Tensor | None) -> tuple:
        """Fused SDPA of ``[..., h, Nq, d]`` queries on ``[..., h, Nk, d]`` keys/values; with a ``[Nk, K]`` probe
        (or ``[K]`` key indices) also ``mean_heads(P) @ probe`` ``[..., Nq, K]``. Returns (``[..., h, Nq, d]``,
        probed or None)."""
        dropout = self.dropout if self.training else 0.0
        if probe is None:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout), None
        if probe.dtype == torch.long:
            if self._normaliser_applies(q, k, v, dropout):
                return self._attend_normaliser(q, k, v, mask, probe)
            probe = F.one_hot(probe, k.shape[-2]).T  # [Nk, K]
        head_dim, extra = q.shape[-1], -(-probe.shape[1] // 8) * 8  # pad to a multiple of 8 for fused kernels
        columns = F.pad(probe.to(v.dtype), (0, extra - probe.shape[1])).expand(*v.shape[:-2], -1, -1)
        out = F.scaled_dot_product_attention(
            F.pad(q, (0, extra)),
            F.pad(k, (0, extra)),
            torch.cat([v, columns], dim=-1),
            attn_mask=mask,
            dropout_p=dropout,
            scale=head_dim**-0.5,
        )
        return out[..., :head_dim], out[..., head_dim : head_dim + probe.shape[1]].mean(dim=-3)

    def _normaliser_applies(self, q: Tensor, k: Tensor, v: Tensor, dropout: float) -> bool:
        """Whether the fused CPU kernel's softmax normaliser can give the probed columns: on the CPU, without
        dropout, and nothing to differentiate (the normaliser output carries no gradient)."""
        return (
            self.normaliser_probe
            and q.device.type == "cpu"
            and q.dim() == 4
            and dropout == 0.0
            and not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad))
            and hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu")
        )

    @staticmethod
    def _attend_normaliser(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, keys: Tensor) -> tuple:
        """:meth:`_attend` for ``[K]`` probed key indices from the fused CPU kernel's log-sum-exp ``[B, h, Nq]``:
        ``P[:, key] = exp(scale * q . k_key - lse)``, 0 where the mask forbids the key."""
        scale = q.shape[-1] ** -0.5
        additive = None if mask is None else torch.where(mask, 0.0, float("-inf")).to(q.dtype)
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, attn_mask=additive, scale=scale)
        scores = q @ k.index_select(-2, keys).transpose(-1, -2)  # [B, h, Nq, K]
        probed = torch.exp(scores * scale - lse[..., None])
        if mask is not None:
            probed = probed.masked_fill(~mask.index_select(-1, keys), 0.0)
        return out, probed.mean(dim=-3)

    def banded(
        self, x: Tensor, num_frames: int, window: int, band_mask: Tensor, probe: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Self-attention over ``T`` frames of ``n`` tokens where frame i sees only frames ``i-window .. i+window``.

        The same function as :meth:`forward` with the block-banded boolean mask, but each frame's queries are
        scored against its ``2*window + 1`` neighbouring frames only (``(2w+1)/T`` of the work). The B windows'
        frames are laid one after another with ``window`` zero frames at both ends only, so the band of frame i of
        window c is frames ``c*T + i .. c*T + i + 2w`` of that sequence: every band is a view of the projected keys
        and values (no copies). Band positions past a window's ends read the zero padding or a neighbouring
        window's frames, which ``band_mask`` hides (their keys and values, finite, get probability 0).

        Args:
            x: ``[B, T*n, D]``.
            num_frames: T.
            window: w.
            band_mask: boolean ``[T, 1, (2w+1)*n]``, False on the frames past the clip's ends.
            probe: ``[(2w+1)*n, K]`` columns over the band (band position ``j*n + m`` = token m of frame i-w+j), or
                ``[K]`` band positions (see :class:`MultiHeadAttention`).

        Returns:
            output ``[B, T*n, D]`` and the probed probabilities ``[B, T*n, K]`` (None without a probe).
        """
        b, length, d = x.shape
        t, n, h, span = num_frames, length // num_frames, self.num_heads, 2 * window + 1

        def bands(z: Tensor) -> Tensor:  # [(B*T + 2w)*n, D] -> [B*T, h, (2w+1)*n, D/h], overlapping views
            frames = z.unflatten(0, (-1, n)).unfold(0, span, 1)  # [B*T, n, D, 2w+1]
            return frames.permute(0, 3, 1, 2).flatten(1, 2).unflatten(-1, (h, -1)).transpose(1, 2)

        with _probe_precision(x, probe):
            if probe is not None:
                x = x.float()
            padded = F.pad(x.reshape(b * length, d), (0, 0, window * n, window * n))  # [(B*T + 2w)*n, D]
            q, k, v = F.linear(padded, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
            queries = q[window * n : window * n + b * length].view(b * t, n, h, -1).transpose(1, 2)
            out, probed = self._attend(queries, bands(k), bands(v), band_mask.repeat(b, 1, 1)[:, None], probe)
        out = self.out_proj(out.transpose(1, 2).reshape(b, length, d))
        return out, None if probed is None else probed.reshape(b, length, -1)

    def probabilities(self, x: Tensor, memory: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """The full head-averaged attention probabilities ``[B, Nq, Nk]`` in float32 (explicit, memory-hungry), also
        under autocast (SKG reads them)."""
        with autocast_off(x.device):
            q, k, _ = self._project(x.float(), None if memory is None else memory.float())
            scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
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
