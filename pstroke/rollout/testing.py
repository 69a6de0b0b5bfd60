"""Tiny random models for the rollout's tests and benchmark, and a wrapper that steers decisions.

A random model ends its sequences wherever its logits happen to point. `steer` adds fixed per-row
biases to the choice logits, so a test can make one prompt draw image after image and another
end after its first image, while text tokens and velocities stay the model's own.
"""

import functools
import pathlib
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from pstroke.config import load_config
from pstroke.rollout.steps import ModelSteps

SHAPES_TINY = pathlib.Path(__file__).resolve().parents[2] / "configs" / "shapes_tiny.py"
TINY_OVERRIDES = (
    "model.llm.hidden_size=32",
    "model.llm.intermediate_size=64",
    "model.llm.num_layers=2",
    "model.llm.num_heads=4",
    "model.llm.num_kv_heads=2",
    "model.llm.head_dim=8",
    "model.timestep_frequency_dim=32",
    "world.canvas=16",
    "train.batch_size=1",
    "data.seq_len=64",
    "sample.max_rounds=3",
    "sample.max_text_tokens=6",
    "sample.num_steps=4",
    "sample.batch_size=2",
    "sample.cfg_text_scale=3.0",
    "sample.cfg_img_scale=1.5",
)


def tiny_config(overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Return configs/shapes_tiny.py shrunk to a 2-layer, width-32 model on 16x16 images."""
    return load_config(str(SHAPES_TINY), list(TINY_OVERRIDES) + list(overrides))


def random_params(config: ml_collections.ConfigDict, seed: int = 0, scale: float = 0.2):
    """Return random parameters in the model's tree: norm scales 1, every other leaf N(0, scale^2).

    Only the tree's shapes are traced; no initialiser runs, because compiling the model's
    initialisation takes seconds on a CPU. The velocity head is random too (the trainer
    zero-initialises it, which would make every sampled image equal its noise).
    """
    from pstroke.train.loop import make_param_init

    shapes = nn.unbox(jax.eval_shape(make_param_init(config), jax.random.PRNGKey(seed)))
    paths_and_shapes, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    rng = np.random.default_rng(seed)
    leaves = []
    for path, shape in paths_and_shapes:
        if "scale" in jax.tree_util.keystr(path):
            leaves.append(np.ones(shape.shape, np.float32))
        else:
            leaves.append((scale * rng.standard_normal(shape.shape)).astype(np.float32))
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(leaf) for leaf in leaves])


def write_workdir(path: pathlib.Path, config: ml_collections.ConfigDict, seed: int = 0, params=None) -> None:
    """Write a training workdir (config.json and a step-0 checkpoint) of a freshly initialised state.

    `params` replaces the initialised parameters, e.g. `random_params(config)`, whose random velocity
    head draws visible images.
    """
    from pstroke.train import checkpoint, optim, sharding, state
    from pstroke.train.loop import make_param_init, prepare_workdir

    folder = prepare_workdir(str(path), config)
    mesh = sharding.make_mesh(ml_collections.ConfigDict({"data": 1, "fsdp": 1, "tensor": 1}), jax.devices()[:1])
    train_state = state.init_state(make_param_init(config), optim.make_optimizer(config.train),
                                   config.train.ema_decay > 0, seed, mesh, sharding.axis_rules(config.train))
    if params is not None:
        train_state = train_state.replace(params=params)
    checkpointer = checkpoint.Checkpointer(folder / "checkpoints", every=1, keep=1, use_async=False)
    checkpointer.save(0, train_state, {}, force=True)
    checkpointer.wait()
    checkpointer.close()


def steer(steps: ModelSteps, after_text: Sequence[int | None], after_image: Sequence[int | None],
          strength: float = 1e4) -> ModelSteps:
    """Return steps whose per-row choices after a text segment and after an image are forced.

    Entry b of `after_text` (which also covers the prompt) or `after_image` is the token id that
    row b must choose there, or None to leave the model's choice. Text tokens are unaffected,
    because the rollout never decodes these marker tokens inside a text segment.
    """
    vocab = steps.text_vocab_size

    def bias_rows(choices):
        rows = [jnp.zeros((vocab,)) if choice is None else strength * jax.nn.one_hot(choice, vocab)
                for choice in choices]
        return jnp.stack(rows)

    text_bias = bias_rows(after_text)
    image_bias = bias_rows(after_image)

    def pad(bias):
        return lambda logits_width: jnp.pad(bias, ((0, 0), (0, logits_width - vocab)))

    return steps._replace(
        prefill=functools.partial(_biased_prefill, steps.prefill, pad(text_bias)),
        decode=functools.partial(_biased_decode_padded, steps.decode, pad(text_bias)),
        write_image=functools.partial(_biased_write_image_padded, steps.write_image, pad(image_bias)),
    )


def _biased_prefill(prefill, bias_for, params, cache, tokens, length):
    cache, logits = prefill(params, cache, tokens, length)
    return cache, logits + bias_for(logits.shape[-1])


def _biased_decode_padded(decode, bias_for, params, cache, token):
    cache, logits = decode(params, cache, token)
    return cache, logits + bias_for(logits.shape[-1])


def _biased_write_image_padded(write_image, bias_for, params, cache, x0):
    cache, logits = write_image(params, cache, x0)
    return cache, logits + bias_for(logits.shape[-1])
