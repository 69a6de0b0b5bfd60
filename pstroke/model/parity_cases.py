"""Parity cases of `python -m pstroke.parity`: each runs the JAX model on a fixture's inputs.

Case functions take (fixture, report) and call `report.compare(name, got, expected)` for every
output. Sizes come from the fixture's config.json, never from constants here.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from pstroke import batch as batch_format
from pstroke.model import convert
from pstroke.model import cache as cache_lib
from pstroke.model.embed import latent_positions, patchify_latent, unpatchify_latent
from pstroke.model.losses import losses, token_losses
from pstroke.model.unified import UnifiedModel
from pstroke.model.vae import AutoEncoder
from pstroke.model.vit import patchify_image, vit_positions

MODES = {"causal": batch_format.MODE_CAUSAL, "full": batch_format.MODE_FULL, "noise": batch_format.MODE_NOISE}


_JITTED = {}


def _jit_once(fixture, name, build):
    """Return the jitted function `name` of this fixture, building it with `build()` on first use."""
    key = (id(fixture), name)
    if key not in _JITTED:
        _JITTED[key] = build()
    return _JITTED[key]


def _model(fixture):
    return UnifiedModel(fixture.model_config)


def _apply(fixture, method, *args):
    return _model(fixture).apply({"params": fixture.params}, *args, method=method)


def _vit_outputs(fixture, patches, positions, mask):
    """Return (embeddings, features, connector_out, llm_tokens) of ViT patches [1, N, P]."""
    return jax.jit(functools.partial(_vit_outputs_eager, fixture))(patches, positions, mask)


def _vit_outputs_eager(fixture, patches, positions, mask):
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
    features = jax.jit(functools.partial(_apply, fixture, UnifiedModel.vit_features))(
        patches[None], positions[None], mask)
    report.compare("vit_multi.features", features[0], fixture.get("vit_multi.features"))


def _vae(fixture):
    return AutoEncoder(fixture.model_config.vae)


def vae_encode(fixture, image_nchw):
    """Encode NCHW images to scaled posterior-mean latents, NCHW."""
    encode = _jit_once(fixture, "vae_encode", lambda: jax.jit(
        lambda params, x: _vae(fixture).apply({"params": params}, x, method=AutoEncoder.encode)))
    return encode(fixture.ae_params, jnp.asarray(image_nchw).transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def vae_decode(fixture, latent_nchw):
    """Decode NCHW scaled latents to raw NCHW images."""
    decode = _jit_once(fixture, "vae_decode", lambda: jax.jit(
        lambda params, z: _vae(fixture).apply({"params": params}, z, method=AutoEncoder.decode)))
    return decode(fixture.ae_params, jnp.asarray(latent_nchw).transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


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

    forward = _jit_once(fixture, "train_forward", lambda: jax.jit(
        lambda params, batch: _model(fixture).apply({"params": params}, batch, return_layers=True)))
    outputs = forward(fixture.params, batch)
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

    grads = jax.jit(jax.grad(loss_fn))(fixture.params)
    grad_tensors = convert.to_bagel(grads, convert.ema_entries(cfg))
    prefix = "train.grad."
    for key in sorted(k for k in fixture.arrays if k.startswith(prefix)):
        report.compare(key, grad_tensors[key[len(prefix):]], g(key))


def _fast(fixture, function):
    """Return `function` with the fixture's model config bound, jitted (static settings as static args)."""
    return _jit_once(fixture, function, lambda: cache_lib.jit_bound(function, fixture.model_config))


def _tokens(fixture) -> cache_lib.SpecialTokens:
    ids = fixture.token_ids
    return cache_lib.SpecialTokens(bos=ids["bos_token_id"], eos=ids["eos_token_id"],
                                   vision_start=ids["start_of_image"], vision_end=ids["end_of_image"])


def _capacity(fixture) -> int:
    """Return a cache capacity that fits the largest fixture context (the edit context + decoding)."""
    cfg = fixture.model_config
    cases = fixture.raw_config["case_parameters"]
    latent_side = cfg.latent_downsample * cfg.latent_patch_size
    latent_tokens = math.prod(side // latent_side for side in cases["edit_vae_hw"])
    vit_tokens = math.prod(side // cfg.vit.patch_size for side in cases["edit_vit_hw"])
    prompt = max(cases["prompt_len"], cases["edit_prompt_len"])
    return (latent_tokens + 2) + (vit_tokens + 2) + (prompt + 2) + cases["text_steps"]


def _text_context(fixture, cache, prompt_ids):
    tokens = _tokens(fixture)
    ids = jnp.concatenate([jnp.array([tokens.bos]), jnp.asarray(prompt_ids), jnp.array([tokens.eos])])[None]
    cache, _ = _fast(fixture, cache_lib.prefill_text)(fixture.params, cache, ids.astype(jnp.int32))
    return cache, ids[0]


def _compare_cache(report, prefix, fixture, cache):
    length = int(cache.length[0])
    report.compare(f"{prefix}.kv_keys", cache.keys[:, 0, :length], fixture.get(f"{prefix}.kv_keys"))
    report.compare(f"{prefix}.kv_values", cache.values[:, 0, :length], fixture.get(f"{prefix}.kv_values"))
    report.compare(f"{prefix}.kv_len", cache.length[0], fixture.get(f"{prefix}.kv_len"))
    report.compare(f"{prefix}.next_rope", cache.next_rope[0], fixture.get(f"{prefix}.next_rope"))


def _infer_text_cache(fixture):
    empty = cache_lib.empty_cache(fixture.model_config, 1, _capacity(fixture))
    return _text_context(fixture, empty, fixture.get("infer_text.prompt_ids"))


def case_infer_text(fixture, report):
    cache, ids = _infer_text_cache(fixture)
    empty = cache_lib.empty_cache(fixture.model_config, 1, _capacity(fixture))
    report.compare("infer_text.token_ids", ids, fixture.get("infer_text.token_ids"))
    report.compare("infer_text.position_ids", cache_lib.text_positions(empty, ids.shape[0])[0],
                   fixture.get("infer_text.position_ids"))
    _compare_cache(report, "infer_text", fixture, cache)


def _latent_pos(fixture, image_hw):
    cfg = fixture.model_config
    tokens_per_side = cfg.latent_downsample * cfg.latent_patch_size
    grid = (int(image_hw[0]) // tokens_per_side, int(image_hw[1]) // tokens_per_side)
    return jnp.asarray(latent_positions(grid, cfg.max_latent_size))[None], grid


def case_flow_nocfg(fixture, report):
    g = fixture.get
    cache, _ = _infer_text_cache(fixture)
    latent_pos, _ = _latent_pos(fixture, g("flow_nocfg.image_hw"))
    report.compare("flow_nocfg.latent_position_ids", latent_pos[0], g("flow_nocfg.latent_position_ids"))
    n = latent_pos.shape[1]
    report.compare("flow_nocfg.query_position_ids", jnp.full((n + 2,), cache.next_rope[0]),
                   g("flow_nocfg.query_position_ids"))
    velocity, layers = _fast(fixture, cache_lib.query_velocity)(fixture.params, cache, _tokens(fixture),
                                                jnp.asarray(g("flow_nocfg.x_t"))[None], g("flow_nocfg.t"),
                                                latent_pos, return_layers=True)
    report.compare("flow_nocfg.layer_outputs", layers[:, 0], g("flow_nocfg.layer_outputs"))
    report.compare("flow_nocfg.v", velocity[0], g("flow_nocfg.v"))


def _t2i_contexts(fixture):
    cond, _ = _infer_text_cache(fixture)
    empty = cache_lib.empty_cache(fixture.model_config, 1, _capacity(fixture))
    return cache_lib.GuidanceContexts(cond=cond, text_uncond=empty, img_uncond=cond)


def _guidance(fixture, renorm_type, interval=(0.0, 1.0)):
    # NOTE: config.json does not list the guidance scales. The fixture's cases.md states text 4.0,
    # image 1.5 and renorm_min 0.0 for every guided case, so they are fixed here.
    return cache_lib.GuidanceConfig(text_scale=4.0, img_scale=1.5, interval=tuple(float(v) for v in interval),
                                    renorm_type=renorm_type, renorm_min=0.0)


def _compare_branches(fixture, report, case, contexts, guidance, image_hw):
    g = fixture.get
    tokens = _tokens(fixture)
    x_t = jnp.asarray(g(f"{case}.x_t"))[None]
    t = g(f"{case}.t")
    latent_pos, _ = _latent_pos(fixture, image_hw)
    names = {"v_cond": contexts.cond, "v_text_uncond": contexts.text_uncond, "v_img_uncond": contexts.img_uncond}
    for name, context in names.items():
        velocity = _fast(fixture, cache_lib.query_velocity)(fixture.params, context, tokens, x_t, t, latent_pos)
        report.compare(f"{case}.{name}", velocity[0], g(f"{case}.{name}"))
    for key, context in (("query_position_ids", contexts.cond), ("text_uncond_position_ids", contexts.text_uncond),
                         ("img_uncond_position_ids", contexts.img_uncond)):
        if f"{case}.{key}" in fixture.arrays:
            report.compare(f"{case}.{key}", jnp.full((latent_pos.shape[1] + 2,), context.next_rope[0]),
                           g(f"{case}.{key}"))
    velocity, guided = _fast(fixture, cache_lib.guided_velocity)(fixture.params, contexts, tokens, x_t,
                                                 jnp.float32(t), latent_pos, guidance)
    report.compare(f"{case}.v", velocity[0], g(f"{case}.v"))


def case_flow_cfg_t2i(fixture, report):
    _compare_branches(fixture, report, "flow_cfg_t2i", _t2i_contexts(fixture), _guidance(fixture, "global"),
                      fixture.raw_config["case_parameters"]["gen_hw"])


def case_gen_image(fixture, report):
    g = fixture.get
    cfg = fixture.model_config
    contexts = _t2i_contexts(fixture)
    params = fixture.raw_config["case_parameters"]
    latent_pos, grid = _latent_pos(fixture, params["gen_hw"])
    guidance = _guidance(fixture, "global", g("gen_image.cfg_interval"))
    final, trace = _fast(fixture, cache_lib.sample_latents)(fixture.params, contexts, _tokens(fixture),
                                            jnp.asarray(g("gen_image.init_noise"))[None], latent_pos,
                                            int(g("gen_image.num_timesteps")), float(g("gen_image.timestep_shift")),
                                            guidance)
    report.compare("gen_image.step_t", trace.t, g("gen_image.step_t"))
    report.compare("gen_image.step_guided", trace.guided, g("gen_image.step_guided"))
    report.compare("gen_image.step_x", trace.x[:, 0], g("gen_image.step_x"))
    report.compare("gen_image.step_v", trace.v[:, 0], g("gen_image.step_v"))
    report.compare("gen_image.final_latent_tokens", final[0], g("gen_image.final_latent_tokens"))
    latent = unpatchify_latent(final[0], grid, cfg.latent_patch_size, cfg.latent_channels)
    report.compare("gen_image.final_latent", latent[None], g("gen_image.final_latent"))
    report.compare("gen_image.decoded", vae_decode(fixture, latent[None]), g("gen_image.decoded"))


def _compare_generation(fixture, report, case, cache):
    g = fixture.get
    steps = fixture.raw_config["case_parameters"]["text_steps"]
    report.compare(f"{case}.start_position_id", cache.next_rope, g(f"{case}.start_position_id"))
    first = jnp.array([_tokens(fixture).bos], jnp.int32)
    _, fed, logits, next_tokens = _fast(fixture, cache_lib.greedy_generate)(fixture.params, cache, first, steps)
    report.compare(f"{case}.tokens", fed[0], g(f"{case}.tokens"))
    report.compare(f"{case}.step_logits", logits[0], g(f"{case}.step_logits"))
    report.compare(f"{case}.next_tokens", next_tokens[0], g(f"{case}.next_tokens"))


def case_gen_text(fixture, report):
    cache, _ = _infer_text_cache(fixture)
    _compare_generation(fixture, report, "gen_text", cache)


def _edit_contexts(fixture):
    """Return (ctx, cfg_text_ctx, cfg_img_ctx) of the edit cases: image blocks, then the instruction."""
    g = fixture.get
    cfg = fixture.model_config
    tokens = _tokens(fixture)
    empty = cache_lib.empty_cache(cfg, 1, _capacity(fixture))

    vae_pixels = g("infer_edit.vae_pixels")
    latent = vae_encode(fixture, vae_pixels[None])[0]
    latent_tokens = patchify_latent(latent, cfg.latent_patch_size)[None]
    latent_pos, _ = _latent_pos(fixture, vae_pixels.shape[1:])
    images, _ = _fast(fixture, cache_lib.prefill_latent)(fixture.params, empty, tokens, latent_tokens, latent_pos)

    vit_pixels = g("infer_edit.vit_pixels")
    patch = cfg.vit.patch_size
    patches = patchify_image(jnp.asarray(vit_pixels), patch)[None]
    vit_pos = vit_positions((vit_pixels.shape[1] // patch, vit_pixels.shape[2] // patch),
                            cfg.vit.max_patches_per_side)[None]
    images, _ = _fast(fixture, cache_lib.prefill_vit)(fixture.params, images, tokens, patches, vit_pos)

    prompt = g("infer_edit.prompt_ids")
    context, _ = _text_context(fixture, images, prompt)
    text_only, _ = _text_context(fixture, empty, prompt)
    return context, images, text_only


def case_infer_edit(fixture, report):
    context, text_uncond, img_uncond = _edit_contexts(fixture)
    _compare_cache(report, "infer_edit.ctx", fixture, context)
    _compare_cache(report, "infer_edit.cfg_text_ctx", fixture, text_uncond)
    _compare_cache(report, "infer_edit.cfg_img_ctx", fixture, img_uncond)


def _edit_flow(renorm_type, case):
    def run_case(fixture, report):
        context, text_uncond, img_uncond = _edit_contexts(fixture)
        contexts = cache_lib.GuidanceContexts(cond=context, text_uncond=text_uncond, img_uncond=img_uncond)
        _compare_branches(fixture, report, case, contexts, _guidance(fixture, renorm_type),
                          fixture.raw_config["case_parameters"]["edit_vae_hw"])
    return run_case


def case_gen_text_edit(fixture, report):
    context, _, _ = _edit_contexts(fixture)
    _compare_generation(fixture, report, "gen_text_edit", context)


CASES = {
    "vit": case_vit,
    "vit_multi": case_vit_multi,
    "vae": case_vae,
    "train": case_train,
    "infer_text": case_infer_text,
    "flow_nocfg": case_flow_nocfg,
    "flow_cfg_t2i": case_flow_cfg_t2i,
    "gen_image": case_gen_image,
    "gen_text": case_gen_text,
    "infer_edit": case_infer_edit,
    "flow_edit_text_channel": _edit_flow("text_channel", "flow_edit_text_channel"),
    "flow_edit_global": _edit_flow("global", "flow_edit_global"),
    "gen_text_edit": case_gen_text_edit,
}
