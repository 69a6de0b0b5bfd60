"""Convert BAGEL checkpoints (`ema.safetensors` + `ae.safetensors`) to pstroke parameter trees and back.

The mapping is one-to-one and consumes every key:

- PyTorch Linear weight [out, in] -> Flax `kernel` [in, out], reshaped to the module's head layout
  (for example q_proj [heads * head_dim, hidden] -> [hidden, heads, head_dim]); biases reshaped.
- Conv weight OIHW -> HWIO; norm `weight` -> `scale`; embeddings as they are.
- Per-expert tensors (plain and `_moe_gen` names) are stacked on an expert axis (und = 0, gen = 1),
  and per-layer tensors on a leading layer axis in layer order, as `nn.scan` stores them.
- Every tensor is upcast to float32.
- The 2-D sin-cos tables (`latent_pos_embed.pos_embed`, `vit_pos_embed.pos_embed`) are not
  parameters: the model recomputes them, and `load_bagel` checks them bit-for-bit against the file.

Any missing key, unexpected key or shape mismatch raises `UserError` naming the key.
"""

import dataclasses
import math
import pathlib
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from pstroke.errors import UserError
from pstroke.model.embed import sincos_table

EXPERT_SUFFIXES = ("", "_moe_gen")  # und, gen
LLM_PREFIX = "language_model.model."
VIT_PREFIX = "vit_model.vision_model."
POSITION_TABLES = ("latent_pos_embed.pos_embed", "vit_pos_embed.pos_embed")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One pstroke parameter and the checkpoint key(s) it is built from.

    Fields:
      path: the parameter's path in the pstroke tree.
      template: checkpoint key, with `{layer}` and/or `{expert}` placeholders for stacked tensors.
      kind: "linear" (transpose [out, in] -> [in, out]), "conv" (OIHW -> HWIO) or "copy".
      in_rank: number of leading axes of a linear kernel that form the input (1 or 2).
      layers: size of the leading layer axis, 0 if not stacked over layers.
      experts: True when stacked over the two experts (after the layer axis).
    """

    path: tuple[str, ...]
    template: str
    kind: str
    in_rank: int = 1
    layers: int = 0
    experts: bool = False

    def keys(self) -> Iterator[tuple[tuple[int, ...], str]]:
        """Yield (index into the stacked parameter, checkpoint key) pairs in stacking order."""
        layer_range = range(self.layers) if self.layers else [None]
        expert_range = range(2) if self.experts else [None]
        for layer in layer_range:
            for expert in expert_range:
                index = tuple(i for i in (layer, expert) if i is not None)
                suffix = EXPERT_SUFFIXES[expert] if expert is not None else ""
                yield index, self.template.format(layer=layer, expert=suffix)


def _llm_entries(llm) -> list[Entry]:
    layer = LLM_PREFIX + "layers.{layer}."
    stacked = dict(layers=llm.num_layers, experts=True)
    entries = [
        Entry(("language_model", "embed_tokens", "embedding"), LLM_PREFIX + "embed_tokens.weight", "copy"),
        Entry(("language_model", "lm_head", "kernel"), "language_model.lm_head.weight", "linear"),
        Entry(("language_model", "norm", "scale"), LLM_PREFIX + "norm{expert}.weight", "copy", experts=True),
    ]
    for name in ("input_layernorm", "post_attention_layernorm"):
        entries.append(Entry(("language_model", "layers", name, "scale"), layer + name + "{expert}.weight", "copy",
                             **stacked))
    for name in ("q_proj", "k_proj", "v_proj"):
        base = ("language_model", "layers", "self_attn", name)
        entries.append(Entry(base + ("kernel",), layer + f"self_attn.{name}{{expert}}.weight", "linear", **stacked))
        entries.append(Entry(base + ("bias",), layer + f"self_attn.{name}{{expert}}.bias", "copy", **stacked))
    entries.append(Entry(("language_model", "layers", "self_attn", "o_proj", "kernel"),
                         layer + "self_attn.o_proj{expert}.weight", "linear", in_rank=2, **stacked))
    if llm.qk_norm:
        for name in ("q_norm", "k_norm"):
            entries.append(Entry(("language_model", "layers", "self_attn", name, "scale"),
                                 layer + f"self_attn.{name}{{expert}}.weight", "copy", **stacked))
    for name in ("gate_proj", "up_proj", "down_proj"):
        entries.append(Entry(("language_model", "layers", "mlp", name, "kernel"),
                             layer + f"mlp{{expert}}.{name}.weight", "linear", **stacked))
    return entries


def _linear(path: tuple[str, ...], key: str, in_rank: int = 1, layers: int = 0) -> list[Entry]:
    return [Entry(path + ("kernel",), key + ".weight", "linear", in_rank=in_rank, layers=layers),
            Entry(path + ("bias",), key + ".bias", "copy", layers=layers)]


def _vit_entries(vit) -> list[Entry]:
    layer = VIT_PREFIX + "encoder.layers.{layer}."
    n = vit.num_layers
    entries = _linear(("vit_model", "patch_embedding"), VIT_PREFIX + "embeddings.patch_embedding")
    entries.append(Entry(("vit_model", "position_embedding", "embedding"),
                         VIT_PREFIX + "embeddings.position_embedding.weight", "copy"))
    for name in ("layer_norm1", "layer_norm2"):
        entries.append(Entry(("vit_model", "layers", name, "scale"), layer + name + ".weight", "copy", layers=n))
        entries.append(Entry(("vit_model", "layers", name, "bias"), layer + name + ".bias", "copy", layers=n))
    for name in ("q_proj", "k_proj", "v_proj"):
        entries += _linear(("vit_model", "layers", name), layer + "self_attn." + name, layers=n)
    entries += _linear(("vit_model", "layers", "out_proj"), layer + "self_attn.out_proj", in_rank=2, layers=n)
    for name in ("fc1", "fc2"):
        entries += _linear(("vit_model", "layers", name), layer + "mlp." + name, layers=n)
    entries.append(Entry(("vit_model", "post_layernorm", "scale"), VIT_PREFIX + "post_layernorm.weight", "copy"))
    entries.append(Entry(("vit_model", "post_layernorm", "bias"), VIT_PREFIX + "post_layernorm.bias", "copy"))
    entries += _linear(("connector", "fc1"), "connector.fc1")
    entries += _linear(("connector", "fc2"), "connector.fc2")
    return entries


def ema_entries(model_config) -> list[Entry]:
    """Return the entries of every parameter of `UnifiedModel(model_config)`."""
    entries = _llm_entries(model_config.llm)
    entries += _linear(("time_embedder", "mlp.0"), "time_embedder.mlp.0")
    entries += _linear(("time_embedder", "mlp.2"), "time_embedder.mlp.2")
    entries += _linear(("vae2llm",), "vae2llm")
    entries += _linear(("llm2vae",), "llm2vae")
    if model_config.vit.enabled:
        entries += _vit_entries(model_config.vit)
    return entries


def ae_entries(vae_config) -> list[Entry]:
    """Return the entries of every `AutoEncoder` parameter; module paths mirror the checkpoint keys."""
    from pstroke.model.vae import AutoEncoder

    shapes = jax.eval_shape(lambda: AutoEncoder(vae_config).init(
        jax.random.key(0), jnp.zeros((1, 16, 16, vae_config.in_channels)))["params"])
    entries = []
    for path, leaf in traverse_util.flatten_dict(shapes).items():
        base = ".".join(path[:-1])
        if path[-1] == "kernel":
            entries.append(Entry(path, base + ".weight", "conv"))
        elif path[-1] == "scale":
            entries.append(Entry(path, base + ".weight", "copy"))
        else:
            entries.append(Entry(path, base + "." + path[-1], "copy"))
    return entries


def _to_pstroke(tensor: np.ndarray, entry: Entry, target_shape: tuple[int, ...]) -> np.ndarray:
    if entry.kind == "linear":
        tensor = tensor.T
    elif entry.kind == "conv":
        tensor = tensor.transpose(2, 3, 1, 0)
    return tensor.reshape(target_shape)


def _to_bagel(value: np.ndarray, entry: Entry) -> np.ndarray:
    if entry.kind == "linear":
        in_size = math.prod(value.shape[:entry.in_rank])
        return value.reshape(in_size, -1).T
    if entry.kind == "conv":
        return value.transpose(3, 2, 0, 1)
    return value


def convert(tensors: dict[str, Any], entries: list[Entry], param_shapes: dict, source: str) -> dict:
    """Build the nested float32 parameter tree of `entries` from checkpoint `tensors`.

    `param_shapes` is the (nested) tree of expected parameter shapes. Raises UserError naming the
    key on a missing key, an unexpected key or a shape mismatch.
    """
    flat_shapes = traverse_util.flatten_dict(param_shapes)
    used = set()
    flat = {}
    for entry in entries:
        if entry.path not in flat_shapes:
            raise ValueError(f"entry {'/'.join(entry.path)} has no parameter in the model")
        full_shape = tuple(flat_shapes[entry.path])
        stack_rank = int(bool(entry.layers)) + int(entry.experts)
        item_shape = full_shape[stack_rank:]
        out = np.zeros(full_shape, np.float32)
        for index, key in entry.keys():
            if key not in tensors:
                raise UserError(f"missing key {key!r} in {source}: the model config expects it "
                                f"(parameter {'/'.join(entry.path)}); check that the config matches the checkpoint")
            tensor = np.asarray(tensors[key], np.float32)
            expected = _bagel_shape(item_shape, entry)
            if tensor.shape != expected:
                raise UserError(f"shape mismatch for key {key!r} in {source}: file has {list(tensor.shape)}, "
                                f"the model config expects {list(expected)}")
            out[index] = _to_pstroke(tensor, entry, item_shape)
            used.add(key)
        flat[entry.path] = out

    unexpected = sorted(set(tensors) - used - set(POSITION_TABLES))
    if unexpected:
        raise UserError(f"unexpected key {unexpected[0]!r} in {source} ({len(unexpected)} unused keys); "
                        "the model config does not use it, check that the config matches the checkpoint")
    missing = sorted(set(flat_shapes) - set(flat))
    if missing:
        raise ValueError(f"no checkpoint entry for parameter {'/'.join(missing[0])}")
    return traverse_util.unflatten_dict(flat)


def _bagel_shape(item_shape: tuple[int, ...], entry: Entry) -> tuple[int, ...]:
    """Return the checkpoint shape of one (unstacked) tensor whose pstroke shape is `item_shape`."""
    if entry.kind == "linear":
        in_size = math.prod(item_shape[:entry.in_rank])
        return (math.prod(item_shape[entry.in_rank:]), in_size)
    if entry.kind == "conv":
        return (item_shape[3], item_shape[2], item_shape[0], item_shape[1])
    return tuple(item_shape) if not _is_flat_copy(entry) else (math.prod(item_shape),)


def _is_flat_copy(entry: Entry) -> bool:
    """True for copied tensors that the module stores reshaped (attention biases)."""
    return entry.kind == "copy" and entry.path[-1] == "bias" and entry.path[-2] in (
        "q_proj", "k_proj", "v_proj")


def to_bagel(params: dict, entries: list[Entry]) -> dict[str, np.ndarray]:
    """Invert `convert`: return the checkpoint key -> float32 tensor dict of a pstroke tree."""
    flat = traverse_util.flatten_dict(params)
    tensors = {}
    for entry in entries:
        value = np.asarray(flat[entry.path], np.float32)
        stack_rank = int(bool(entry.layers)) + int(entry.experts)
        for index, key in entry.keys():
            item = value[index] if index else value
            expected = _bagel_shape(value.shape[stack_rank:], entry)
            tensors[key] = _to_bagel(item, entry).reshape(expected)
    return tensors


def bagel_shapes(param_shapes: dict, entries: list[Entry]) -> dict[str, tuple[int, ...]]:
    """Return the checkpoint key -> shape table implied by a tree of parameter shapes (no data)."""
    flat = traverse_util.flatten_dict(param_shapes)
    table = {}
    for entry in entries:
        stack_rank = int(bool(entry.layers)) + int(entry.experts)
        item_shape = tuple(flat[entry.path])[stack_rank:]
        for _, key in entry.keys():
            table[key] = _bagel_shape(item_shape, entry)
    return table


def read_safetensors(path: pathlib.Path) -> dict[str, np.ndarray]:
    """Read every tensor of a safetensors file as float32 numpy (bfloat16 is upcast exactly)."""
    from safetensors.flax import load_file

    if not path.is_file():
        raise UserError(f"checkpoint file not found: {str(path)!r}; pass the folder that contains it")
    return {key: np.asarray(value.astype(jnp.float32)) for key, value in load_file(str(path)).items()}


def check_position_tables(tensors: dict[str, np.ndarray], model_config, source: str) -> None:
    """Check the stored sin-cos tables against the recomputed ones, bit for bit.

    Raises UserError naming the table when a stored table differs in shape or value.
    """
    hidden = model_config.llm.hidden_size
    expected = {"latent_pos_embed.pos_embed": sincos_table(model_config.max_latent_size, hidden)}
    if model_config.vit.enabled:
        expected["vit_pos_embed.pos_embed"] = sincos_table(model_config.vit.max_patches_per_side, hidden)
    for key, table in expected.items():
        if key not in tensors:
            raise UserError(f"missing key {key!r} in {source}")
        stored = tensors[key]
        if stored.shape != table.shape:
            raise UserError(f"shape mismatch for key {key!r} in {source}: file has {list(stored.shape)}, "
                            f"the model config expects {list(table.shape)} (max_latent_size or hidden_size differ)")
        if not np.array_equal(stored, table):
            raise UserError(f"stored table {key!r} in {source} differs from the recomputed sin-cos table")


def model_param_shapes(model_config) -> dict:
    """Return the nested tree of parameter shapes of `UnifiedModel(model_config)` (no memory used)."""
    from flax import linen as nn

    from pstroke.model.unified import UnifiedModel

    model = UnifiedModel(model_config)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), _shape_batch(model_config)))
    return jax.tree_util.tree_map(lambda x: tuple(x.shape), nn.unbox(variables["params"]))


def ae_param_shapes(vae_config) -> dict:
    """Return the nested tree of parameter shapes of `AutoEncoder(vae_config)` (no memory used)."""
    from pstroke.model.vae import AutoEncoder

    shapes = jax.eval_shape(lambda: AutoEncoder(vae_config).init(
        jax.random.key(0), jnp.zeros((1, 16, 16, vae_config.in_channels)))["params"])
    return jax.tree_util.tree_map(lambda x: tuple(x.shape), shapes)


def _shape_batch(model_config) -> dict:
    from pstroke.batch import empty_batch
    from pstroke.model.unified import latent_dim

    vit_dim = 3 * model_config.vit.patch_size ** 2 if model_config.vit.enabled else 0
    batch = empty_batch(1, 4, latent_dim(model_config), vit_dim)
    batch["noise"] = np.zeros_like(batch["latent"])
    return batch


def load_bagel(folder: pathlib.Path, model_config, ema_name: str = "ema.safetensors",
               ae_name: str = "ae.safetensors") -> tuple[dict, dict]:
    """Load (model params, autoencoder params) from a BAGEL checkpoint folder, all float32."""
    folder = pathlib.Path(folder)
    ema = read_safetensors(folder / ema_name)
    check_position_tables(ema, model_config, ema_name)
    params = convert(ema, ema_entries(model_config), model_param_shapes(model_config), ema_name)

    ae = read_safetensors(folder / ae_name)
    ae_params = convert(ae, ae_entries(model_config.vae), ae_param_shapes(model_config.vae), ae_name)
    return params, ae_params
