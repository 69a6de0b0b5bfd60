"""Parity cases of `python -m pstroke.parity`: each runs the JAX model on a fixture's inputs.

Case functions take (fixture, report) and call `report.compare(name, got, expected)` for every
output. Sizes come from the fixture's config.json, never from constants here.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pstroke import batch as batch_format
from pstroke.model import convert
from pstroke.model.embed import patchify_latent, unpatchify_latent
from pstroke.model.losses import losses, token_losses
from pstroke.model.unified import UnifiedModel
from pstroke.model.vae import AutoEncoder
from pstroke.model.vit import patchify_image, vit_positions

MODES = {"causal": batch_format.MODE_CAUSAL, "full": batch_format.MODE_FULL, "noise": batch_format.MODE_NOISE}


def _model(fixture):
    return UnifiedModel(fixture.model_config)


def _apply(fixture, method, *args):
    return _model(fixture).apply({"params": fixture.params}, *args, method=method)


def _vit_outputs(fixture, patches, positions, mask):
    """Return (embeddings, features, connector_out, llm_tokens) of ViT patches [1, N, P]."""
    model = _model(fixture)

    def capture(module, name):
        return name == "__call__" and module.name in ("patch_embedding", "position_embedding")

    features, state = model.apply({"params": fixture.params}, patches, positions, mask,
                                  method=UnifiedModel.vit_features, capture_intermediates=capture)
    captured = state["intermediates"]["vit_model"]
    embeddings = captured["patch_embedding"]["__call__"][0] + captured["position_embedding"]["__call__"][0]
    connector_out = model.apply({"params": fixture.params}, features, method=lambda m, x: m.connector(x))
    llm_tokens = model.apply({"params": fixture.params}, patches, positions, mask, method=UnifiedModel.embed_vit)
    return embeddings, features, connector_out, llm_tokens


def case_vit(fixture, report):
    vit = fixture.model_config.vit
    pixels = fixture.get("vit.pixels")
    patches = patchify_image(jnp.asarray(pixels), vit.patch_size)
    grid = (pixels.shape[1] // vit.patch_size, pixels.shape[2] // vit.patch_size)
    positions = vit_positions(grid, vit.max_patches_per_side)
    report.compare("vit.patches", patches, fixture.get("vit.patches"))
    report.compare("vit.position_ids", positions, fixture.get("vit.position_ids"))

    mask = jnp.ones((1, patches.shape[0], patches.shape[0]), bool)
    outputs = _vit_outputs(fixture, patches[None], positions[None], mask)
    for name, value in zip(("embeddings", "features", "connector_out", "llm_tokens"), outputs):
        report.compare(f"vit.{name}", value[0], fixture.get(f"vit.{name}"))


def case_vit_multi(fixture, report):
    vit = fixture.model_config.vit
    images = [fixture.get("vit_multi.pixels_1"), fixture.get("vit_multi.pixels_2")]
    patches = jnp.concatenate([patchify_image(jnp.asarray(image), vit.patch_size) for image in images])
    positions = jnp.concatenate([
        vit_positions((image.shape[1] // vit.patch_size, image.shape[2] // vit.patch_size), vit.max_patches_per_side)
        for image in images])
    report.compare("vit_multi.patches", patches, fixture.get("vit_multi.patches"))
    report.compare("vit_multi.position_ids", positions, fixture.get("vit_multi.position_ids"))

    bounds = fixture.get("vit_multi.cu_seqlens")
    image_id = np.searchsorted(bounds[1:], np.arange(patches.shape[0]), side="right")
    mask = jnp.asarray(image_id[:, None] == image_id[None, :])[None]
    features = _apply(fixture, UnifiedModel.vit_features, patches[None], positions[None], mask)
    report.compare("vit_multi.features", features[0], fixture.get("vit_multi.features"))


def _vae(fixture):
    return AutoEncoder(fixture.model_config.vae)


def vae_encode(fixture, image_nchw):
    """Encode NCHW images to scaled posterior-mean latents, NCHW."""
    latent = _vae(fixture).apply({"params": fixture.ae_params}, jnp.asarray(image_nchw).transpose(0, 2, 3, 1),
                                 method=AutoEncoder.encode)
    return latent.transpose(0, 3, 1, 2)


def vae_decode(fixture, latent_nchw):
    """Decode NCHW scaled latents to raw NCHW images."""
    image = _vae(fixture).apply({"params": fixture.ae_params}, jnp.asarray(latent_nchw).transpose(0, 2, 3, 1),
                                method=AutoEncoder.decode)
    return image.transpose(0, 3, 1, 2)


def case_vae(fixture, report):
    image = fixture.get("vae.image")
    moments = _vae(fixture).apply({"params": fixture.ae_params}, jnp.asarray(image).transpose(0, 2, 3, 1),
                                  method=AutoEncoder.moments)
    report.compare("vae.encoder_moments", moments.transpose(0, 3, 1, 2), fixture.get("vae.encoder_moments"))
    latent = vae_encode(fixture, image)
    report.compare("vae.latent", latent, fixture.get("vae.latent"))
    report.compare("vae.decode_out", vae_decode(fixture, fixture.get("vae.decode_in")), fixture.get("vae.decode_out"))
    report.compare("vae.roundtrip", vae_decode(fixture, latent), fixture.get("vae.roundtrip"))


def train_batch(fixture) -> dict:
    """Build the packed pstroke batch (one row) of the `train` case from its reference inputs."""
    g = fixture.get
    cfg = fixture.model_config
    length = int(g("train.sequence_length"))
    latent_dim = cfg.latent_patch_size ** 2 * cfg.latent_channels
    batch = batch_format.empty_batch(1, length, latent_dim, 3 * cfg.vit.patch_size ** 2)
    batch["noise"] = np.zeros_like(batch["latent"])

    split_lens = g("train.split_lens")
    split_id = np.repeat(np.arange(len(split_lens)), split_lens)
    batch["split_id"][0] = split_id
    batch["split_mode"][0] = np.array([MODES[str(mode)] for mode in g("train.attn_modes")])[split_id]
    batch["sample_id"][0] = 1
    batch["expert"][0] = g("train.expert")
    batch["position"][0] = g("train.packed_position_ids")
    batch["token_id"][0, g("train.packed_text_indexes")] = g("train.packed_text_ids")

    vae_index = g("train.packed_vae_token_indexes")
    batch["kind"][0, vae_index] = batch_format.KIND_LATENT
    batch["latent"][0, vae_index] = g("train.packed_latent_clean")
    batch["noise"][0, vae_index] = g("train.noise")
    batch["timestep"][0, vae_index] = g("train.packed_t")
    batch["latent_pos"][0, vae_index] = g("train.packed_latent_position_ids")

    vit_index = g("train.packed_vit_token_indexes")
    batch["kind"][0, vit_index] = batch_format.KIND_VIT
    batch["vit_patch"][0, vit_index] = g("train.packed_vit_tokens")
    batch["vit_pos"][0, vit_index] = g("train.packed_vit_position_ids")

    ce_index = g("train.ce_loss_indexes")
    batch["ce_label"][0, ce_index] = g("train.packed_label_ids")
    batch["ce_weight"][0, ce_index] = 1.0
    batch["mse_weight"][0, g("train.mse_loss_indexes")] = 1.0
    return batch


def case_train(fixture, report):
    g = fixture.get
    cfg = fixture.model_config
    batch = train_batch(fixture)

    mask = batch_format.attention_allowed(batch["sample_id"], batch["split_id"], batch["split_mode"])
    report.compare("train.attn_allowed", mask[0], g("train.attn_allowed"))

    latents = vae_encode(fixture, g("train.vae_pixels"))
    report.compare("train.padded_latent", latents, g("train.padded_latent"))
    clean = jnp.concatenate([patchify_latent(latent, cfg.latent_patch_size) for latent in jnp.asarray(
        g("train.padded_latent"))])
    report.compare("train.packed_latent_clean", clean, g("train.packed_latent_clean"))
    report.compare("train.packed_t", jax.nn.sigmoid(jnp.asarray(g("train.packed_timesteps_logit"))), g("train.packed_t"))
    time_embed = _apply(fixture, lambda m, t: m.time_embedder(t), jnp.asarray(g("train.packed_t")))
    report.compare("train.time_embed", time_embed, g("train.time_embed"))

    outputs = _model(fixture).apply({"params": fixture.params}, batch, return_layers=True)
    ce_index, mse_index = g("train.ce_loss_indexes"), g("train.mse_loss_indexes")
    report.compare("train.llm_input", outputs["llm_input"][0], g("train.llm_input"))
    report.compare("train.layer_outputs", outputs["layer_outputs"][:, 0], g("train.layer_outputs"))
    report.compare("train.llm_output", outputs["hidden"][0], g("train.llm_output"))
    report.compare("train.ce_logits", outputs["logits"][0, ce_index], g("train.ce_logits"))
    ce_token, _ = token_losses(outputs, batch)
    report.compare("train.ce", ce_token[0, ce_index], g("train.ce"))
    report.compare("train.mse_preds", outputs["velocity"][0, mse_index], g("train.mse_preds"))
    target = batch["noise"][0, mse_index] - batch["latent"][0, mse_index]
    report.compare("train.mse", jnp.square(outputs["velocity"][0, mse_index] - target), g("train.mse"))
    loss, metrics = losses(outputs, batch)
    report.compare("train.ce_loss", metrics["ce"], g("train.ce_loss"))
    report.compare("train.mse_loss", metrics["mse"], g("train.mse_loss"))
    report.compare("train.loss", loss, g("train.loss"))

    def loss_fn(params):
        return losses(_model(fixture).apply({"params": params}, batch), batch)[0]

    grads = jax.grad(loss_fn)(fixture.params)
    grad_tensors = convert.to_bagel(grads, convert.ema_entries(cfg))
    prefix = "train.grad."
    for key in sorted(k for k in fixture.arrays if k.startswith(prefix)):
        report.compare(key, grad_tensors[key[len(prefix):]], g(key))


CASES = {
    "vit": case_vit,
    "vit_multi": case_vit_multi,
    "vae": case_vae,
    "train": case_train,
}
