"""Time one training forward + backward of the unified model with "gather" vs "dense" MoT routing.

Usage: python benchmarks/mot_routing.py [--config=configs/shapes_base.py] [--rows=2] [--length=1024]
       [--gen_fraction=0.75] [--steps=5]

A packed row is one sample: text (und tokens) followed by one noise split of latent tokens (gen),
so `gen_fraction` of the tokens use the gen expert. Prints the median seconds per step of each
routing after one warm-up (compile) step, and a markdown table row for BENCHMARKS.md.
"""

import argparse
import platform
import statistics
import time

import flax.linen as nn
import jax
import numpy as np

from pstroke import batch as batch_format
from pstroke.config import load_config
from pstroke.model.losses import losses
from pstroke.model.unified import UnifiedModel, latent_dim


def make_batch(model_config, rows: int, length: int, gen_fraction: float) -> dict:
    """Return a batch of `rows` one-sample rows: text, then a noise split with its two markers."""
    rng = np.random.default_rng(0)
    batch = batch_format.empty_batch(rows, length, latent_dim(model_config))
    text = length - int(length * gen_fraction)
    batch["sample_id"][:] = 1
    batch["token_id"][:, :text] = rng.integers(0, model_config.llm.vocab_size, (rows, text))
    batch["position"][:, :text] = np.arange(text)
    batch["ce_label"][:, :text - 1] = batch["token_id"][:, 1:text]
    batch["ce_weight"][:, :text - 1] = 1.0

    batch["split_id"][:, text:] = 1
    batch["split_mode"][:, text:] = batch_format.MODE_NOISE
    batch["position"][:, text:] = text
    inner = slice(text + 1, length - 1)
    batch["kind"][:, inner] = batch_format.KIND_LATENT
    batch["expert"][:, inner] = batch_format.EXPERT_GEN
    batch["latent"][:, inner] = rng.normal(size=batch["latent"][:, inner].shape)
    batch["latent_pos"][:, inner] = np.arange(length - 1 - text - 1) % (model_config.max_latent_size ** 2)
    batch["timestep"][:, inner] = 0.5
    batch["mse_weight"][:, inner] = 1.0
    batch["noise"] = rng.normal(size=batch["latent"].shape).astype(np.float32)
    return batch


def time_routing(model_config, batch: dict, steps: int) -> float:
    """Return the median seconds of a jitted value_and_grad step (after one compile step)."""
    model = UnifiedModel(model_config)
    params = nn.unbox(jax.jit(model.init)(jax.random.key(0), batch)["params"])

    @jax.jit
    def step(params, batch):
        return jax.value_and_grad(lambda p: losses(model.apply({"params": p}, batch), batch)[0])(params)

    jax.block_until_ready(step(params, batch))
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        jax.block_until_ready(step(params, batch))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/shapes_base.py", help="config file[:variant]")
    parser.add_argument("--rows", type=int, default=2, help="packed rows per batch")
    parser.add_argument("--length", type=int, default=1024, help="tokens per row")
    parser.add_argument("--gen_fraction", type=float, default=0.75, help="share of tokens routed to gen")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per routing")
    args = parser.parse_args()

    config = load_config(args.config)
    batch = make_batch(config.model, args.rows, args.length, args.gen_fraction)
    results = {}
    for routing in ("gather", "dense"):
        config.model.mot_routing = routing
        results[routing] = time_routing(config.model, batch, args.steps)
        print(f"{routing}: {results[routing] * 1000:.1f} ms per forward+backward step")

    device = jax.devices()[0]
    print(f"| {args.config} | {args.rows}x{args.length} | {args.gen_fraction} | "
          f"{results['gather'] * 1000:.0f} | {results['dense'] * 1000:.0f} | "
          f"{device.platform} ({platform.processor() or platform.machine()}), jax {jax.__version__} |")


if __name__ == "__main__":
    main()
