"""Training with the BAGEL model layout (ViT tower on, VAE codec) at tiny sizes, sharded over 8 devices."""

import json

import jax
import numpy as np
import pytest

from pstroke.config import load_config
from pstroke.errors import UserError
from pstroke.train import loop, sharding

# configs/bagel_7b.py with every size shrunk. The layout (ViT, VAE codec, gather routing) is kept.
# NOTE: synthetic batches contain no ViT tokens, so the ViT runs at init only, not in the train step.
TINY_BAGEL = [
    "data.source=synthetic", "data.seq_len=256", "world.canvas=32", "model.max_latent_size=4",
    "model.compute_dtype=float32", "model.llm.vocab_size=512", "model.llm.hidden_size=64",
    "model.llm.intermediate_size=128", "model.llm.num_layers=2", "model.llm.num_heads=4",
    "model.llm.num_kv_heads=2", "model.llm.head_dim=16", "model.vit.hidden_size=32",
    "model.vit.intermediate_size=64", "model.vit.num_layers=1", "model.vit.num_heads=2", "model.vae.ch=8",
    "train.batch_size=8", "train.steps=2", "train.log_every=1",
    # Every mesh axis is above 1, so each logical axis name of the ViT weights maps onto a real mesh axis.
    "mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2",
]


def test_bagel_layout_trains_two_steps(tmp_path):
    config = load_config("configs/bagel_7b.py", TINY_BAGEL)
    assert config.model.vit.enabled and config.model.codec == "vae"

    metrics = loop.train(config, str(tmp_path))

    assert np.isfinite(metrics["loss"]), metrics
    assert metrics["loss"] > 0, metrics
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in logged] == [1, 2]
    assert (tmp_path / "checkpoints" / "2").is_dir()


def test_bagel_layout_vit_attention_shapes():
    config = load_config("configs/bagel_7b.py", TINY_BAGEL)
    vit = config.model.vit
    parts = loop.build(config, sharding.make_mesh(config.mesh, jax.devices()))

    params = parts.abstract_state.params["vit_model"]["layers"]
    specs = parts.shardings.params["vit_model"]["layers"]

    head_dim = vit.hidden_size // vit.num_heads
    assert params["q_proj"]["kernel"].shape == (vit.num_layers, vit.hidden_size, vit.num_heads, head_dim)
    assert params["q_proj"]["bias"].shape == (vit.num_layers, vit.num_heads, head_dim)
    assert params["out_proj"]["kernel"].shape == (vit.num_layers, vit.num_heads, head_dim, vit.hidden_size)
    assert params["out_proj"]["bias"].shape == (vit.num_layers, vit.hidden_size)
    # Heads are split over the tensor axis, in the projections and in the output projection alike.
    assert specs["q_proj"]["kernel"].spec[2] == "tensor", specs["q_proj"]["kernel"].spec
    assert specs["out_proj"]["kernel"].spec[1] == "tensor", specs["out_proj"]["kernel"].spec


def test_bagel_config_rejects_a_variant():
    with pytest.raises(UserError, match="unknown config variant 'foo'"):
        load_config("configs/bagel_7b.py:foo")
