"""A plain PyTorch ViT, written the way timm writes it, as a speed reference.

Pre-LN blocks, one fused qkv `nn.Linear`, `F.scaled_dot_product_attention`,
exact `F.gelu`, `nn.LayerNorm`, a `Conv2d` patch embedding and a [CLS] token
with learned positions: timm's `VisionTransformer` (timm itself is not
installed here). `from_trips_encoder` copies the weights of a
`TRIPSVisionEncoder` (Keras, torch backend) into it, so the two compute the
same function and their outputs can be compared. `tools/benchmark.py --task
torch` times the two side by side.
"""

import keras
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        batch, length, dim = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.num_heads, -1)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(query, key, value)
        return self.proj(x.transpose(1, 2).reshape(batch, length, dim))


class Mlp(nn.Module):
    def __init__(self, dim, hidden_dim):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_dim, eps):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """timm's ViT without the head; `forward` takes NCHW images and returns
    the normalised tokens `(B, 1 + N, D)`."""

    def __init__(
        self,
        image_size=224,
        patch_size=16,
        num_layers=12,
        num_heads=12,
        hidden_dim=768,
        mlp_dim=3072,
        eps=1e-6,
        channels=3,
    ):
        super().__init__()
        num_patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(channels, hidden_dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + num_patches, hidden_dim))
        self.blocks = nn.Sequential(
            *(Block(hidden_dim, num_heads, mlp_dim, eps) for _ in range(num_layers))
        )
        self.norm = nn.LayerNorm(hidden_dim, eps=eps)

    def forward(self, images):
        x = self.patch_embed(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embed
        return self.norm(self.blocks(x))


def _tensor(variable):
    return torch.as_tensor(np.array(keras.ops.convert_to_numpy(variable)))


def _copy_dense(linear, dense):
    """A Keras Dense's `(in, out)` kernel and bias into a Linear."""
    linear.weight.copy_(_tensor(dense.kernel).T)
    linear.bias.copy_(_tensor(dense.bias))


def _copy_norm(norm, layer):
    norm.weight.copy_(_tensor(layer.gamma))
    norm.bias.copy_(_tensor(layer.beta))


@torch.no_grad()
def from_trips_encoder(encoder):
    """A `VisionTransformer` holding the weights of a `TRIPSVisionEncoder`.

    The encoder must be a plain ViT (GELU, no `pre_norm`, patch bias, square
    images); its selection, if any, is not copied (the reference never
    selects).
    """
    if encoder.activation != "gelu" or encoder.pre_norm or not encoder.patch_bias:
        raise ValueError(
            "The reference ViT has GELU, no pre-norm and a patch bias. Received "
            f"activation={encoder.activation!r}, pre_norm={encoder.pre_norm}, "
            f"patch_bias={encoder.patch_bias}."
        )
    height, width, channels = encoder.image_shape
    if height != width:
        raise ValueError(f"The reference ViT has square images: {encoder.image_shape}")
    model = VisionTransformer(
        image_size=height,
        patch_size=encoder.patch_size,
        num_layers=encoder.num_layers,
        num_heads=encoder.num_heads,
        hidden_dim=encoder.hidden_dim,
        mlp_dim=encoder.mlp_dim,
        eps=encoder.layer_norm_epsilon,
        channels=channels,
    )
    embedding = encoder.patch_embedding
    # Keras' (patch, patch, in, out) kernel; torch's is (out, in, patch, patch).
    model.patch_embed.weight.copy_(
        _tensor(embedding.projection.kernel).permute(3, 2, 0, 1)
    )
    model.patch_embed.bias.copy_(_tensor(embedding.projection.bias))
    model.cls_token.copy_(_tensor(embedding.class_token).reshape(1, 1, -1))
    model.pos_embed.copy_(_tensor(embedding.position_embedding)[None])
    for block, ours in zip(model.blocks, encoder.blocks):
        _copy_norm(block.norm1, ours.attention_norm)
        _copy_dense(block.attn.qkv, ours.qkv_dense)  # the same [q | k | v] layout
        _copy_dense(block.attn.proj, ours.output_dense)
        _copy_norm(block.norm2, ours.mlp_norm)
        _copy_dense(block.mlp.fc1, ours.mlp_intermediate)
        _copy_dense(block.mlp.fc2, ours.mlp_output)
    _copy_norm(model.norm, encoder.output_norm)
    return model
