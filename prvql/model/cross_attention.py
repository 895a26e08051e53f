"""Cross-attention block (CAB), paper Eq. (1): video tokens attend to query-crop tokens.

Post-LN: ``x <- LN(x + MHA(x, q, q))``, then ``x <- LN(x + W2 GELU(W1 x))``. With ``clip_self_attention`` a
per-frame self-attention sub-layer comes first, which is VQLoC's ``nn.TransformerDecoderLayer`` order
(self-attention -> cross-attention -> FFN). The same class, with BERT settings, is QFR's CAB (Eq. 13).
"""

from __future__ import annotations

from torch import Tensor, nn

from prvql.model.layers import FeedForward, MultiHeadAttention


class CrossAttentionBlock(nn.Module):
    """CAB: ``T`` groups of ``N`` tokens each attend to the same ``M`` memory tokens.

    All frames of a clip attend to one query, so the frames are folded into the sequence axis
    (``[B, T*N, D]`` against ``[B, M, D]``): identical to repeating the query per frame, without the copies.

    Args:
        dim: model width.
        num_heads: attention heads.
        ffn_dim: FFN hidden width.
        dropout: dropout on attention probabilities and after each sub-layer.
        clip_self_attention: add VQLoC's per-frame self-attention sub-layer first.
        eps: LayerNorm epsilon (1e-5; the BERT layer of QFR uses 1e-12).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_dim: int,
        dropout: float = 0.0,
        clip_self_attention: bool = False,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(dim, num_heads, dropout) if clip_self_attention else None
        self.self_norm = nn.LayerNorm(dim, eps=eps) if clip_self_attention else None
        self.cross_attn = MultiHeadAttention(dim, num_heads, dropout)
        self.cross_norm = nn.LayerNorm(dim, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.ffn = FeedForward(dim, ffn_dim, dropout, eps)

    def forward(self, x: Tensor, memory: Tensor, probe: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Fuse memory (query-crop) tokens into video tokens.

        Args:
            x: video tokens ``[B, T, N, D]``.
            memory: query tokens ``[B, M, D]``.
            probe: ``[M, K]`` columns of the cross-attention probabilities to return, or ``[K]`` key indices (see
                MultiHeadAttention).

        Returns:
            ``[B, T, N, D]`` and, with a probe, the head-averaged probed probabilities ``[B, T, N, K]``.
        """
        b, t, n, d = x.shape
        if self.self_attn is not None:
            frames = x.reshape(b * t, n, d)
            frames = self.self_norm(frames + self.dropout(self.self_attn(frames)[0]))
            x = frames.view(b, t, n, d)
        tokens = x.reshape(b, t * n, d)
        attended, probed = self.cross_attn(tokens, memory, probe=probe)
        tokens = self.ffn(self.cross_norm(tokens + self.dropout(attended)))
        return tokens.view(b, t, n, d), None if probed is None else probed.view(b, t, n, -1)
