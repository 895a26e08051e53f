"""Masked spatio-temporal self-attention, paper Eq. (3), with the learnable positional embedding E^pos.

All ``T*h*w`` tokens of a clip form one sequence; a token of frame i may attend only to tokens of frames
i-u .. i+u (clipped at the clip ends). The boolean mask is built once as a buffer.

For SKG the last layer also reports T'_k: for every token of frame i, its (head-averaged) attention probability
to the centre token of frame i. It is read off the fused attention call through a ``[T*h*w, P]`` probe
(P = min(2u+1, T)): the centre token of frame j is a one-hot column in channel ``j mod P``. Within a window of at
most P consecutive frames those channels are distinct, so channel ``i mod P`` of a frame-i token is exactly its
attention to frame i's centre. ``source="received"`` instead returns, for every token of frame i, the mean
attention it receives from the tokens of frame i (explicit probabilities of the last layer).

When ``2u+1 < T`` the attention is computed banded (:meth:`MultiHeadAttention.banded`): each frame's queries are
scored against its own ``2u+1`` frames only instead of masking a ``[T*h*w, T*h*w]`` score matrix, the same
function at ``(2u+1)/T`` of the cost; T'_k is then one probed key, the centre of the band's middle frame.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from prvql.model.layers import FeedForward, MultiHeadAttention


def temporal_mask(num_frames: int, tokens_per_frame: int, window: int) -> Tensor:
    """Boolean ``[T*n, T*n]``: True where |frame(query) - frame(key)| <= window."""
    frame = torch.arange(num_frames).repeat_interleave(tokens_per_frame)
    return (frame[:, None] - frame[None, :]).abs() <= window


class TemporalEncoderLayer(nn.Module):
    """Post-LN encoder layer (``nn.TransformerEncoderLayer`` order): masked self-attention, then GELU FFN."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(dim, num_heads, dropout)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.ffn = FeedForward(dim, ffn_dim, dropout)

    def forward(
        self, x: Tensor, mask: Tensor, probe: Tensor | None = None, band: tuple[int, int, Tensor] | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """``[B, N, D]`` -> ``[B, N, D]`` and the probed probabilities ``[B, N, K]`` (with a probe).

        ``band = (T, u, band_mask)`` computes the same masked attention banded (``probe`` then over the band)."""
        if band is None:
            attended, probed = self.self_attn(x, mask=mask, probe=probe)
        else:
            attended, probed = self.self_attn.banded(x, *band, probe=probe)
        return self.ffn(self.norm(x + self.dropout(attended))), probed


class MaskedSpatioTemporalAttention(nn.Module):
    """E^pos (zeros-initialised) + ``num_layers`` masked encoder layers over a clip's tokens (Eq. 3).

    Args:
        dim: model width.
        num_frames: T (the positional embedding is tied to it).
        height: token rows h per frame.
        width: token columns w per frame.
        num_layers: encoder layers.
        num_heads: attention heads.
        ffn_dim: FFN hidden width.
        window: u, frames visible on each side.
        dropout: dropout.
        source: what SKG reads from the last layer: ``"center"`` (attention to the frame's centre token,
            released code) or ``"received"`` (attention received from the same frame).
    """

    def __init__(
        self,
        *,
        dim: int,
        num_frames: int,
        height: int,
        width: int,
        num_layers: int,
        num_heads: int,
        ffn_dim: int,
        window: int,
        dropout: float = 0.0,
        source: str = "center",
    ) -> None:
        super().__init__()
        if source not in ("center", "received"):
            raise ValueError(f"unknown temporal attention source '{source}'")
        self.num_frames, self.height, self.width, self.source = num_frames, height, width, source
        tokens = height * width
        self.pos_embed = nn.Parameter(torch.zeros(1, num_frames * tokens, dim))
        self.layers = nn.ModuleList(TemporalEncoderLayer(dim, num_heads, ffn_dim, dropout) for _ in range(num_layers))
        self.register_buffer("mask", temporal_mask(num_frames, tokens, window), persistent=False)
        channels = min(2 * window + 1, num_frames)
        centre = (height // 2) * width + width // 2
        probe = torch.zeros(num_frames * tokens, channels)
        frames = torch.arange(num_frames)
        probe[frames * tokens + centre, frames % channels] = 1.0
        self.register_buffer("probe", probe, persistent=False)
        self.register_buffer("probe_channel", (frames % channels).repeat_interleave(tokens), persistent=False)
        self.window = window
        self.banded = 2 * window + 1 < num_frames  # set False to use the full masked attention (benchmarks)
        span = torch.arange(-window, window + 1).repeat_interleave(tokens)  # frame offset of each band position
        valid = (frames[:, None] + span[None, :] >= 0) & (frames[:, None] + span[None, :] < num_frames)
        self.register_buffer("band_mask", valid[:, None], persistent=False)  # [T, 1, (2u+1)*h*w]
        # band position of the centre token of the band's middle frame (the frame itself), as a key index
        self.register_buffer("band_probe", torch.tensor([window * tokens + centre]), persistent=False)

    def forward(self, x: Tensor, return_attention: bool = False) -> tuple[Tensor, Tensor | None]:
        """Contextualise a clip's tokens across space and nearby frames.

        Args:
            x: ``[B, T, D, h, w]``.
            return_attention: also return the last layer's T'_k.

        Returns:
            H_k ``[B, T, D, h, w]`` and T'_k ``[B, T, h, w]`` (None unless requested).
        """
        b, t, d, h, w = x.shape
        tokens = x.permute(0, 1, 3, 4, 2).reshape(b, t * h * w, d) + self.pos_embed
        attention = None
        band = (t, self.window, self.band_mask) if self.banded else None
        for index, layer in enumerate(self.layers):
            last = index == len(self.layers) - 1
            if return_attention and last and self.source == "received":
                probs = layer.self_attn.probabilities(tokens, mask=self.mask).view(b, t, h * w, t, h * w)
                attention = torch.diagonal(probs, dim1=1, dim2=3).mean(dim=1).transpose(1, 2)  # [B, T, hw]
            probe = None
            if return_attention and last and self.source == "center":
                probe = self.band_probe if self.banded else self.probe
            tokens, probed = layer(tokens, self.mask, probe, band)
            if probed is not None and self.banded:
                attention = probed.view(b, t, h * w)
            elif probed is not None:
                channel = self.probe_channel.view(1, -1, 1).expand(b, -1, 1)
                attention = probed.gather(2, channel).view(b, t, h * w)
        out = tokens.view(b, t, h, w, d).permute(0, 1, 4, 2, 3)
        return out, None if attention is None else attention.view(b, t, h, w)
