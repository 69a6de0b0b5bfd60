"""Training data: Shapes trajectories, the word tokenizer, packed sequences and the grain pipeline."""

from pstroke.data.pipeline import make_global_batch, make_iterator

__all__ = ["make_global_batch", "make_iterator"]
