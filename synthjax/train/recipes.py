"""GAN recipes: `gan.recipe = study` (the study's exact design) or `synthjax` (a conditional
design that learns the labels in a short run), resolved once into a `GanDesign`.

Data flow: `train/gan.py` builds the models and the train step from `resolve(config.gan)`;
`experiment.validate_config` checks the fields here. A recipe fixes the design choices
only: how labels enter G and D, the auxiliary classifier and the loss. Sizes, lengths and
learning rates stay ordinary config fields. Each choice can still be set on its own
(`gan.loss`, `gan.conditioning`, `gan.d_conditioning`, `gan.aux`); the empty string means
"the recipe's", which is how the ablation (`benchmarks/conditioning_ablation.py`) takes one
piece away at a time.

- G conditioning. study: concat(z, y) into every conditional norm. synthjax: a label
  embedding normalised to z's second moment and a mapping network (StyleGAN2-ADA's).
- D conditioning. study: cpD sum_k y_k score_k, prog none (AC-GAN head only). synthjax:
  projection, an unconditional score + <features, normalised label embedding>.
- Auxiliary classifier. study: cpD none, prog softmax CE against y / sum(y). synthjax:
  sigmoid BCE per label, D on real images, G on its fakes.
- Loss. study: WGAN-GP (lambda 10, drift 0.001). synthjax: non-saturating logistic + R1.
- cpD's skip path. study: nearest-neighbour upsampling. synthjax: bilinear (StyleGAN2's
  [1, 3, 3, 1] filter).
- Mode seeking (Mao et al. 2019). study: none. synthjax: weight 1 on cpD and prog, against
  the conditional mode collapse the auxiliary classifier invites there; 0 on dcgan, whose
  samples vary with z without it and lost label fidelity with it.
- R1 weight (logistic loss only). study: 0.01 (ADA's at 32x32, if the loss is switched).
  synthjax: 1 on cpD and prog; 0 on dcgan (R1 1 slowed it to FD 21 at 400 quickstart steps
  against 1.6 at 350 without; the README's ablation).
- The architecture (`gan.arch`) is not part of a recipe. dcgan's generator takes a label
  embedding concatenated to z whatever `gan.conditioning` says; its discriminator follows
  `gan.d_conditioning`.

Both recipes condition the D step's fakes on the real minibatch's labels, as the study's
`D_wgangp` did (`train_step`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

RECIPES = ("study", "synthjax")
G_CONDITIONINGS = ("concat", "mapping")  # the study's | embedding + mapping network
D_CONDITIONINGS = ("label_sum", "projection")  # the study's | projection
RGB_UPSAMPLES = ("nearest", "bilinear")  # cpD's skip path: the study's | StyleGAN2's
AUX_LOSSES = ("none", "softmax", "sigmoid")
GAN_LOSSES = ("wgan_gp", "logistic_r1")


@dataclasses.dataclass(frozen=True)
class GanDesign:
    """The design choices of a run, every one resolved (no 'the recipe's' left)."""

    recipe: str
    loss: str
    g_conditioning: str
    d_conditioning: str  # prog-GAN: 'label_sum' means "no conditional score" (AC-GAN only)
    aux: str
    rgb_upsample: str  # cpD-GAN's skip path
    r1_gamma: float  # logistic_r1's penalty weight
    mode_seeking: float  # weight of the mode-seeking term in G's loss (0: off)

    @property
    def has_aux(self) -> bool:
        return self.aux != "none"


def _recipe_defaults(recipe: str, arch: str) -> dict[str, Any]:
    if recipe == "study":
        return dict(
            loss="wgan_gp",
            g_conditioning="concat",
            d_conditioning="label_sum",
            aux="softmax" if arch == "prog" else "none",
            rgb_upsample="nearest",
            r1_gamma=0.01,  # only if gan.loss=logistic_r1 is asked for (ADA's at 32^2)
            mode_seeking=0.0,
        )
    if recipe == "synthjax":
        plain = arch == "dcgan"  # measured on the quickstart: both terms only cost it
        return dict(
            loss="logistic_r1",
            g_conditioning="mapping",
            d_conditioning="projection",
            aux="sigmoid",
            rgb_upsample="bilinear",
            r1_gamma=0.0 if plain else 1.0,
            mode_seeking=0.0 if plain else 1.0,
        )
    raise ValueError(f"gan.recipe={recipe!r}; known: {', '.join(RECIPES)}")


def resolve(gan: ml_collections.ConfigDict) -> GanDesign:
    """The recipe's choices with any field set explicitly taking precedence."""
    chosen = _recipe_defaults(gan.recipe, gan.arch)
    for key, field in (
        ("loss", "loss"),
        ("g_conditioning", "conditioning"),
        ("d_conditioning", "d_conditioning"),
        ("aux", "aux"),
        ("rgb_upsample", "rgb_upsample"),
    ):
        if gan[field]:
            chosen[key] = gan[field]
    for field in ("r1_gamma", "mode_seeking"):  # numbers: < 0 is "the recipe's"
        if gan[field] >= 0:
            chosen[field] = float(gan[field])
    design = GanDesign(recipe=gan.recipe, **chosen)
    for value, allowed, field in (
        (design.loss, GAN_LOSSES, "gan.loss"),
        (design.g_conditioning, G_CONDITIONINGS, "gan.conditioning"),
        (design.d_conditioning, D_CONDITIONINGS, "gan.d_conditioning"),
        (design.aux, AUX_LOSSES, "gan.aux"),
        (design.rgb_upsample, RGB_UPSAMPLES, "gan.rgb_upsample"),
    ):
        if value not in allowed:
            raise ValueError(
                f"{field}={value!r} is unknown; known: '' (the recipe's), {', '.join(allowed)}"
            )
    return design
