"""Training DePT and its baselines: options, optimiser, checkpoints, the loop."""

from .options import TrainOptions

__all__ = ["TrainOptions", "train"]


def train(options: TrainOptions) -> dict:
    """Run one training job; returns what results.json holds."""
    from .loop import train as _train

    return _train(options)
