"""From the dataset to one micro-batch: which indices, with which randomness, cached or as pixels.

Every micro-batch has a position in one global sample order (epoch after epoch of `epoch_batches`),
the same whatever the number of processes: process `rank` of `world` takes positions
`local_step * world + rank`. All randomness of a micro-batch comes from a generator keyed by that
position, so N processes with accumulation k train exactly what one process with accumulation N·k
trains, and a resumed run replays what an uninterrupted one would have done."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from oeuvre.config_schema import TrainConfig
from train.buckets import epoch_batches
from train.cache import LatentCache
from train.images import ArtistImages, to_bucket
from train.masks import mask_to_bucket, open_mask, to_latent_grid


@dataclass
class Batch:
    captions: list[str]
    latent_dists: torch.Tensor | None  # cached (mean, logvar) parameters, or None to encode pixels
    pixels: torch.Tensor | None
    time_ids: torch.Tensor  # SDXL micro-conditioning: original size, crop corner, target size
    num_class: int  # the last num_class samples are prior-preservation (class) images
    masks: torch.Tensor | None = None  # instance samples' loss masks [n, 1, h, w]; None: unmasked


def step_generator(seed: int, position: int) -> torch.Generator:
    """All randomness of the micro-batch at `position` in the global sample order (crops, flips,
    caption dropout, class-image picks, noise, timesteps)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + position) % (2**63))


def micro_batches(
    images: ArtistImages, batch_size: int, seed: int, rank: int, world: int, start: int
) -> Iterator[tuple[int, list[int]]]:
    """(global position, index batch) for this process's micro-steps from local micro-step `start` on."""
    per_epoch = len(epoch_batches(images.bucket_of, batch_size, seed, 0))  # the same every epoch
    epoch, batches = -1, []
    local = start
    while True:
        position = local * world + rank
        if position // per_epoch != epoch:
            epoch = position // per_epoch
            batches = epoch_batches(images.bucket_of, batch_size, seed, epoch)
        yield position, batches[position % per_epoch]
        local += 1


def make_batch(
    indices: list[int],
    train_set: ArtistImages,
    class_set: ArtistImages | None,
    cfg: TrainConfig,
    cache: LatentCache | None,
    generator: torch.Generator,
) -> Batch:
    """Captions, latents (all cached) or pixels (all fresh) and SDXL time ids, in one order.

    Class images join the instance batch's bucket. A batch is taken from the cache only when every
    one of its examples is there; otherwise all are encoded from pixels, so captions, latents and
    time ids always line up (with centre crops and no flips, both give the same latents)."""
    examples = [train_set.example(i) for i in indices]
    if class_set is not None:
        bucket = examples[0].bucket
        picks = torch.randint(len(class_set), (len(examples),), generator=generator).tolist()
        examples += [class_set.example(i, bucket) for i in picks]
    cached = [cache.entry(e.key, e.bucket) for e in examples] if cache is not None else [None]
    from_cache = all(c is not None for c in cached)
    use_masks = cfg.masked_loss and any(e.mask_file is not None for e in examples[: len(indices)])
    captions, pixels, time_ids, masks = [], [], [], []
    for number, example in enumerate(examples):
        caption = example.caption
        if (
            number < len(indices)
            and cfg.caption_dropout
            and float(torch.rand((), generator=generator)) < cfg.caption_dropout
        ):
            caption = ""  # unconditional: keeps classifier-free guidance working
        captions.append(caption)
        flip = cfg.random_flip and bool(torch.rand((), generator=generator) < 0.5)
        if from_cache:
            top, left = center_crop_corner(example.size, example.bucket)
        else:
            tensor, (top, left) = to_bucket(example.image, example.bucket, cfg.center_crop, flip, generator)
            pixels.append(tensor)
        if use_masks and number < len(indices):
            masks.append(work_mask(example, cached[number] if from_cache else None, (top, left), flip))
        width, height = example.bucket
        time_ids.append(torch.tensor([example.size[1], example.size[0], top, left, height, width]))
    return Batch(
        captions=captions,
        latent_dists=torch.stack([c["latent_dist"] for c in cached]) if from_cache else None,
        pixels=None if from_cache else torch.stack(pixels),
        time_ids=torch.stack(time_ids).float(),
        num_class=len(examples) - len(indices),
        masks=torch.stack(masks) if masks else None,
    )


def work_mask(example, cached: dict | None, corner: tuple[int, int], flip: bool) -> torch.Tensor:
    """The cached latent-grid mask, or the mask file cropped like the work (ones where there is none)."""
    if cached is not None:
        return cached["mask"] if "mask" in cached else torch.ones(1, *cached["latent_dist"].shape[-2:])
    if example.mask_file is None:
        return torch.ones(1, example.bucket[1], example.bucket[0])
    return mask_to_bucket(open_mask(example.mask_file), example.size, example.bucket, corner, flip)


def center_crop_corner(size: tuple[int, int], bucket: tuple[int, int]) -> tuple[int, int]:
    width, height = size
    scale = max(bucket[0] / width, bucket[1] / height)
    spare_x = max(bucket[0], round(width * scale)) - bucket[0]
    spare_y = max(bucket[1], round(height * scale)) - bucket[1]
    return spare_y // 2, spare_x // 2


def cache_jobs(
    train_set: ArtistImages, class_set: ArtistImages | None
) -> list[tuple[ArtistImages, int, tuple]]:
    """(images, index, bucket) for every latent a run can ask for: each training image at its own
    bucket, each class image at every bucket an instance batch can have (class images join it)."""
    jobs = [(train_set, i, train_set.bucket_of[i]) for i in range(len(train_set))]
    if class_set is not None:
        for bucket in sorted(set(train_set.bucket_of)):
            jobs += [(class_set, i, bucket) for i in range(len(class_set))]
    return jobs


def fill_latent_cache(
    cache: LatentCache, train_set: ArtistImages, class_set: ArtistImages | None, vae, accelerator
) -> None:
    """Encode every latent the run will use once, centre-cropped (caching is only on when that is exact)."""
    from tqdm.auto import tqdm

    todo = [job for job in cache_jobs(train_set, class_set) if not cache.path(*_key(job)).is_file()]
    # Every rank must see the same to-do list before any rank writes to the cache: a rank that looked
    # after another had started writing would slice a shorter list, and some latents would be skipped.
    accelerator.wait_for_everyone()
    mine = todo[accelerator.process_index :: accelerator.num_processes]
    for images, index, bucket in tqdm(
        mine, desc="cache latents", disable=not mine or not accelerator.is_local_main_process
    ):
        example = images.example(index, bucket)
        pixels, _ = to_bucket(example.image, bucket, True, False, torch.Generator())
        with torch.no_grad():
            dist = vae.encode(pixels[None].to(accelerator.device, vae.dtype)).latent_dist.parameters[0]
        mask = None
        if example.mask_file is not None:
            corner = center_crop_corner(example.size, bucket)
            pixel_mask = mask_to_bucket(open_mask(example.mask_file), example.size, bucket, corner, False)
            mask = to_latent_grid(pixel_mask, tuple(dist.shape[-2:]))
        cache.put(example.key, bucket, dist, mask)
    accelerator.wait_for_everyone()


def _key(job) -> tuple[str, tuple[int, int]]:
    images, index, bucket = job
    return images.key(index), bucket
