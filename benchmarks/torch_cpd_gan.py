"""PyTorch port of the cpD-GAN networks and of one WGAN-GP training step, for benchmarking.

Where it sits: a benchmark-only re-implementation of `synthjax.models.cpd_gan` and of the
cpD-GAN path of `synthjax.train.gan.train_step` (loss 'wgan_gp', no ADA), so the jitted JAX
step can be timed against PyTorch, eager and `torch.compile`d, on the same machine. torch is
an optional benchmark dependency: nothing in the `synthjax` package imports this file.

It holds:
  * the networks, in `torch_cpd_gan_nets.py`: `Generator`, `Discriminator` (the Flax
    modules' layers, written as a PyTorch user would) and `load_jax_params` (copies Flax
    params into them). The training step keeps activations in the channels_last memory
    format by default (`--nchw` for contiguous NCHW; benchmarks/README.md has the numbers).
  * `make_train_step`: one D update (WGAN-GP + drift), one G update against the updated D,
    Adam(b1=0, b2=0.99, eps=1e-8) on both and the warmed-up generator EMA, on fixed data.
  * `parity`: max |JAX - torch| of both networks' outputs on the same params and inputs.

    python benchmarks/torch_cpd_gan.py      # parity, then eager vs compiled img/s

Differences from the JAX step: the random draws (z, fake label rows, GP mixing weights) come
from torch's generator, not JAX's keys; the step does not compute the metrics (grad norms,
mean scores) that the JAX step returns; and the resampling convs run unfused (conv at the
high resolution), about 9/4 of the FLOPs of the fused forms JAX uses for those layers, which
is what a plain PyTorch implementation costs. The losses, updates and EMA are the same: one
step from the same params and draws lands on the JAX step's loss to float32 rounding.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch_cpd_gan_nets import Discriminator, Generator, load_jax_params

GP_WEIGHT = 10.0
DRIFT_WEIGHT = 0.001
EMA_DECAY = 0.999
LABEL_TABLE_ROWS = 256


def _random_data(
    rng: np.random.Generator, batch: int, resolution: int, channels: int, num_labels: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fixed reals float32[B, C, R, R] in [-1, 1] (from uint8, as `images_to_float`), their
    multi-hot labels float32[B, K] (~30% ones) and a label table float32[256, K]."""
    images = rng.integers(0, 256, (batch, channels, resolution, resolution), dtype=np.uint8)
    real = torch.from_numpy(images).float() * (2.0 / 255.0) - 1.0
    labels = torch.from_numpy((rng.random((batch, num_labels)) < 0.3).astype(np.float32))
    table = (rng.random((LABEL_TABLE_ROWS, num_labels)) < 0.3).astype(np.float32)
    return real, labels, torch.from_numpy(table)


class TrainStep:
    """One cpD-GAN training step on fixed data; call it to run a step.

    Per call: fakes from G (no grad) for the D update; D loss = -(E[D(real)] - E[D(fake)])
    + 10 * E[(|grad_x D(mix, real labels)| - 1)^2] + 0.001 * E[D(real)^2] with
    mix = eps * real + (1 - eps) * fake, eps ~ U[0, 1) per sample; Adam step on D; then
    G loss = -E[D(G(z, y), y)] with the updated D and an Adam step on G; then
    g_ema = d * g_ema + (1 - d) * g with d = min(0.999, (1 + t) / (10 + t)), t the step.
    Fake labels are rows of the label table drawn uniformly (fresh draws for D and G).

    Compilation (`compile`): `torch.compile` cannot differentiate twice through a compiled
    graph (AOTAutograd raises "torch.compile with aot_autograd does not currently support
    double backward"), which is what `torch.autograd.grad(..., create_graph=True)` for the
    penalty followed by `loss.backward()` asks for. Two ways around it:
      'step': the whole step is compiled, with the penalty's input gradient written as
        `torch.func.grad`, which Dynamo traces into the forward graph as explicit ops, so
        AOTAutograd differentiates that graph only once. `.backward()` and the optimizer
        steps break the graph into a few compiled pieces; the arithmetic is the eager step's.
      'modules': `torch.compile(G)` and `torch.compile(D)` are used for every pass except the
        penalty's, which goes through the eager D (same parameters) because it is the pass
        differentiated twice.
    compile=True (or 'auto') tries 'step', then 'modules'; `self.compiled` says which runs
    ('none' when eager) and `self.compile_errors` why an attempt failed. If every attempt
    fails, a RuntimeError says why. The first compiled call (a warm-up step, run here) pays
    the compilation, so the step counter starts at 1.
    """

    def __init__(
        self,
        resolution: int,
        num_labels: int,
        batch: int,
        *,
        latent_dim: int,
        fmap_base: int,
        fmap_max: int,
        channels: int = 1,
        learning_rate: float = 0.002,
        compile: bool | str = False,
        seed: int = 0,
        channels_last: bool = True,
    ):
        modes = {False: (), True: ("step", "modules"), "auto": ("step", "modules")}
        modes.update(step=("step",), modules=("modules",))
        if compile not in modes:
            raise ValueError(f"compile must be a bool, 'auto', 'step' or 'modules': {compile!r}")
        torch.manual_seed(seed)
        self.batch, self.latent_dim = batch, latent_dim
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        sizes = dict(
            resolution=resolution,
            num_labels=num_labels,
            channels=channels,
            fmap_base=fmap_base,
            fmap_max=fmap_max,
        )
        self.G = Generator(latent_dim=latent_dim, **sizes).to(memory_format=self.memory_format)
        self.D = Discriminator(**sizes).to(memory_format=self.memory_format)
        self.G_ema = copy.deepcopy(self.G).requires_grad_(False)
        adam = dict(lr=learning_rate, betas=(0.0, 0.99), eps=1e-8)
        self.g_opt = torch.optim.Adam(self.G.parameters(), **adam)
        self.d_opt = torch.optim.Adam(self.D.parameters(), **adam)
        real, self.real_labels, self.label_table = _random_data(
            np.random.default_rng(seed), batch, resolution, channels, num_labels
        )
        self.real = real.contiguous(memory_format=self.memory_format)
        self.step_count = 0
        self.g_forward: Callable[..., torch.Tensor] = self.G
        self.d_forward: Callable[..., torch.Tensor] = self.D
        self._step: Callable[[torch.Tensor], torch.Tensor] = self._train_step
        self.gp_grads = self._gp_grads_autograd
        self.compiled = "none"
        self.compile_errors: list[str] = []
        if modes[compile]:
            self._compile(modes[compile])

    def _fake_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.randn(self.batch, self.latent_dim)
        rows = torch.randint(0, self.label_table.shape[0], (self.batch,))
        return z, self.label_table[rows]

    def _d_loss(self) -> torch.Tensor:
        z, fake_labels = self._fake_inputs()
        with torch.no_grad():
            fake = self.g_forward(z, fake_labels)
        s_real = self.d_forward(self.real, self.real_labels)
        s_fake = self.d_forward(fake, fake_labels)
        eps = torch.rand(self.batch, 1, 1, 1)
        grads = self.gp_grads(eps * self.real + (1.0 - eps) * fake)
        norms = torch.sqrt(grads.square().sum(dim=(1, 2, 3)) + 1e-12)
        penalty = (norms - 1.0).square().mean()
        wasserstein = s_real.mean() - s_fake.mean()
        return -wasserstein + GP_WEIGHT * penalty + DRIFT_WEIGHT * s_real.square().mean()

    def _gp_grads_autograd(self, mixed: torch.Tensor) -> torch.Tensor:
        """d sum(D(mixed, real labels)) / d mixed, differentiable: float32[B, C, R, R].

        Through the eager D: this pass is differentiated twice (see the class doc).
        """
        mixed = mixed.detach().requires_grad_(True)
        (grads,) = torch.autograd.grad(
            self.D(mixed, self.real_labels).sum(), mixed, create_graph=True
        )
        return grads

    def _gp_grads_func(self, mixed: torch.Tensor) -> torch.Tensor:
        """The same gradient through `torch.func.grad` (traceable by Dynamo as plain ops)."""
        return torch.func.grad(lambda x: self.D(x, self.real_labels).sum())(mixed)

    def _g_loss(self) -> torch.Tensor:
        z, labels = self._fake_inputs()
        return -self.d_forward(self.g_forward(z, labels), labels).mean()

    def _train_step(self, decay: torch.Tensor) -> torch.Tensor:
        self.d_opt.zero_grad(set_to_none=True)
        loss_d = self._d_loss()
        loss_d.backward(inputs=list(self.D.parameters()))
        self.d_opt.step()

        self.g_opt.zero_grad(set_to_none=True)
        loss_g = self._g_loss()
        # Only G's gradients: D's weight gradients are never formed for this backward.
        loss_g.backward(inputs=list(self.G.parameters()))
        self.g_opt.step()

        with torch.no_grad():
            for e, p in zip(self.G_ema.parameters(), self.G.parameters(), strict=True):
                e.lerp_(p, 1.0 - decay)
        return loss_d.detach()

    def _compile(self, attempts: tuple[str, ...]) -> None:
        for attempt in attempts:
            if attempt == "step":
                self.gp_grads = self._gp_grads_func
                self.g_forward, self.d_forward = self.G, self.D
                self._step = torch.compile(self._train_step)
            else:
                self.gp_grads = self._gp_grads_autograd
                self.g_forward, self.d_forward = torch.compile(self.G), torch.compile(self.D)
                self._step = self._train_step
            try:
                self()  # compiles; a failure can leave a half-applied step, fine for timing
            except Exception as error:  # any compile or run-time failure: next attempt
                first_line = (str(error).strip().splitlines() or [""])[0]
                self.compile_errors.append(f"{attempt}: {type(error).__name__}: {first_line}")
                continue
            self.compiled = attempt
            return
        raise RuntimeError(
            "torch.compile could not run the cpD-GAN step: " + "; ".join(self.compile_errors)
        )

    def _decay(self) -> torch.Tensor:
        t = float(self.step_count)
        return torch.tensor(min(EMA_DECAY, (1.0 + t) / (10.0 + t)))

    def __call__(self) -> torch.Tensor:
        """Runs one step; returns the discriminator loss (a float32 0-d tensor)."""
        loss = self._step(self._decay())
        self.step_count += 1
        return loss


# The name the benchmarks call: one full training step per call of the returned object.
make_train_step = TrainStep


def parity(
    resolution: int = 16,
    num_labels: int = 5,
    batch: int = 8,
    latent_dim: int = 32,
    fmap_base: int = 256,
    fmap_max: int = 32,
) -> tuple[float, float]:
    """(max |G_jax - G_torch|, max |D_jax - D_torch|) on the same params and inputs.

    The Flax params are perturbed by N(0, 0.1^2) noise before copying so that the layers
    that start at exactly zero (conditional pixel-norm kernels, biases) take part in the
    comparison too. Float32 throughout; expect a few 1e-6 or less.
    """
    # JAX only here: the training step itself needs nothing but torch.
    import jax
    import jax.numpy as jnp

    from synthjax.models import cpd_gan

    sizes = dict(
        resolution=resolution,
        num_labels=num_labels,
        channels=1,
        fmap_base=fmap_base,
        fmap_max=fmap_max,
        conv_lowering="native",
    )
    g_flax = cpd_gan.Generator(latent_dim=latent_dim, **sizes)
    d_flax = cpd_gan.Discriminator(**sizes)
    rng = np.random.default_rng(0)
    z = rng.standard_normal((batch, latent_dim)).astype(np.float32)
    labels = (rng.random((batch, num_labels)) < 0.3).astype(np.float32)
    images = rng.uniform(-1.0, 1.0, (batch, resolution, resolution, 1)).astype(np.float32)

    def perturbed(params: Any) -> Any:
        return jax.tree.map(
            lambda p: p + 0.1 * rng.standard_normal(p.shape).astype(np.float32), params
        )

    g_params = perturbed(g_flax.init(jax.random.key(0), jnp.asarray(z), jnp.asarray(labels)))
    d_params = perturbed(d_flax.init(jax.random.key(1), jnp.asarray(images), jnp.asarray(labels)))
    g_jax = np.asarray(g_flax.apply(g_params, z, labels))  # [B, R, R, C]
    d_jax = np.asarray(d_flax.apply(d_params, images, labels)[0])  # [B]

    sizes.pop("conv_lowering")
    g_torch = Generator(latent_dim=latent_dim, **sizes)
    d_torch = Discriminator(**sizes)
    load_jax_params(g_torch, g_params["params"])
    load_jax_params(d_torch, d_params["params"])
    with torch.no_grad():
        g_out = g_torch(torch.from_numpy(z), torch.from_numpy(labels)).numpy()
        d_out = d_torch(
            torch.from_numpy(images.transpose(0, 3, 1, 2).copy()), torch.from_numpy(labels)
        ).numpy()
    g_diff = float(np.max(np.abs(g_out.transpose(0, 2, 3, 1) - g_jax)))
    d_diff = float(np.max(np.abs(d_out - d_jax)))
    return g_diff, d_diff


def time_steps(step: TrainStep, *, warmup: int, steps: int) -> float:
    """Seconds per step: median of `steps` timed calls after `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


# The quickstart config's GAN (configs/quickstart.py, batch halved) and the study's widths.
SIZES = {
    "quickstart": dict(batch=32, latent_dim=128, fmap_base=512, fmap_max=32),
    "study": dict(batch=16, latent_dim=512, fmap_base=16384, fmap_max=512),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--num-labels", type=int, default=10)
    parser.add_argument("--sizes", default=",".join(SIZES), help="of: " + ", ".join(SIZES))
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per variant")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant")
    parser.add_argument(
        "--nchw", action="store_true", help="contiguous NCHW instead of channels_last"
    )
    parser.add_argument("--skip-compile", action="store_true")
    args = parser.parse_args()

    g_diff, d_diff = parity()
    print(f"parity (16x16, float32): max|dG| = {g_diff:.2e}, max|dD| = {d_diff:.2e}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'sizes':>10} {'batch':>5} {'mode':>16} {'setup s':>8} {'s/step':>8} {'img/s':>8}")
    for name in args.sizes.split(","):
        size = SIZES[name]
        modes = [False] if args.skip_compile else [False, True]
        for compiled in modes:
            start = time.perf_counter()
            try:
                step = make_train_step(
                    args.resolution,
                    args.num_labels,
                    compile=compiled,
                    channels_last=not args.nchw,
                    **size,
                )
            except RuntimeError as error:
                print(f"{name:>10} {size['batch']:>5} {'compiled':>16}  {error}")
                continue
            setup = time.perf_counter() - start  # compilation included
            mode = f"compiled:{step.compiled}" if compiled else "eager"
            seconds = time_steps(step, warmup=args.warmup, steps=args.steps)
            print(
                f"{name:>10} {size['batch']:>5} {mode:>16} {setup:>8.1f} {seconds:>8.3f} "
                f"{size['batch'] / seconds:>8.1f}"
            )
            for error in step.compile_errors:
                print(f"{'':>10} fell back after: {error}")


if __name__ == "__main__":
    main()
