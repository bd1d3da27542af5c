"""The book's GPTModel ("Build a Large Language Model (From Scratch)", chapter 4), written from its
published architecture: the reference that gptlab's reading of the book's `.pth` files is checked against."""

from __future__ import annotations

import torch
from torch import nn


class BookLayerNorm(nn.Module):
    def __init__(self, emb_dim):
        super().__init__()
        self.eps = 1e-5
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x):
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        return self.scale * (x - mean) / torch.sqrt(var + self.eps) + self.shift


class BookGELU(nn.Module):
    def forward(self, x):
        return 0.5 * x * (1 + torch.tanh(torch.sqrt(torch.tensor(2.0 / torch.pi)) * (x + 0.044715 * torch.pow(x, 3))))


class BookMultiHeadAttention(nn.Module):
    def __init__(self, d_in, d_out, context_length, num_heads, qkv_bias):
        super().__init__()
        self.d_out, self.num_heads, self.head_dim = d_out, num_heads, d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))

    def forward(self, x):
        b, num_tokens, _ = x.shape
        shape = (b, num_tokens, self.num_heads, self.head_dim)
        queries = self.W_query(x).view(shape).transpose(1, 2)
        keys = self.W_key(x).view(shape).transpose(1, 2)
        values = self.W_value(x).view(shape).transpose(1, 2)
        scores = (queries @ keys.transpose(2, 3)).masked_fill(self.mask.bool()[:num_tokens, :num_tokens], -torch.inf)
        weights = torch.softmax(scores / keys.shape[-1] ** 0.5, dim=-1)
        context = (weights @ values).transpose(1, 2).contiguous().view(b, num_tokens, self.d_out)
        return self.out_proj(context)


class BookTransformerBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        emb = cfg["emb_dim"]
        self.att = BookMultiHeadAttention(emb, emb, cfg["context_length"], cfg["n_heads"], cfg["qkv_bias"])
        self.ff = nn.Module()
        self.ff.layers = nn.Sequential(nn.Linear(emb, 4 * emb), BookGELU(), nn.Linear(4 * emb, emb))
        self.norm1, self.norm2 = BookLayerNorm(emb), BookLayerNorm(emb)

    def forward(self, x):
        x = x + self.att(self.norm1(x))
        return x + self.ff.layers(self.norm2(x))


class BookGPTModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.tok_emb = nn.Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.pos_emb = nn.Embedding(cfg["context_length"], cfg["emb_dim"])
        self.trf_blocks = nn.Sequential(*[BookTransformerBlock(cfg) for _ in range(cfg["n_layers"])])
        self.final_norm = BookLayerNorm(cfg["emb_dim"])
        self.out_head = nn.Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)

    def forward(self, in_idx):
        x = self.tok_emb(in_idx) + self.pos_emb(torch.arange(in_idx.shape[1]))
        return self.out_head(self.final_norm(self.trf_blocks(x)))


def book_model(seed: int = 0, classes: int | None = None, **overrides) -> BookGPTModel:
    """A seeded GPTModel (small unless `overrides` change its config); `classes` swaps in chapter 6's class head."""
    torch.manual_seed(seed)
    cfg = {"vocab_size": 64, "context_length": 16, "emb_dim": 16, "n_heads": 4, "n_layers": 2, "qkv_bias": True,
           **overrides}
    model = BookGPTModel(cfg)
    if classes:  # chapter 6: model.out_head = torch.nn.Linear(in_features=emb_dim, out_features=num_classes)
        model.out_head = nn.Linear(cfg["emb_dim"], classes)
    for p in model.parameters():  # norms and biases away from the init's ones and zeros, so each one matters
        if p.dim() == 1:
            p.data.add_(torch.randn_like(p) * 0.1)
    return model.eval()


@torch.no_grad()
def book_greedy(model: BookGPTModel, ids: list[int], max_new_tokens: int, context_length: int) -> list[int]:
    """The tokens the book's `generate_text_simple` appends to `ids`: the argmax of the last position."""
    out = list(ids)
    for _ in range(max_new_tokens):
        logits = model(torch.tensor([out[-context_length:]]))
        out.append(int(logits[0, -1].argmax()))
    return out[len(ids):]

