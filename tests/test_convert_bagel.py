"""BAGEL checkpoint conversion: round trip, error messages, position tables and the 7B key table."""

import math

import jax
import numpy as np
import pytest

from pstroke.config import load_config
from pstroke.errors import UserError
from pstroke.model import convert
from pstroke.model.embed import sincos_table
from pstroke.parity import load_fixture


@pytest.fixture(scope="module")
def tiny(assets_dir):
    """(fixture, ema tensors, ae tensors) of fixture set A."""
    folder = assets_dir / "bagel_tiny_a"
    return (load_fixture(folder), convert.read_safetensors(folder / "weights_ema.safetensors"),
            convert.read_safetensors(folder / "weights_ae.safetensors"))


def test_ema_round_trip_is_exact(tiny):
    fixture, ema, _ = tiny

    back = convert.to_bagel(fixture.params, convert.ema_entries(fixture.model_config))

    assert set(back) == set(ema) - set(convert.POSITION_TABLES)
    for key, value in back.items():
        np.testing.assert_array_equal(value, ema[key], err_msg=key)


def test_ae_round_trip_is_exact(tiny):
    fixture, _, ae = tiny

    back = convert.to_bagel(fixture.ae_params, convert.ae_entries(fixture.model_config.vae))

    assert set(back) == set(ae)
    for key, value in back.items():
        np.testing.assert_array_equal(value, ae[key], err_msg=key)


def test_linear_is_transposed_and_stacked(tiny):
    fixture, ema, _ = tiny
    kernel = fixture.params["language_model"]["layers"]["self_attn"]["q_proj"]["kernel"]
    gen_weight = ema["language_model.model.layers.1.self_attn.q_proj_moe_gen.weight"]

    np.testing.assert_array_equal(kernel[1, 1].reshape(gen_weight.shape[1], -1), gen_weight.T)


def _convert(fixture, tensors):
    cfg = fixture.model_config
    return convert.convert(tensors, convert.ema_entries(cfg), convert.model_param_shapes(cfg), "ema.safetensors")


def test_missing_key_is_named(tiny):
    fixture, ema, _ = tiny
    tensors = dict(ema)
    del tensors["language_model.model.layers.1.mlp_moe_gen.up_proj.weight"]

    with pytest.raises(UserError, match=r"missing key 'language_model\.model\.layers\.1\.mlp_moe_gen\.up_proj"):
        _convert(fixture, tensors)


def test_unexpected_key_is_named(tiny):
    fixture, ema, _ = tiny
    tensors = dict(ema, **{"language_model.model.layers.2.mlp.up_proj.weight": np.zeros((128, 64), np.float32)})

    with pytest.raises(UserError, match=r"unexpected key 'language_model\.model\.layers\.2\.mlp\.up_proj"):
        _convert(fixture, tensors)


def test_shape_mismatch_is_named(tiny):
    fixture, ema, _ = tiny
    tensors = dict(ema, **{"vae2llm.weight": np.zeros((64, 32), np.float32)})

    with pytest.raises(UserError, match=r"shape mismatch for key 'vae2llm\.weight'.*\[64, 32\].*\[64, 64\]"):
        _convert(fixture, tensors)


def test_recomputed_tables_equal_stored(tiny):
    _, ema, _ = tiny

    np.testing.assert_array_equal(sincos_table(8, 64), ema["latent_pos_embed.pos_embed"])
    np.testing.assert_array_equal(sincos_table(70, 64), ema["vit_pos_embed.pos_embed"])


def test_changed_stored_table_is_rejected(tiny):
    fixture, ema, _ = tiny
    table = ema["latent_pos_embed.pos_embed"].copy()
    table[3, 5] += 1.0

    with pytest.raises(UserError, match="latent_pos_embed.pos_embed"):
        convert.check_position_tables(dict(ema, **{"latent_pos_embed.pos_embed": table}), fixture.model_config, "ema")


# Checkpoint shapes of the released BAGEL-7B-MoT, per key pattern ({i} = layer, {e} = "" or "_moe_gen").
BAGEL_7B_EMA = {
    "language_model.model.embed_tokens.weight": (152064, 3584),
    "language_model.lm_head.weight": (152064, 3584),
    "language_model.model.norm{e}.weight": (3584,),
    "language_model.model.layers.{i}.self_attn.q_proj{e}.weight": (3584, 3584),
    "language_model.model.layers.{i}.self_attn.q_proj{e}.bias": (3584,),
    "language_model.model.layers.{i}.self_attn.k_proj{e}.weight": (512, 3584),
    "language_model.model.layers.{i}.self_attn.k_proj{e}.bias": (512,),
    "language_model.model.layers.{i}.self_attn.v_proj{e}.weight": (512, 3584),
    "language_model.model.layers.{i}.self_attn.v_proj{e}.bias": (512,),
    "language_model.model.layers.{i}.self_attn.o_proj{e}.weight": (3584, 3584),
    "language_model.model.layers.{i}.self_attn.q_norm{e}.weight": (128,),
    "language_model.model.layers.{i}.self_attn.k_norm{e}.weight": (128,),
    "language_model.model.layers.{i}.mlp{e}.gate_proj.weight": (18944, 3584),
    "language_model.model.layers.{i}.mlp{e}.up_proj.weight": (18944, 3584),
    "language_model.model.layers.{i}.mlp{e}.down_proj.weight": (3584, 18944),
    "language_model.model.layers.{i}.input_layernorm{e}.weight": (3584,),
    "language_model.model.layers.{i}.post_attention_layernorm{e}.weight": (3584,),
    "time_embedder.mlp.0.weight": (3584, 256),
    "time_embedder.mlp.0.bias": (3584,),
    "time_embedder.mlp.2.weight": (3584, 3584),
    "time_embedder.mlp.2.bias": (3584,),
    "vae2llm.weight": (3584, 64),
    "vae2llm.bias": (3584,),
    "llm2vae.weight": (64, 3584),
    "llm2vae.bias": (64,),
    "vit_model.vision_model.embeddings.patch_embedding.weight": (1152, 588),
    "vit_model.vision_model.embeddings.patch_embedding.bias": (1152,),
    "vit_model.vision_model.embeddings.position_embedding.weight": (4900, 1152),
    "vit_model.vision_model.post_layernorm.weight": (1152,),
    "vit_model.vision_model.post_layernorm.bias": (1152,),
    "connector.fc1.weight": (3584, 1152),
    "connector.fc1.bias": (3584,),
    "connector.fc2.weight": (3584, 3584),
    "connector.fc2.bias": (3584,),
}
BAGEL_7B_VIT_LAYER = {
    **{f"self_attn.{name}.weight": (1152, 1152) for name in ("q_proj", "k_proj", "v_proj", "out_proj")},
    **{f"self_attn.{name}.bias": (1152,) for name in ("q_proj", "k_proj", "v_proj", "out_proj")},
    **{f"{name}.{part}": (1152,) for name in ("layer_norm1", "layer_norm2") for part in ("weight", "bias")},
    "mlp.fc1.weight": (4304, 1152), "mlp.fc1.bias": (4304,),
    "mlp.fc2.weight": (1152, 4304), "mlp.fc2.bias": (1152,),
}
BAGEL_7B_TABLE_SIZE = 4096 * 3584 + 4900 * 3584
BAGEL_7B_EMA_PARAMETERS = 14_607_260_128  # every tensor of ema.safetensors, both tables included


def _expected_7b_keys() -> dict:
    table = {}
    for pattern, shape in BAGEL_7B_EMA.items():
        for layer in range(28) if "{i}" in pattern else [0]:
            for expert in ("", "_moe_gen") if "{e}" in pattern else [""]:
                table[pattern.format(i=layer, e=expert)] = shape
    for layer in range(26):
        for name, shape in BAGEL_7B_VIT_LAYER.items():
            table[f"vit_model.vision_model.encoder.layers.{layer}.{name}"] = shape
    return table


@pytest.fixture(scope="module")
def bagel_7b():
    config = load_config("configs/bagel_7b.py")
    return config, convert.model_param_shapes(config.model)


def test_bagel_7b_key_shapes_match_checkpoint(bagel_7b):
    config, shapes = bagel_7b

    table = convert.bagel_shapes(shapes, convert.ema_entries(config.model))

    assert len(table) == 1221
    assert table == _expected_7b_keys()


def test_bagel_7b_parameter_count(bagel_7b):
    _, shapes = bagel_7b
    leaves = jax.tree_util.tree_leaves(shapes, is_leaf=lambda x: isinstance(x, tuple))

    count = sum(math.prod(shape) for shape in leaves)

    assert count + BAGEL_7B_TABLE_SIZE == BAGEL_7B_EMA_PARAMETERS


def test_bagel_7b_autoencoder_keys(bagel_7b):
    config, _ = bagel_7b

    table = convert.bagel_shapes(convert.ae_param_shapes(config.model.vae), convert.ae_entries(config.model.vae))

    assert len(table) == 244
    assert table["encoder.conv_in.weight"] == (128, 3, 3, 3)
    assert table["encoder.conv_out.weight"] == (32, 512, 3, 3)
    assert table["encoder.down.2.block.0.nin_shortcut.weight"] == (512, 256, 1, 1)
    assert table["decoder.conv_in.weight"] == (512, 16, 3, 3)
    assert table["decoder.up.0.block.0.nin_shortcut.weight"] == (128, 256, 1, 1)
    assert table["decoder.up.3.upsample.conv.weight"] == (512, 512, 3, 3)
    assert table["decoder.conv_out.weight"] == (3, 128, 3, 3)
    assert "decoder.up.0.upsample.conv.weight" not in table
