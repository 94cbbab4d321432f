"""The networks of core/ (core/models/unet.cpp, core/models/mlp_denoiser.cpp, core/models/denoiser.cpp) in PyTorch.

Modules are registered under the C++ names and in the C++ order, so `state_dict()` keys are the
checkpoint's tensor names without their `model/` or `ema_<rate>/` prefix, with one exception:
the MLP's input layer "in" (a Python keyword, which TorchScript cannot serialise) is "in_"
here; cpp_name() and python_name() translate. bench/train_peer.py
trains these same classes. A learned-variance network returns 2C channels (prediction, then
the variance interpolation v), as the C++ one does.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def timestep_embedding(t, dim: int):
    """Sinusoidal embedding, cosines then sines, frequencies 10000^(-i/half) (core/models/denoiser.cpp)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float().unsqueeze(1) * freqs.unsqueeze(0)  # [B, half]
    emb = torch.cat([args.cos(), args.sin()], dim=1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros(t.shape[0], 1, device=t.device)], dim=1)
    return emb


def labels_or_null(y, batch: int, num_classes: int, device):
    """The labels, or the null label C for every sample when none are given (guidance)."""
    if y is None:
        return torch.full((batch,), num_classes, dtype=torch.long, device=device)
    return y.to(device=device, dtype=torch.long)


def cpp_name(key):
    """The C++ (checkpoint) name of a state_dict key."""
    return "in" + key[3:] if key.startswith("in_.") else key


def python_name(key):
    """The state_dict key of a C++ (checkpoint) tensor name."""
    return "in_" + key[2:] if key.startswith("in.") else key


def zero_init(module):
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()


class ResBlock(nn.Module):
    def __init__(self, cin, cout, emb_dim, dropout, groups):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        zero_init(self.conv2)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, emb):  # [B, C, H, W], [B, E]
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb_proj(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.skip(x) if self.skip is not None else x) + h


class AttentionBlock(nn.Module):
    def __init__(self, channels, num_heads, groups):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"attention: {channels} channels not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        zero_init(self.proj)

    def forward(self, x):
        B, C, H, W = x.shape
        d = C // self.num_heads
        qkv = self.qkv(self.norm(x)).reshape(B, 3, self.num_heads, d, H * W)
        q, k, v = (qkv.select(1, i).transpose(-1, -2) for i in range(3))  # [B, heads, HW, d]
        a = F.scaled_dot_product_attention(q, k, v)
        a = a.transpose(-1, -2).reshape(B, C, H, W)
        return x + self.proj(a)


class UNet(nn.Module):
    def __init__(self, in_channels, base, mult, num_res_blocks, attention_resolutions, image_size,
                 num_heads, groups, dropout, num_classes, learned_variance=False):
        super().__init__()
        ch, emb_dim = base, 4 * base
        self.base = base
        self.in_channels = in_channels
        self.num_classes = num_classes
        factors = [image_size // r for r in attention_resolutions]
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_embedding = nn.Embedding(num_classes + 1, emb_dim) if num_classes > 0 else None
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)

        # Stages are (kind, module, attention); modules are registered under the C++ names.
        self.down, self.up = [], []
        skip_channels, cur, ds = [ch], ch, 1
        for level, m in enumerate(mult):
            for _ in range(num_res_blocks):
                name = f"down{len(self.down)}"
                res = self._add(name + "_res", ResBlock(cur, m * ch, emb_dim, dropout, groups))
                attn = (self._add(name + "_attn", AttentionBlock(m * ch, num_heads, groups))
                        if ds in factors else None)
                self.down.append(("res", res, attn))
                cur = m * ch
                skip_channels.append(cur)
            if level + 1 < len(mult):
                conv = self._add(f"down{len(self.down)}_downsample", nn.Conv2d(cur, cur, 3, stride=2, padding=1))
                self.down.append(("resample", conv, None))
                skip_channels.append(cur)
                ds *= 2
        self.mid_res1 = ResBlock(cur, cur, emb_dim, dropout, groups)
        self.mid_attn = AttentionBlock(cur, num_heads, groups)
        self.mid_res2 = ResBlock(cur, cur, emb_dim, dropout, groups)
        for level in reversed(range(len(mult))):
            for _ in range(num_res_blocks + 1):
                skip = skip_channels.pop()
                name = f"up{len(self.up)}"
                out = mult[level] * ch
                res = self._add(name + "_res", ResBlock(cur + skip, out, emb_dim, dropout, groups))
                attn = (self._add(name + "_attn", AttentionBlock(out, num_heads, groups))
                        if ds in factors else None)
                self.up.append(("res", res, attn))
                cur = out
            if level > 0:
                conv = self._add(f"up{len(self.up)}_upsample", nn.Conv2d(cur, cur, 3, padding=1))
                self.up.append(("resample", conv, None))
                ds //= 2
        self.norm_out = nn.GroupNorm(groups, cur)
        self.conv_out = nn.Conv2d(cur, in_channels * (2 if learned_variance else 1), 3, padding=1)
        zero_init(self.conv_out)

    def _add(self, name, module):
        self.add_module(name, module)
        return module

    def forward(self, x, t, y=None):
        emb = self.time_mlp(timestep_embedding(t, self.base))  # [B, 4ch]
        if self.class_embedding is not None:
            emb = emb + self.class_embedding(labels_or_null(y, x.shape[0], self.num_classes, x.device))
        h = self.conv_in(x)
        skips = [h]
        for kind, module, attn in self.down:
            h = module(h) if kind == "resample" else module(h, emb)
            if attn is not None:
                h = attn(h)
            skips.append(h)
        h = self.mid_res2(self.mid_attn(self.mid_res1(h, emb)), emb)
        for kind, module, attn in self.up:
            if kind == "resample":
                # Upsample to the next skip's size, so 28 → 14 → 7 → 4 comes back exactly.
                h = module(F.interpolate(h, size=skips[-1].shape[-2:], mode="nearest"))
            else:
                h = module(torch.cat([h, skips.pop()], dim=1), emb)
                if attn is not None:
                    h = attn(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class MlpBlock(nn.Module):
    def __init__(self, hidden, emb_dim, dropout):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.emb_proj = nn.Linear(emb_dim, hidden)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, hidden)
        zero_init(self.fc2)

    def forward(self, h, emb):
        z = self.fc1(F.silu(self.norm(h))) + self.emb_proj(F.silu(emb))
        return h + self.fc2(self.dropout(F.silu(z)))


class MlpDenoiser(nn.Module):
    def __init__(self, data_dim, hidden, num_blocks, time_dim, dropout, num_classes, learned_variance=False):
        super().__init__()
        self.time_dim = time_dim
        self.num_classes = num_classes
        self.in_ = nn.Linear(data_dim, hidden)  # "in" in C++ (see cpp_name)
        self.time_fc1 = nn.Linear(time_dim, hidden)
        self.time_fc2 = nn.Linear(hidden, hidden)
        self.class_embedding = nn.Embedding(num_classes + 1, hidden) if num_classes > 0 else None
        self.blocks = []
        for i in range(num_blocks):
            block = MlpBlock(hidden, hidden, dropout)
            self.add_module(f"block{i}", block)
            self.blocks.append(block)
        self.norm_out = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, data_dim * (2 if learned_variance else 1))

    def forward(self, x, t, y=None):
        emb = self.time_fc2(F.silu(self.time_fc1(timestep_embedding(t, self.time_dim))))
        if self.class_embedding is not None:
            emb = emb + self.class_embedding(labels_or_null(y, x.shape[0], self.num_classes, x.device))
        h = self.in_(x)  # [B, hidden]
        for block in self.blocks:
            h = block(h, emb)
        return self.out(F.silu(self.norm_out(h)))
