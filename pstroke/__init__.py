"""pstroke: process-driven image generation (plan, sketch, inspect, refine) in JAX/Flax."""

__version__ = "0.1.0"
