"""Two tiny `TransferModel`s of other modalities, and synthetic data made here.

An image CNN (channel-first feature maps, BatchNorm) and a text transformer (token embeddings,
padding masks passed through blocks). Neither is known to gridtune.core: the strategies only
see `encoder.blocks`, `head`, `embed`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, h: Tensor) -> Tensor:
        return torch.relu(self.bn(self.conv(h)))


class ConvEncoder(nn.Module):
    def __init__(self, channels: tuple[int, ...] = (1, 8, 16)) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ConvBlock(a, b) for a, b in zip(channels, channels[1:], strict=False))

    def forward(self, x: Tensor) -> Tensor:
        for b in self.blocks:
            x = b(x)
        return x


class TinyCNN(nn.Module):
    """Images (B, 1, 8, 8) -> pooled (B, 16) -> logits."""

    def __init__(self, n_out: int = 2) -> None:
        super().__init__()
        self.encoder = ConvEncoder()
        self.embed_dim = 16
        self.head = nn.Linear(16, n_out)

    def embed(self, batch) -> Tensor:
        return self.encoder(batch[0]).mean(dim=(2, 3))  # (B, 16)

    def forward(self, batch) -> Tensor:
        out = self.head(self.embed(batch))
        return out.squeeze(-1) if out.shape[-1] == 1 else out


class TokenBlock(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(d, nhead=2, dim_feedforward=2 * d, dropout=0.0,
                                                batch_first=True)

    def forward(self, h: Tensor, pad_mask: Tensor) -> Tensor:
        return self.layer(h, src_key_padding_mask=pad_mask)


class TextEncoder(nn.Module):
    def __init__(self, vocab: int = 20, d: int = 16, n_blocks: int = 2) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d, padding_idx=0)
        self.blocks = nn.ModuleList(TokenBlock(d) for _ in range(n_blocks))

    def forward(self, tokens: Tensor) -> Tensor:
        pad = tokens == 0
        h = self.tok(tokens)  # (B, T, D)
        for b in self.blocks:
            h = b(h, pad)
        keep = (~pad).unsqueeze(-1).float()
        return (h * keep).sum(1) / keep.sum(1).clamp(min=1)  # (B, D)


class TinyTransformer(nn.Module):
    """Token ids (B, T), 0 = padding -> mean-pooled (B, 16) -> logits."""

    def __init__(self, n_out: int = 2) -> None:
        super().__init__()
        self.encoder = TextEncoder()
        self.embed_dim = 16
        self.head = nn.Linear(16, n_out)

    def embed(self, batch) -> Tensor:
        return self.encoder(batch[0])

    def forward(self, batch) -> Tensor:
        out = self.head(self.embed(batch))
        return out.squeeze(-1) if out.shape[-1] == 1 else out


def image_data(n: int, seed: int, shift: float = 0.0) -> list[tuple[Tensor, Tensor]]:
    """Label 1 when the image holds a vertical 3-pixel bar, 0 for a horizontal one, anywhere in
    an 8x8 noisy image; `shift` adds a brightness offset (a domain shift that keeps the rule)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = 0.3 * torch.randn(n, 1, 8, 8, generator=g) + shift
    r = torch.randint(0, 6, (n,), generator=g)
    c = torch.randint(0, 6, (n,), generator=g)
    for k in range(3):
        rows = torch.where(y.bool(), r + k, r)
        cols = torch.where(y.bool(), c, c + k)
        x[torch.arange(n), 0, rows, cols] += 2.0
    return list(zip(x, y, strict=True))


def text_data(n: int, seed: int, length: int = 8) -> list[tuple[Tensor, Tensor]]:
    """Label 1 when token 5 occurs in the sequence; random padding at the end."""
    g = torch.Generator().manual_seed(seed)
    tok = torch.randint(6, 20, (n, length), generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    pos = torch.randint(0, length // 2, (n,), generator=g)
    tok[y.bool(), pos[y.bool()]] = 5
    lens = torch.randint(length // 2 + 1, length + 1, (n,), generator=g)
    tok[torch.arange(length).expand(n, -1) >= lens.unsqueeze(1)] = 0
    return list(zip(tok, y, strict=True))


class MLPBlock(nn.Module):
    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.lin = nn.Linear(d_in, d_out)

    def forward(self, h: Tensor) -> Tensor:
        return torch.relu(self.lin(h))


class MLPEncoder(nn.Module):
    def __init__(self, dims: tuple[int, ...]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MLPBlock(a, b) for a, b in zip(dims, dims[1:], strict=False))

    def forward(self, x: Tensor) -> Tensor:
        for b in self.blocks:
            x = b(x)
        return x


class TinyMLP(nn.Module):
    """Vectors (B, F) -> (B, D) -> logits; for tabular toy tasks."""

    def __init__(self, n_in: int = 2, dims: tuple[int, ...] = (16, 8), n_out: int = 2) -> None:
        super().__init__()
        self.encoder = MLPEncoder((n_in, *dims))
        self.embed_dim = dims[-1]
        self.head = nn.Linear(dims[-1], n_out)

    def embed(self, batch) -> Tensor:
        return self.encoder(batch[0])

    def forward(self, batch) -> Tensor:
        return self.head(self.embed(batch))


def shifted_data(n: int, seed: int, shift: float) -> list[tuple[Tensor, Tensor]]:
    """x in R^2, label x0 > 0; the target domain moves x1 by `shift` (irrelevant to the label)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g)
    x[:, 1] += shift
    y = (x[:, 0] > 0).long()
    return list(zip(x, y, strict=True))
