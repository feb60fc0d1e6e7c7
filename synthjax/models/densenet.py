"""DenseNet, the study's classifier (DenseNet-121) and a narrow variant for CPU quickstarts.

Data flow: `train/classifier.py` trains it on real data (TRTR) and on synthetic data (TSTR)
and tests both on the real test split. The real-trained model is also the domain feature
extractor: its globally pooled features (after the final norm + ReLU) feed the GAN's FD
monitoring, the fidelity metrics and the nearest-neighbour memorization audit.

Layer order and sizes follow Huang et al. (2017) and torchvision's densenet121 (BN-ReLU-Conv,
bottleneck 1x1 conv of bn_size * growth_rate channels, transitions of 1x1 conv + 2x2 average
pool), so parameter counts match it exactly for the same input channels and classes.
"""

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from synthjax.models.layers import Conv

Array = jax.Array
Dtype = Any


class DenseNet(nn.Module):
    """DenseNet-BC. `__call__(x, train=...)` returns (logits, pooled features)."""

    block_sizes: tuple[int, ...]
    growth_rate: int
    num_init_features: int
    num_classes: int
    bn_size: int = 4
    compression: float = 0.5
    small_input: bool = False
    conv_lowering: str = "native"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> tuple[Array, Array]:
        """x: float32[B, H, W, C] -> (logits float32[B, num_classes], features float32[B, F]).

        F is the channel count after the last dense block (1024 for DenseNet-121). In train
        mode BatchNorm uses batch statistics and updates `batch_stats` (pass
        mutable=['batch_stats']); otherwise it uses the running averages.
        """
        norm = partial(
            nn.BatchNorm,
            use_running_average=not train,
            momentum=0.9,
            epsilon=1e-5,
            dtype=self.dtype,
        )
        conv = partial(Conv, lowering=self.conv_lowering, dtype=self.dtype)

        x = x.astype(self.dtype)
        if self.small_input:
            x = conv(self.num_init_features, 3, name="stem_conv")(x)
        else:
            # torchvision's stem: symmetric padding 3 and 1, not 'SAME', which would pad
            # asymmetrically at stride 2 and shift the receptive fields of pretrained weights.
            x = conv(self.num_init_features, 7, stride=2, padding=3, name="stem_conv")(x)
            x = nn.relu(norm(name="stem_norm")(x))
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))

        features = self.num_init_features
        for b, num_layers in enumerate(self.block_sizes):
            for i in range(num_layers):
                name = f"block{b + 1}_layer{i + 1}"
                y = nn.relu(norm(name=f"{name}_norm1")(x))
                y = conv(self.bn_size * self.growth_rate, 1, name=f"{name}_conv1")(y)
                y = nn.relu(norm(name=f"{name}_norm2")(y))
                y = conv(self.growth_rate, 3, name=f"{name}_conv2")(y)
                x = jnp.concatenate([x, y], axis=-1)
                features += self.growth_rate
            if b + 1 < len(self.block_sizes):
                features = int(features * self.compression)
                x = nn.relu(norm(name=f"transition{b + 1}_norm")(x))
                x = conv(features, 1, name=f"transition{b + 1}_conv")(x)
                x = nn.avg_pool(x, (2, 2), strides=(2, 2))

        x = nn.relu(norm(name="final_norm")(x))
        pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        logits = nn.Dense(self.num_classes, bias_init=nn.initializers.zeros, name="head")(pooled)
        return logits, pooled


def densenet121(num_classes: int, **kwargs: Any) -> DenseNet:
    """DenseNet-121 (growth 32, blocks 6/12/24/16, 64 initial features): the study's model."""
    return DenseNet(
        block_sizes=(6, 12, 24, 16),
        growth_rate=32,
        num_init_features=64,
        num_classes=num_classes,
        **kwargs,
    )


def densenet_narrow(num_classes: int, **kwargs: Any) -> DenseNet:
    """A small DenseNet (growth 12, blocks 3/6/6, 24 initial features, 32x32 stem) for
    CPU quickstarts and tests; same structure as DenseNet-121, about 0.14M parameters."""
    settings = dict(block_sizes=(3, 6, 6), growth_rate=12, num_init_features=24, small_input=True)
    settings.update(kwargs)
    return DenseNet(num_classes=num_classes, **settings)
