"""What the classifier sees: the input protocol (`classifier.protocol`) and its augmentation.

Data flow: uint8 batches leave the grain pipeline at the GAN resolution and go to the device
as they are; `classifier_inputs` turns them into the network's input inside the jitted
classifier programs (`train/classifier.py`: the train step, `predict`, and through `predict`
every later use of the real-trained classifier: validation and test scores, the domain
features of GAN monitoring, fidelity and the memorization audit, label fidelity). One
function in one place, so the preprocessing cannot differ between those uses. Doing it on
the device rather than in the input pipeline keeps the host-to-device copy at uint8 and the
GAN resolution (a 32x32 gray image is 1 KB; the same image as float32 224x224x3 is 600 KB),
leaves the grain pipeline and its checkpointed iterator untouched, and gives the
augmentation the step's own random key.

Protocols (`PROTOCOLS`):
- 'synthjax' (the default): the image at its own resolution and channels, mapped to [-1, 1];
  the network is trained from scratch.
- 'study': the study's classifier input (DuMont Schütte et al. 2021; their TFGenerator):
  [0, 1], grayscale tiled to 3 channels, resized bilinearly to `classifier.input_resolution`
  (224 in the study), normalised with ImageNet's per-channel mean and std, for a
  DenseNet-121 started from ImageNet weights (`classifier.weights`,
  `models/densenet_weights.py`). The resize uses half-pixel centres and antialiasing when
  shrinking, as PIL's and torchvision's bilinear Resize do (the weights were trained with
  those); the study's TF 1.14 `tf.image.resize_images` used the legacy corner-aligned
  mapping, which shifts the image by up to half a source pixel, and that is not copied.

Augmentation (`classifier.augment`, both protocols, training only): mild translation (up to
1/8 of the image per axis, whole pixels) and isotropic scaling (log2 scale ~ N(0, 0.2)),
each applied to a sample with probability `AUGMENT_P`, through ADA's augment
(`train/augment.py`: one bilinear resampling with mirrored borders), at the stored
resolution before the resize.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections

from synthjax.data import input_pipeline as pipeline
from synthjax.train import augment

PROTOCOLS = ("synthjax", "study")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AUGMENTATIONS = ("translate", "scale")
AUGMENT_P = 0.5  # each augmentation's probability per sample


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """The classifier's input protocol (hashable: bound statically into jitted programs).

    protocol: one of PROTOCOLS. resolution: the network's input side under 'study' (unused
    by 'synthjax'). augment: translate/scale augmentation in the train step.
    """

    protocol: str = "synthjax"
    resolution: int = 224
    augment: bool = False

    @classmethod
    def from_config(cls, classifier: ml_collections.ConfigDict) -> InputSpec:
        return cls(
            protocol=classifier.protocol,
            resolution=classifier.input_resolution,
            augment=classifier.augment,
        )


DEFAULT_INPUTS = InputSpec()  # today's protocol, unaugmented


def model_input_shape(spec: InputSpec, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """(H, W, C) of the stored images -> (H, W, C) of the network's input."""
    if spec.protocol == "synthjax":
        return tuple(image_shape)
    channels = image_shape[-1]
    if channels not in (1, 3):
        raise ValueError(
            f"classifier.protocol='study' takes 1-channel (tiled to 3) or 3-channel images; "
            f"these have {channels}. Use classifier.protocol='synthjax' for other channel counts."
        )
    return (spec.resolution, spec.resolution, 3)


def study_inputs(images: jax.Array, resolution: int) -> jax.Array:
    """float32[B, H, W, C] in [0, 1] (C = 1 or 3) -> float32[B, resolution, resolution, 3]:
    tiled to 3 channels, resized bilinearly (half-pixel centres, antialiased when
    shrinking, a no-op at the same size), ImageNet-normalised."""
    b, h, w, c = images.shape
    x = jnp.tile(images, (1, 1, 1, 3)) if c == 1 else images
    if (h, w) != (resolution, resolution):
        x = jax.image.resize(x, (b, resolution, resolution, 3), "linear", antialias=True)
    mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
    std = jnp.asarray(IMAGENET_STD, jnp.float32)
    return (x - mean) / std


def classifier_inputs(
    images: jax.Array, spec: InputSpec, key: jax.Array | None = None
) -> jax.Array:
    """uint8[B, H, W, C] -> the network's float32 input (`model_input_shape`).

    `key` (training only) draws the augmentation when `spec.augment`; without a key, or with
    augmentation off, the same images always give the same input.
    """
    if spec.protocol == "synthjax":
        x = pipeline.images_to_float(images)
    else:
        x = images.astype(jnp.float32) / 255.0
    if spec.augment and key is not None:
        # Geometric resampling is linear in intensity, so the range ([-1, 1] or [0, 1])
        # does not matter; mirrored borders need no fill value.
        x = augment.augment(x, key, jnp.float32(AUGMENT_P), augmentations=AUGMENTATIONS)
    if spec.protocol == "study":
        x = study_inputs(x, spec.resolution)
    return x
