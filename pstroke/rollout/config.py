"""Sampling settings of the interleaved rollout."""

import ml_collections


def default_config() -> ml_collections.ConfigDict:
    """Return the sample section of a config.

    The guidance fields follow BAGEL's interleaved-inference names. A guidance scale of 1.0 turns
    its branch off, and the rollout then compiles without it.
    """
    config = ml_collections.ConfigDict()
    config.max_rounds = 8  # static length of the scan over rounds
    config.max_text_tokens = 48  # generated text tokens per segment, without its two markers
    config.max_prompt_tokens = 40  # prompt segment, both markers included
    # "process" prefixes the prompt with the step-by-step request of process samples; "single_step"
    # gives the bare prompt, as the text-to-image training samples (data.t2i_fraction) begin.
    config.prompt_format = "process"
    config.batch_size = 16  # prompts per rollout call of `python -m pstroke.sample`
    config.seed = 0

    config.num_steps = 25  # points of linspace(1, 0, num_steps); num_steps - 1 velocity evaluations
    config.timestep_shift = 1.0
    config.cfg_text_scale = 3.0
    config.cfg_img_scale = 1.0
    config.cfg_interval = (0.0, 1.0)  # guidance on where interval[0] < shifted t <= interval[1]
    config.cfg_renorm_type = "global"  # "global", "channel" or "text_channel"
    config.cfg_renorm_min = 0.0
    config.temperature = 0.0  # 0 is greedy
    return config
