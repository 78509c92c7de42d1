"""Build randomly initialised SD 1.5- and SDXL-shaped pipelines locally, tokenizer included.

Tests and the demo need a base model without the hub: `tiny` is small enough for 64 px steps in
well under a second; `full` is the exact SD 1.5 / SDXL architecture with random weights, for
benchmarks. The folder is what diffusers' own `from_pretrained` loads, weights in safetensors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from infer.bases import block_colour_vae
from infer.bases.tiny_vocab import WORDS
from oeuvre.atomic import atomic_directory
from oeuvre.errors import OeuvreError

Arch = Literal["sd15", "sdxl"]
Size = Literal["tiny", "full"]

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_TOKENS = 77  # CLIP's context length; the pipelines pad and truncate prompts to it
FULL_VOCAB_SIZE = 49408  # the real CLIP vocabulary size, kept for the exact full-size shapes


def build_clip_tokenizer():
    """A real byte-level CLIP BPE tokenizer whose merges are learned from `WORDS`.

    Layout as in OpenAI's CLIP: 256 byte symbols, the same with `</w>`, the learned merges, then the
    two special tokens. Deterministic: the same words give the same vocabulary.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    words = WORDS.split()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=100_000,  # larger than needed: merge until every training word is one token
        min_frequency=1,
        initial_alphabet=alphabet,
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    learner = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    learner.pre_tokenizer = CLIPTokenizer()._tokenizer.pre_tokenizer
    learner.train_from_iterator(words, trainer)
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in _learned_merges(learner)]

    symbols = sorted(alphabet)
    vocab: dict[str, int] = {}
    for token in [*symbols, *(s + "</w>" for s in symbols), *("".join(pair) for pair in merges), BOS, EOS]:
        vocab.setdefault(token, len(vocab))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_TOKENS)
    _check_tokenizer(tokenizer)
    return tokenizer


def _learned_merges(learner) -> list:
    return json.loads(learner.to_str())["model"]["merges"]


def _check_tokenizer(tokenizer) -> None:
    # A broken vocabulary fails quietly (every prompt becomes 2 tokens), so check here, loudly.
    ids = tokenizer("a painting in the style of <vangogh>").input_ids
    if len(ids) <= 4 or tokenizer.unk_token_id in ids[1:-1]:
        raise OeuvreError(f"built tokenizer is broken: encoded a test prompt as {ids}")


def _clip_text_config(size: Size, vocab_size: int, eos_id: int, bos_id: int, *, big_g: bool = False):
    from transformers import CLIPTextConfig

    if size == "tiny":
        dims = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2)
        dims.update(projection_dim=32, hidden_act="gelu")
    elif big_g:  # OpenCLIP ViT-bigG text tower, SDXL's second encoder
        dims = dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32)
        dims.update(projection_dim=1280, hidden_act="gelu")
    else:  # OpenAI CLIP ViT-L/14 text tower
        dims = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12)
        dims.update(projection_dim=768, hidden_act="quick_gelu")
    return CLIPTextConfig(
        vocab_size=vocab_size if size == "tiny" else max(vocab_size, FULL_VOCAB_SIZE),
        max_position_embeddings=MAX_TOKENS,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        **dims,
    )


def _vae(arch: Arch, size: Size, downsample: int = 8):
    from diffusers import AutoencoderKL

    scaling = {"sd15": 0.18215, "sdxl": 0.13025}[arch]
    common = dict(in_channels=3, out_channels=3, force_upcast=arch == "sdxl")
    if size == "tiny":
        # A random tiny VAE decodes everything to noise, hiding whatever the UNet learned; this
        # one is hand-set to a working codec of block colours (see block_colour_vae).
        vae = AutoencoderKL(sample_size=64, **block_colour_vae.config_kwargs(scaling, downsample), **common)
        block_colour_vae.set_block_colour_weights(vae)
        return vae
    return AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=32,
        sample_size={"sd15": 512, "sdxl": 1024}[arch],
        scaling_factor=scaling,
        down_block_types=("DownEncoderBlock2D",) * 4,  # latents 1/8 of the image, as in SD
        up_block_types=("UpDecoderBlock2D",) * 4,
        **common,
    )


# GroupNorm groups in the tiny UNets. 32 (the tests' bases) leaves one channel per group: every norm
# removes each channel's mean, so the UNet cannot output a mean colour and no LoRA can move a palette.
# 8 (`--norm-groups 8`, the demo's base) gives 4 to 8 channels per group, as SD's 10 to 40.
NORM_GROUPS = (8, 32)
RECIPE_FILE = "tiny_base.json"
# write_tiny_base's arguments that decide the weights: what tiny_base.json records and --if-changed compares.
RECIPE_KEYS = (
    "arch", "size", "seed", "pretrain_steps", "vae_downsample",
    "schedule", "noise_offset", "norm_groups", "sampler",
)  # fmt: skip


def _sd15_unet(size: Size, norm_groups: int = 32):
    from diffusers import UNet2DConditionModel

    if size == "tiny":
        return UNet2DConditionModel(
            sample_size=8,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,
            norm_num_groups=norm_groups,
        )
    return UNet2DConditionModel(
        sample_size=64,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=768,
        attention_head_dim=8,
    )


def _sdxl_unet(size: Size, norm_groups: int = 32):
    from diffusers import UNet2DConditionModel

    if size == "tiny":
        # cross_attention_dim = both encoders' hidden sizes; 80 = 6 time ids x 8 + pooled 32.
        return UNet2DConditionModel(
            sample_size=8,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            cross_attention_dim=64,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=80,
            norm_num_groups=norm_groups,
        )
    return UNet2DConditionModel(
        sample_size=128,
        block_out_channels=(320, 640, 1280),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=(5, 10, 20),
        use_linear_projection=True,
        cross_attention_dim=2048,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
    )


SCHEDULES = ("sd", "zero-snr")


def _scheduler(arch: Arch, schedule: str = "sd", sampler: str = "default"):
    """`sd`: the schedulers and settings the real SD 1.5 and SDXL repositories ship. `zero-snr`: the
    same betas rescaled to zero terminal SNR, v-prediction and trailing timesteps (Lin et al. 2023,
    "Common Diffusion Noise Schedules and Sample Steps are Flawed"): at SD's last timestep about 7 % of
    the picture survives the noise, so a small base trained for minutes learns to copy the mean
    colour from its input instead of making it; with zero terminal SNR it must make it."""
    from diffusers import DDIMScheduler, EulerDiscreteScheduler, PNDMScheduler

    common = dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
    )
    if schedule == "zero-snr":
        return DDIMScheduler(
            rescale_betas_zero_snr=True,
            prediction_type="v_prediction",
            timestep_spacing="trailing",
            clip_sample=False,
            set_alpha_to_one=False,
            **common,
        )
    if sampler == "ddim":
        # DDIM, not SD 1.5's PNDM: at img2img's 3-4 steps PNDM's multistep warm-up leaves the tiny base's
        # noise in the picture (content kept 0.53 against DDIM's 0.75 at strength 0.35, 10 steps).
        return DDIMScheduler(set_alpha_to_one=False, clip_sample=False, **common)
    if arch == "sd15":
        return PNDMScheduler(skip_prk_steps=True, set_alpha_to_one=False, **common)
    return EulerDiscreteScheduler(timestep_spacing="leading", prediction_type="epsilon", **common)


def build_pipeline(
    arch: Arch = "sd15",
    size: Size = "tiny",
    seed: int = 0,
    vae_downsample: int = 8,
    schedule: str = "sd",
    norm_groups: int = 32,
    sampler: str = "default",
):
    """A randomly initialised text-to-image pipeline; the same seed gives the same weights.

    `vae_downsample` (tiny only): 8 as in SD. The tiny VAE codes only each block's colour, so at 64 px
    an 8x8 block loses every brush stroke; 2 keeps them, at the cost of a UNet on 16 times the latents."""
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    if arch not in ("sd15", "sdxl") or size not in ("tiny", "full"):
        raise OeuvreError(f"tiny-base: expected --arch sd15|sdxl and --size tiny|full, got {arch}, {size}")
    if vae_downsample not in block_colour_vae.BLOCK_CHANNELS or (size == "full" and vae_downsample != 8):
        raise OeuvreError(
            f"--vae-downsample {vae_downsample}: expected 2, 4 or 8 with --size tiny, and 8 with --size full"
        )
    if schedule not in SCHEDULES:
        raise OeuvreError(f"--schedule {schedule}: expected one of {', '.join(SCHEDULES)}")
    if norm_groups not in NORM_GROUPS or (size == "full" and norm_groups != 32):
        raise OeuvreError(
            f"--norm-groups {norm_groups}: expected 8 or 32 with --size tiny, and 32 with --size full"
        )
    if sampler not in ("default", "ddim"):
        raise OeuvreError(f"--sampler {sampler}: expected default or ddim")
    tokenizer = build_clip_tokenizer()
    ids = dict(vocab_size=len(tokenizer), eos_id=tokenizer.eos_token_id, bos_id=tokenizer.bos_token_id)
    # Each component from its own seed, so the weights don't depend on construction order.
    torch.manual_seed(seed)
    unet = _sd15_unet(size, norm_groups) if arch == "sd15" else _sdxl_unet(size, norm_groups)
    torch.manual_seed(seed + 1)
    vae = _vae(arch, size, vae_downsample)
    torch.manual_seed(seed + 2)
    if arch == "sd15":
        text_encoder = CLIPTextModel(_clip_text_config(size, **ids))
        return StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=_scheduler(arch, schedule, sampler),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    text_encoder = CLIPTextModel(_clip_text_config(size, **ids))
    torch.manual_seed(seed + 3)
    text_encoder_2 = CLIPTextModelWithProjection(_clip_text_config(size, **ids, big_g=True))
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=build_clip_tokenizer(),
        unet=unet,
        scheduler=_scheduler(arch, schedule, sampler),
    )


def write_tiny_base(
    out: str | Path,
    arch: Arch = "sd15",
    size: Size = "tiny",
    seed: int = 0,
    overwrite: bool = False,
    pretrain_steps: int = 0,
    vae_downsample: int = 8,
    schedule: str = "sd",
    controlnets: tuple[str, ...] = (),
    controlnet_steps: int = 150,
    noise_offset: float = 0.0,
    norm_groups: int = 32,
    sampler: str = "default",
) -> Path:
    """Build and save a pipeline folder atomically (it appears whole or not at all).

        `pretrain_steps` > 0 first trains the tiny UNet to denoise generic pictures (tiny_pretrain),
        so that img2img and a LoRA have a working denoiser to start from. `vae_downsample` < 8 gives the
        tiny VAE finer latents (see build_pipeline). `controlnets` (canny, depth) adds a tiny ControlNet of
        each kind, trained `controlnet_steps` steps, as `controlnet-<kind>/` (tiny_controlnet). `noise_offset`
    is the pre-training's offset noise (tiny_pretrain.noisy_batch)."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise OeuvreError(f"{out}: already exists; pass --overwrite to replace it")
    if noise_offset < 0 or (noise_offset and not pretrain_steps):
        raise OeuvreError(
            f"--noise-offset {noise_offset}: expected 0, or a positive value with --pretrain-steps"
        )
    if pretrain_steps < 0 or (pretrain_steps and size != "tiny"):
        raise OeuvreError(
            f"--pretrain-steps {pretrain_steps}: expected 0, or a positive count with --size tiny"
        )
    pipe = build_pipeline(arch, size, seed, vae_downsample, schedule, norm_groups, sampler)
    if pretrain_steps:
        from infer.bases.tiny_pretrain import pretrain_unet

        losses = pretrain_unet(pipe, pretrain_steps, seed=seed, noise_offset=noise_offset)
        print(
            f"pre-trained the tiny UNet for {pretrain_steps} steps: loss {losses[0]:.3f} -> {losses[-1]:.3f}"
        )
    if controlnets and size != "tiny":
        raise OeuvreError(f"--controlnet {controlnets[0]}: only with --size tiny")
    recipe = {key: value for key, value in locals().items() if key in RECIPE_KEYS}  # this call's arguments
    with atomic_directory(out, overwrite=overwrite) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        # How it was built, so a caller (the demo) can tell a base built by an older recipe and rebuild.
        (Path(tmp) / RECIPE_FILE).write_text(json.dumps(recipe, indent=1) + "\n")
        if controlnets:
            from infer.bases.tiny_controlnet import write_tiny_controlnets

            write_tiny_controlnets(pipe, Path(tmp), list(controlnets), controlnet_steps, seed)
    return out


def built_with(folder: str | Path, **recipe) -> bool:
    """True if the tiny base at `folder` was built with these arguments (its tiny_base.json)."""
    path = Path(folder) / RECIPE_FILE
    if not path.is_file():
        return False
    written = json.loads(path.read_text())
    return all(written.get(key) == value for key, value in recipe.items())


def copy_base(source: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Copy a built base folder to `out` atomically (the demo's run gets its own copy, so adding a
    ControlNet to it never touches the one in the repo)."""
    import shutil

    out = Path(out)
    if out.exists() and not overwrite:
        raise OeuvreError(f"{out}: already exists; pass --overwrite to replace it")
    with atomic_directory(out, overwrite=overwrite) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
    return out
