"""medtune's own Vision Transformer: the default backbone, grayscale in, trainable from scratch.

A plain pre-norm ViT (Dosovitskiy et al. 2021) with the layout, parameter names and init of
timm's ``vision_transformer.py``, so its weights load into timm's ViT and back: a patch
embedding convolution, a class token, a learned positional embedding, blocks of
``scaled_dot_product_attention`` (fused kernels on GPU) and a GELU MLP, and a final norm.

Presets (grayscale, 16 px patches; every key can be overridden in the config):

======  ===  =====  =====  ======  ======  ================================================
preset  dim  depth  heads  size    params  meant for
======  ===  =====  =====  ======  ======  ================================================
tiny    192  6      3      128 px  2.7 M   from scratch on a laptop CPU: 64 tokens an image;
                                           about 70 images/s of training on 2 CPU cores
                                           (batch 32, AdamW), as fast as timm's own ViT
small   384  12     6      224 px  21 M    one GPU; the shape of ViT-S/16
base    768  12     12     224 px  85 M    GPUs; the shape of ViT-B/16, the benchmark model
======  ===  =====  =====  ======  ======  ================================================

A checkpoint trained at one image size loads into a model built for another: the positional
embedding is resampled (bicubic) on load, the usual way to fine-tune at a higher resolution.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from medtune.errors import MedtuneError
from medtune.models.contract import Encoder, Features, InputContract
from medtune.models.registry import register_backbone
from medtune.models.weights import load_weights

# Pixels in [0, 1]; a preprocessed radiograph spans most of that range, so centring at 0.5 and
# scaling by 0.25 puts the inputs near unit variance without per-dataset statistics.
GRAY_MEAN, GRAY_STD = 0.5, 0.25

# Full-match regexes for PEFT's LoRA, tolerant of a prefix so they still match when the encoder
# sits inside a larger model (``model.backbone.blocks.0.attn.qkv``).
VIT_LORA_TARGETS = [r"(.*\.)?blocks\.\d+\.attn\.(qkv|proj)", r"(.*\.)?blocks\.\d+\.mlp\.(fc1|fc2)"]


@dataclass(frozen=True)
class ViTConfig:
    """The shape of a medtune ViT; ``seed`` makes the random init reproducible."""

    image_size: int = 128  # px, square
    patch_size: int = 16  # px; (image_size / patch_size)^2 patch tokens
    in_chans: int = 1  # 1: grayscale radiographs; 3 to share weights with RGB models
    dim: int = 192
    depth: int = 6
    heads: int = 3
    mlp_ratio: float = 4.0  # hidden width of the MLP = dim * mlp_ratio
    seed: int = 0

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise MedtuneError(
                f"medtune-vit: image_size {self.image_size} is not a multiple of "
                f"patch_size {self.patch_size}"
            )
        if self.dim % self.heads:
            raise MedtuneError(
                f"medtune-vit: dim {self.dim} is not a multiple of heads {self.heads}"
            )

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


class PatchEmbed(nn.Module):
    def __init__(self, in_chans: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A strided convolution, computed as one matrix product over the cut-out patches: the
        # same numbers, and for gray (1-channel) input far faster on GPUs than cuDNN's kernel.
        b, c, h, w = x.shape
        p = self.proj.kernel_size[0]
        patches = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        patches = patches.reshape(b, (h // p) * (w // p), c * p * p)
        return F.linear(patches, self.proj.weight.flatten(1), self.proj.bias)  # (B, N, D)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, head_dim)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MedtuneViT(Encoder):
    """medtune's ViT; pooled features are the class token after the final norm."""

    family = "medtune-vit"

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        self.dim = config.dim
        self.grid = (config.grid, config.grid)
        self.contract = InputContract(
            channels=config.in_chans,
            size=config.image_size,
            mean=(GRAY_MEAN,) * config.in_chans,
            std=(GRAY_STD,) * config.in_chans,
        )
        self.lora_targets = list(VIT_LORA_TARGETS)
        self.patch_size, self.any_size = config.patch_size, True  # pretraining hooks
        # Build and initialise under a private RNG: the same seed gives the same weights, and
        # the caller's global RNG stream (data order, dropout) is left as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self._build(config)
        self.register_load_state_dict_pre_hook(_resample_pos_embed_on_load)

    def _build(self, config: ViTConfig) -> None:
        d, p = config.dim, config.patch_size
        self.patch_embed = PatchEmbed(config.in_chans, d, p)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + config.grid**2, d))
        self.blocks = nn.ModuleList(
            Block(d, config.heads, config.mlp_ratio) for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(d, eps=1e-6)
        # timm's ViT init: truncated normal (std 0.02) for linears and the position embedding.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> Features:
        self.contract.check(x)
        return self.forward_patches(*self.embed_patches(x))

    def embed_patches(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, N, D) patch embeddings and their grid, for inputs of any size that is a whole
        number of patches (multi-crop's local views); see :class:`Encoder`."""
        self.contract.check(x, any_size=True)
        p = self.config.patch_size
        if x.shape[-2] % p or x.shape[-1] % p:
            raise MedtuneError(f"medtune-vit: input of {x.shape[-2]} x {x.shape[-1]} px is not "
                               f"a whole number of {p} px patches")  # fmt: skip
        return self.patch_embed(x), (x.shape[-2] // p, x.shape[-1] // p)

    def forward_patches(self, tokens: torch.Tensor, grid: tuple[int, int]) -> Features:
        """Class token, position embedding (resampled to ``grid`` if it is not the model's),
        the blocks and the final norm, on patch embeddings from :meth:`embed_patches`."""
        grid = (int(grid[0]), int(grid[1]))
        pos_embed = resample_pos_embed(self.pos_embed, grid)  # itself at the model's grid
        # The residual stream keeps the patch embeddings' dtype: bf16 under autocast. fp32
        # class and position embeddings would promote it to fp32, and every norm, GELU and
        # residual add would then move twice the bytes (on an H100, MFU 36% -> 39%).
        dtype = tokens.dtype
        cls = self.cls_token.to(dtype).expand(tokens.shape[0], -1, -1)
        x = torch.cat([cls, tokens], dim=1) + pos_embed.to(dtype)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return Features(pooled=x[:, 0], tokens=x[:, 1:], grid=grid)


def resample_pos_embed(pos_embed: torch.Tensor, grid: int | tuple[int, int]) -> torch.Tensor:
    """Resample a (1, 1 + g*g, D) position embedding to (1, 1 + h*w, D), bicubic, for a
    ``grid`` of (h, w) patches (or grid x grid).

    The class token's embedding is kept as is; the patch embeddings are treated as a g x g
    image with D channels, as timm's ``resample_abs_pos_embed`` does. Differentiable: views of
    other sizes train the one position embedding.
    """
    h, w = (grid, grid) if isinstance(grid, int) else grid
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
    old = math.isqrt(patch_pos.shape[1])
    if old * old != patch_pos.shape[1]:
        raise MedtuneError(f"position embedding: {patch_pos.shape[1]} patch tokens is not a square")
    if old == h == w:
        return pos_embed
    image = patch_pos.reshape(1, old, old, -1).permute(0, 3, 1, 2).float()
    image = F.interpolate(image, size=(h, w), mode="bicubic", antialias=True)
    patch_pos = image.permute(0, 2, 3, 1).reshape(1, h * w, -1).to(pos_embed.dtype)
    return torch.cat([cls_pos, patch_pos], dim=1)


def _resample_pos_embed_on_load(
    module: MedtuneViT, state_dict: dict, prefix: str, *_: object
) -> None:
    key = prefix + "pos_embed"
    if key in state_dict and state_dict[key].shape != module.pos_embed.shape:
        state_dict[key] = resample_pos_embed(state_dict[key], module.config.grid)


@register_backbone("medtune-vit")
def medtune_vit(
    image_size: int = 128,
    patch_size: int = 16,
    in_chans: int = 1,
    dim: int = 192,
    depth: int = 6,
    heads: int = 3,
    mlp_ratio: float = 4.0,
    seed: int = 0,
    pretrained_path: str | None = None,
) -> MedtuneViT:
    """medtune's ViT, every size set in the config (defaults: the tiny preset).

    ``pretrained_path`` names a ``.safetensors`` file saved from a medtune ViT (any image size:
    the position embedding is resampled).
    """
    config = ViTConfig(image_size, patch_size, in_chans, dim, depth, heads, mlp_ratio, seed)
    model = MedtuneViT(config)
    if pretrained_path is not None:
        load_weights(model, pretrained_path)
    return model


PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"dim": 192, "depth": 6, "heads": 3, "image_size": 128},
    "small": {"dim": 384, "depth": 12, "heads": 6, "image_size": 224},
    "base": {"dim": 768, "depth": 12, "heads": 12, "image_size": 224},
}
for _size, _preset in PRESETS.items():
    # A partial keeps the factory's signature (with the preset's defaults), so config keys are
    # still checked by name and every preset value can be overridden.
    register_backbone(f"medtune-vit-{_size}")(functools.partial(medtune_vit, **_preset))
