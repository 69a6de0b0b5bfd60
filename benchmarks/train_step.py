"""Time the jitted train step: step time, tokens/s, model-FLOPs utilisation and memory per step.

Utilisation is model FLOPs per second over the float32 matmul throughput measured in the same
process (a large `jnp.dot`), so it measures how close the step gets to this machine's own
matmul speed. Batches are synthetic (`pstroke.train.synthetic`) so the data pipeline is not timed.

Usage:
  python benchmarks/train_step.py [--configs=configs/shapes_tiny.py,configs/shapes_base.py]
      [--steps=5] [--override=train.batch_size=8 ...]
"""

import argparse
import resource
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pstroke.config import load_config
from pstroke.train import loop, sharding, synthetic


def measure_matmul_flops(size: int = 2048, repeats: int = 10) -> float:
    """Return the float32 FLOP/s of a [size, size] x [size, size] `jnp.dot`, best of `repeats`."""
    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (size, size), jnp.float32)
    dot = jax.jit(jnp.dot)
    dot(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        dot(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best


def model_flops_per_step(config, params) -> float:
    """Estimate the training FLOPs of one step: 6 x active matmul parameters x tokens, plus attention.

    Each token passes through one of the two Mixture-of-Transformers experts, so decoder-layer
    matrices (leading axes [layers, expert]) count at half their size. Attention counts the full
    [T, T] score and value products that the dense mask computes (12 T^2 x heads x head_dim per
    layer and row, forward and backward). Embedding lookups and norms are not counted.
    """
    llm = config.model.llm
    rows, length = config.train.batch_size, config.data.seq_len
    active = 0.0
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    for path, leaf in flat:
        names = [getattr(key, "key", str(key)) for key in path]
        if names[-1] != "kernel":
            continue
        active += leaf.size / 2 if "layers" in names else leaf.size
    dense = 6 * active * rows * length
    attention = 12 * llm.num_layers * rows * length ** 2 * llm.num_heads * llm.head_dim
    return dense + attention


def benchmark(config_path: str, overrides: list[str], steps: int, peak: float) -> dict:
    config = load_config(config_path, ["data.source=synthetic", *overrides])
    mesh = sharding.make_mesh(config.mesh)
    parts = loop.build(config, mesh)
    layout = synthetic.layout_from_config(config)
    data = synthetic.SyntheticIterator(layout, seed=0, sharding=sharding.batch_sharding(mesh))
    batches = [next(data) for _ in range(steps + 1)]
    tokens = float(np.mean([np.sum(np.asarray(batch["sample_id"]) > 0) for batch in batches]))

    with jax.set_mesh(mesh), nn.logical_axis_rules(parts.rules):
        state = parts.init_state()
        flops = model_flops_per_step(config, state.params)
        compiled = parts.step_fn.lower(state, batches[0], jax.random.PRNGKey(0)).compile()
        memory = compiled.memory_analysis()
        state, metrics = parts.step_fn(state, batches[0], jax.random.PRNGKey(0))
        jax.block_until_ready(metrics)

        times = []
        for index, batch in enumerate(batches[1:]):
            start = time.perf_counter()
            state, metrics = parts.step_fn(state, batch, jax.random.PRNGKey(index))
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - start)

    step_time = float(np.median(times))
    return {
        "config": config_path,
        "parameters": sum(int(leaf.size) for leaf in jax.tree.leaves(state.params)),
        "tokens_per_step": layout.rows * layout.length,
        "step_s": step_time,
        "tokens_per_s": layout.rows * layout.length / step_time,
        "real_tokens_per_s": tokens / step_time,
        "model_tflops_per_step": flops / 1e12,
        "mfu": flops / step_time / peak,
        "temp_mib": memory.temp_size_in_bytes / 2 ** 20 if memory else float("nan"),
        "argument_mib": memory.argument_size_in_bytes / 2 ** 20 if memory else float("nan"),
        "loss": float(metrics["loss"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="configs/shapes_tiny.py,configs/shapes_base.py",
                        help="comma-separated config files to time")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per config, after one compile step")
    parser.add_argument("--override", action="append", default=[], help="config override KEY=VALUE, repeatable")
    args = parser.parse_args()

    peak = measure_matmul_flops()
    print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}; "
          f"measured float32 matmul peak {peak / 1e9:.1f} GFLOP/s")
    print("| config | parameters | tokens/step | step (s) | tokens/s (incl. padding) | non-padding tokens/s "
          "| model TFLOP/step | MFU vs measured peak | XLA temp (MiB) | arguments (MiB) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for path in args.configs.split(","):
        result = benchmark(path, args.override, args.steps, peak)
        print(f"| {result['config']} | {result['parameters']:,} | {result['tokens_per_step']:,} "
              f"| {result['step_s']:.3f} | {result['tokens_per_s']:,.0f} | {result['real_tokens_per_s']:,.0f} "
              f"| {result['model_tflops_per_step']:.3f} | {100 * result['mfu']:.1f}% "
              f"| {result['temp_mib']:.0f} | {result['argument_mib']:.0f} |", flush=True)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 10
    print(f"process peak resident memory: {peak_rss:,.0f} MiB")


if __name__ == "__main__":
    main()
