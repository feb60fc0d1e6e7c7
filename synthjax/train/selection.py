"""Model selection during training: the best model so far and the evaluations since it.

Both trainers evaluate their model every so often (the GAN's EMA generator by Fréchet
distance and label fidelity, `fd_monitor`; the classifier by mean validation AUROC,
`classifier`), keep a copy of the best one, and stop after `patience` evaluations without a
better one. `BestSoFar` is that record, a pytree inside each trainer's state, so it is
checkpointed with it and a resumed run selects exactly as an uninterrupted one.

The decision "is this one better" is each trainer's own; this module only keeps the record.
Its updates run on the host between steps (a few scalars move).
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp

PyTree = Any


@flax.struct.dataclass
class BestSoFar:
    """The selected model and its record.

    params: a copy of the selected model's parameters (any pytree).
    scores: float32 scalars it was selected by (e.g. {"fd", "label_fidelity"}, {"auroc"}).
    step: int32, the step it was evaluated at (the trainer's value before any selection).
    evals_since: int32, evaluations since it was selected (early stopping).
    """

    params: PyTree
    scores: dict[str, jax.Array]
    step: jax.Array
    evals_since: jax.Array

    @classmethod
    def start(cls, params: PyTree, scores: dict[str, float], step: int) -> BestSoFar:
        """The record before any evaluation: `params` (the initial model) stands in."""
        return cls(
            params=params,
            scores={k: jnp.full((), v, jnp.float32) for k, v in scores.items()},
            step=jnp.full((), step, jnp.int32),
            evals_since=jnp.zeros((), jnp.int32),
        )

    def after_evaluation(
        self, improved: bool, params: PyTree, scores: dict[str, float], step: int
    ) -> BestSoFar:
        """The record after an evaluation at `step` of the model `params` scored `scores`:
        it becomes the selected one if `improved`, else one more evaluation without a
        better one is counted."""
        if improved:
            return BestSoFar(
                # A copy: the next train step donates (and overwrites) the live parameters.
                params=jax.tree.map(jnp.copy, params),
                scores={k: jnp.float32(v) for k, v in scores.items()},
                step=jnp.int32(step),
                evals_since=jnp.int32(0),
            )
        return self.replace(evals_since=jnp.int32(self.evaluations_since() + 1))

    def flat_layout(self, evals_since: str) -> dict[str, jax.Array]:
        """The record's scalars as the trainers' flat states named them: `best_<score>`,
        `best_step` and `evals_since` (the parameters' names are each trainer's own)."""
        scores = {f"best_{k}": v for k, v in self.scores.items()}
        return {**scores, "best_step": self.step, evals_since: self.evals_since}

    @classmethod
    def from_flat_layout(
        cls, flat: dict[str, PyTree], params: PyTree, scores: tuple[str, ...], evals_since: str
    ) -> BestSoFar:
        """The record from a flat state (`flat_layout`'s names) and its parameters."""
        by_name = {k: flat[f"best_{k}"] for k in scores}
        return cls(params, by_name, flat["best_step"], flat[evals_since])

    def score(self, name: str) -> float:
        return float(jax.device_get(self.scores[name]))

    def selected_step(self) -> int:
        return int(jax.device_get(self.step))

    def evaluations_since(self) -> int:
        return int(jax.device_get(self.evals_since))

    def patience_exhausted(self, patience: int) -> bool:
        """Early stop: `patience` evaluations in a row without a better model."""
        return self.evaluations_since() >= patience
