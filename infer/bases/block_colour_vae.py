"""A tiny AutoencoderKL whose weights are set by hand so that it actually works as an autoencoder.

A randomly initialised VAE decodes every latent into the same kind of noise, so nothing a LoRA
learns on the tiny base could show in its images. This one is the standard diffusers class and
config (it saves, loads and runs like any SD VAE), but its weights make it a fixed, almost lossless
codec of the image's colours at 1/8 resolution (or 1/4, 1/2: `config_kwargs(..., downsample)`):

- encoder: latent channels 0-2 are the mean R, G, B of each 8x8 (4x4, 2x2) block, scaled so that
  `latents * scaling_factor` has a spread near 1, as real SD latents do; channel 3 is 0;
  the log-variance is the smallest diffusers allows, so sampling returns the mean;
- decoder: the inverse, each block's colour painted back over its pixels.

How: every residual branch and attention output is zeroed, so those blocks are identities; the
down- and up-samplers average and repeat. The one obstacle is the GroupNorm + SiLU before each
`conv_out`, which would normalise away the colours. Each colour therefore travels with its negative
and a large constant pair (+K, -K) in its own group: the group's mean is exactly 0 and its standard
deviation is K to within (colour/K)^2, so the norm only divides by a known constant, which its
affine weight undoes; a large bias keeps SiLU on its linear side.
"""

from __future__ import annotations

import torch

CONSTANT = 100.0  # K: large against colours in [-1, 1], so the norm's scale error is ~1e-4
SILU_SHIFT = 20.0  # silu(x + 20) = x + 20 to within 5e-8
COLOURS = 3
GROUP = 4  # channels per colour: (c, -c, K, -K)
CARRIED = COLOURS * GROUP  # the channels every block passes through
LOGVAR_MIN = -30.0  # diffusers clamps the log-variance here
# Block colours in [-1, 1] spread about 0.4; x2.5 brings the scaled latents to SD's spread of ~1,
# so the noise schedule drowns them at the same pace as in the real model.
LATENT_SPREAD = 2.5


# Image pixels per latent pixel -> channels per block; the last is always 48 (three groups of 16).
BLOCK_CHANNELS = {2: (CARRIED, 48), 4: (CARRIED, 24, 48), 8: (CARRIED, 24, 48, 48)}


def config_kwargs(scaling_factor: float, downsample: int = 8) -> dict:
    """The AutoencoderKL arguments this construction needs (three groups of four at the top)."""
    channels = BLOCK_CHANNELS[downsample]
    return dict(
        block_out_channels=channels,
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=COLOURS,
        scaling_factor=scaling_factor,
    )


def set_block_colour_weights(vae) -> None:
    """Overwrite a VAE built with `config_kwargs` in place (no gradients, deterministic)."""
    latent_gain = LATENT_SPREAD / vae.config.scaling_factor
    with torch.no_grad():
        for parameter in vae.parameters():
            parameter.zero_()  # also the channels conv_out never reads: silu(0) = 0 there
        for coder in (vae.encoder, vae.decoder):
            _make_blocks_identities(coder)
        encoder, decoder = vae.encoder, vae.decoder
        _signed_layout(encoder.conv_in, 1.0)
        _linear_norm_then_out(encoder.conv_norm_out, encoder.conv_out, latent_gain)
        encoder.conv_out.bias[vae.config.latent_channels :] = LOGVAR_MIN
        _signed_layout(decoder.conv_in, 1.0 / latent_gain)
        _linear_norm_then_out(decoder.conv_norm_out, decoder.conv_out, 1.0)
        _centre_identity(vae.quant_conv.weight, vae.quant_conv.weight.shape[0])
        _centre_identity(vae.post_quant_conv.weight, vae.post_quant_conv.weight.shape[0])
        # zero_() also cleared the GroupNorm scales the identities never read; restore the defaults.
        for module in vae.modules():
            if isinstance(module, torch.nn.GroupNorm) and not module.weight.any():
                module.weight.fill_(1.0)


def _centre_identity(weight: torch.Tensor, channels: int) -> None:
    centre_y, centre_x = weight.shape[2] // 2, weight.shape[3] // 2
    for c in range(channels):
        weight[c, c, centre_y, centre_x] = 1.0


def _make_blocks_identities(coder) -> None:
    blocks = getattr(coder, "down_blocks", None) or coder.up_blocks
    for block in [*blocks, coder.mid_block]:
        for resnet in block.resnets:  # conv2 stays zero: the block returns its shortcut
            if resnet.conv_shortcut is not None:
                _centre_identity(resnet.conv_shortcut.weight, CARRIED)
        for sampler in getattr(block, "downsamplers", None) or []:
            # pad (0, 1, 0, 1), 3x3 stride 2: the top-left 2x2 taps are exactly one 2x2 block.
            for c in range(CARRIED):
                sampler.conv.weight[c, c, :2, :2] = 0.25
        for sampler in getattr(block, "upsamplers", None) or []:
            # nearest x2, then this conv. Not smoothed: with zero padding a blur greys the border.
            _centre_identity(sampler.conv.weight, CARRIED)
        # attention out-projections stay zero: the residual passes through unchanged


def _signed_layout(conv, gain: float) -> None:
    """conv's outputs 4i..4i+3 := (g*x_i, -g*x_i, K, -K) for input channels x_0..x_2 (the colours)."""
    centre_y, centre_x = conv.weight.shape[2] // 2, conv.weight.shape[3] // 2
    for i in range(COLOURS):
        conv.weight[GROUP * i, i, centre_y, centre_x] = gain
        conv.weight[GROUP * i + 1, i, centre_y, centre_x] = -gain
        conv.bias[GROUP * i + 2] = CONSTANT
        conv.bias[GROUP * i + 3] = -CONSTANT


def _linear_norm_then_out(norm, conv_out, gain: float) -> None:
    """Make GroupNorm -> SiLU -> conv_out read colour i off channel 4i, times `gain`."""
    # Each group holds whole (c, -c, K, -K) quadruples and zeros: mean 0, std K*sqrt(2*pairs/width).
    # (The encoder's groups span 16 channels, so there the three colours share one.)
    group_width = norm.num_channels // norm.num_groups
    pairs = min(COLOURS, group_width // GROUP)
    std = CONSTANT * (2.0 * pairs / group_width) ** 0.5
    centre_y, centre_x = conv_out.weight.shape[2] // 2, conv_out.weight.shape[3] // 2
    for i in range(COLOURS):
        norm.weight[GROUP * i] = std
        norm.bias[GROUP * i] = SILU_SHIFT
        conv_out.weight[i, GROUP * i, centre_y, centre_x] = gain
        conv_out.bias[i] = -SILU_SHIFT * gain
