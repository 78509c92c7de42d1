"""Training on the tiny bases: the step learns, caches are exact, resume is bit-exact, files load."""

from __future__ import annotations

import itertools
import shutil

import pytest
import torch
from conftest import REPO
from safetensors.torch import load_file
from train_helpers import (
    launch,
    one_process,
    reset_accelerate,
    train_config,
    train_in_process,
    write_dataset,
)

from oeuvre.paths import RunPaths
from train import checkpoints, recipe
from train.batches import fill_latent_cache, make_batch, micro_batches, step_generator
from train.buckets import epoch_batches, make_buckets, nearest_bucket
from train.cache import LatentCache
from train.images import ArtistImages
from train.loss import timestep_weights
from train.models import add_lora_adapters, load_components, trainable_parameters
from train.recipe import Step, make_optimizer, prompt_encoder, training_step

TOKEN = "<demo-artist>"
ONE_PROCESS = one_process()


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Accelerate keeps one state per process; each in-process run starts from none."""
    yield
    reset_accelerate()


@pytest.fixture
def run_dir(tmp_path):
    write_dataset(tmp_path / "dataset", TOKEN)
    return tmp_path


def lora_tensors(run_dir) -> dict[str, torch.Tensor]:
    return load_file(RunPaths(run_dir).lora / "demo.safetensors")


def setup_step(config):
    parts = load_components(config.base_model)
    add_lora_adapters(parts, config.train)
    buckets = make_buckets(config.train.resolution_px)
    images = ArtistImages.from_split(RunPaths(config.output_dir).dataset, "train", buckets, "")
    weights = timestep_weights(config.train, parts.noise_scheduler.config.num_train_timesteps)
    step = Step(
        parts,
        config.train,
        prompt_encoder(parts, torch.device("cpu")),
        weights,
        torch.device("cpu"),
        torch.float32,
    )
    return parts, images, step


# -- buckets ---------------------------------------------------------------------------------------


def test_buckets_are_multiples_of_64_within_the_area():
    buckets = make_buckets(512)
    assert (512, 512) in buckets and (768, 320) in buckets and (320, 768) in buckets
    assert all(w % 64 == 0 and h % 64 == 0 and w * h <= 512 * 512 for w, h in buckets)
    assert nearest_bucket(1600, 1000, buckets)[0] > nearest_bucket(1600, 1000, buckets)[1]
    assert nearest_bucket(1000, 1000, buckets) == (512, 512)
    assert make_buckets(64) == [(64, 64)]


def test_batches_come_from_one_bucket_and_repeat_per_seed_and_epoch():
    bucket_of = [(64, 64), (128, 64), (64, 64), (128, 64), (64, 128), (64, 64)]
    batches = epoch_batches(bucket_of, 2, seed=0, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert all(len({bucket_of[i] for i in b}) == 1 for b in batches)
    assert batches == epoch_batches(bucket_of, 2, seed=0, epoch=0)
    assert any(epoch_batches(bucket_of, 2, seed=0, epoch=e) != batches for e in range(1, 5))


# -- the step --------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(tiny_bases, run_dir, arch):
    config = train_config(run_dir, tiny_bases[arch], "train.lr=2e-2", "train.snr_gamma=null")
    parts, images, step = setup_step(config)
    optimizer = make_optimizer(config.train, parts, [], [])
    batch = make_batch([0], images, None, config.train, None, torch.Generator().manual_seed(0))
    losses = []
    for _ in range(20):
        loss = training_step(batch, step, torch.Generator().manual_seed(1))  # same noise, same timesteps
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]
    assert all(p.requires_grad == ("lora_" in n) for n, p in parts.unet.named_parameters())


def twenty_step_losses(config, compiled: bool) -> list[float]:
    parts, images, step = setup_step(config)
    if compiled:
        recipe.compile_unet(parts.unet)
    optimizer = make_optimizer(config.train, parts, [], [])
    losses = []
    for number in range(20):  # one image: one shape, so one compile (fresh noise and timesteps each step)
        generator = step_generator(0, number)
        batch = make_batch([0], images, None, config.train, None, generator)
        loss = training_step(batch, step, generator)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


@pytest.mark.slow
def test_compiled_training_follows_the_eager_losses(tiny_bases, run_dir):
    """train.compile: the compiled UNet's 20 losses stay within float tolerance of the eager ones
    (compiled kernels reorder floating-point sums, so bit-for-bit is not expected)."""
    torch._dynamo.reset()
    config = train_config(run_dir, tiny_bases["sd15"], "train.lr=1e-3", "train.compile=true")
    torch.manual_seed(0)
    eager = twenty_step_losses(config, compiled=False)
    torch.manual_seed(0)
    compiled = twenty_step_losses(config, compiled=True)
    assert compiled == pytest.approx(eager, rel=1e-3, abs=1e-5)
    assert eager[0] != eager[-1]


def test_cached_and_uncached_latents_give_the_same_loss(tiny_bases, run_dir):
    config = train_config(run_dir, tiny_bases["sd15"])
    parts, images, step = setup_step(config)
    cache = LatentCache(run_dir / "cache", parts.vae)
    fill_latent_cache(cache, images, None, parts.vae, ONE_PROCESS)
    cached = make_batch([1, 2], images, None, config.train, cache, step_generator(0, 5))
    fresh = make_batch([1, 2], images, None, config.train, None, step_generator(0, 5))
    assert cached.latent_dists is not None and fresh.latent_dists is None
    with torch.no_grad():
        a = training_step(cached, step, step_generator(0, 5))
        b = training_step(fresh, step, step_generator(0, 5))
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_prior_preservation_batches_line_up_when_class_images_fall_in_another_bucket(tiny_bases, run_dir):
    from train_helpers import painted

    class_dir = run_dir / "class"
    class_dir.mkdir()
    for number in range(2):
        painted(50 + number, (200, 64)).save(class_dir / f"class-{number}.png")  # 3:1, instance ones ~1:1
    config = train_config(
        run_dir, tiny_bases["sd15"], "train.resolution_px=128", "train.with_prior_preservation=true"
    )
    parts, images, step = setup_step(config)
    class_set = ArtistImages.from_folder(class_dir, "a painting", make_buckets(128))
    assert set(class_set.bucket_of).isdisjoint(images.bucket_of)
    cache = LatentCache(run_dir / "cache", parts.vae)
    fill_latent_cache(cache, images, class_set, parts.vae, ONE_PROCESS)
    for indices in ([0], [1, 2]):
        cached = make_batch(indices, images, class_set, config.train, cache, step_generator(0, 3))
        fresh = make_batch(indices, images, class_set, config.train, None, step_generator(0, 3))
        assert cached.latent_dists is not None and cached.latent_dists.shape[0] == 2 * len(indices)
        assert cached.captions == fresh.captions and cached.captions[-1] == "a painting"
        assert torch.equal(cached.time_ids, fresh.time_ids)
        with torch.no_grad():
            a = training_step(cached, step, step_generator(0, 3))
            b = training_step(fresh, step, step_generator(0, 3))
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_min_snr_weights_follow_the_formula(prediction_type):
    from diffusers import DDPMScheduler

    from train.loss import per_sample_weights

    scheduler = DDPMScheduler(prediction_type=prediction_type)
    timesteps = torch.tensor([0, 10, 250, 500, 999])
    alpha_bar = scheduler.alphas_cumprod[timesteps].double()
    snr = alpha_bar / (1 - alpha_bar)
    gamma = 5.0
    expected = torch.minimum(snr, torch.tensor(gamma)) / (
        snr + 1 if prediction_type == "v_prediction" else snr
    )
    weights = per_sample_weights(scheduler, timesteps, gamma)
    assert torch.allclose(weights.double(), expected, rtol=1e-4)
    assert torch.equal(per_sample_weights(scheduler, timesteps, None), torch.ones(5))


# -- whole runs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_saved_lora_and_token_load_in_diffusers_and_change_the_image(tiny_bases, run_dir, arch):
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionXLImg2ImgPipeline
    from PIL import Image

    config = train_config(run_dir, tiny_bases[arch], "train.lr=5e-2", "train.embedding_lr=5e-1")
    lora_file = recipe.run(config)
    emb_file = lora_file.with_name("demo_emb.safetensors")
    assert lora_file.is_file() and emb_file.is_file()
    assert (RunPaths(run_dir).samples / "step-000004.png").is_file()  # final samples
    assert list(RunPaths(run_dir).logs.rglob("events.out.tfevents*"))

    cls = StableDiffusionXLImg2ImgPipeline if arch == "sdxl" else StableDiffusionImg2ImgPipeline
    pipe = cls.from_pretrained(tiny_bases[arch])
    emb = load_file(emb_file)
    if arch == "sdxl":
        pipe.load_textual_inversion(
            emb["clip_l"], token=TOKEN, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer
        )
        pipe.load_textual_inversion(
            emb["clip_g"], token=TOKEN, text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2
        )
    else:
        pipe.load_textual_inversion(str(emb_file), token=TOKEN)
    ids = pipe.tokenizer.convert_tokens_to_ids([TOKEN, f"{TOKEN}_1"])
    rows = pipe.text_encoder.get_input_embeddings().weight[ids]
    assert torch.allclose(
        rows, emb["clip_l" if arch == "sdxl" else "emb_params"]
    )  # the trained token, reloaded

    def restyle():
        image = Image.new("RGB", (64, 64), (120, 140, 90))
        out = pipe(
            f"a painting in the style of {TOKEN}",
            image=image,
            strength=0.8,
            num_inference_steps=3,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
        )
        return out.images

    before = restyle()
    pipe.load_lora_weights(str(lora_file))
    after = restyle()
    assert (after - before).abs().mean() > 1e-3


def test_a_checkpoint_of_another_lora_shape_is_refused_naming_the_setting(tiny_bases, tmp_path):
    """An older run's checkpoint (rank 4) met by a rank-8 config: a one-line error, not a traceback
    from deep in Accelerate, and the checkpoint is left as it was."""
    from oeuvre.errors import ConfigError

    write_dataset(tmp_path / "dataset", TOKEN)
    settings = ["train.max_train_steps=4", "train.checkpoint_every=2"]  # step-2 kept; the last is not
    train_in_process(train_config(tmp_path, tiny_bases["sd15"], *settings))
    saved = tmp_path / "checkpoints" / "step-2" / "trainable.safetensors"
    before = saved.read_bytes()
    with pytest.raises(ConfigError, match=r"step-2: .*train\.lora_rank.*train\.resume=none") as error:
        train_in_process(train_config(tmp_path, tiny_bases["sd15"], *settings, "train.lora_rank=8"))
    assert "is (4, " in str(error.value) and "this run's (8, " in str(error.value)
    assert saved.read_bytes() == before
    # and train.resume=none starts over with the new shape
    train_in_process(
        train_config(tmp_path, tiny_bases["sd15"], *settings, "train.lora_rank=8", "train.resume=none")
    )
    shapes = {tuple(t.shape) for k, t in load_file(saved).items() if "lora_A" in k}
    assert shapes and all(shape[0] == 8 for shape in shapes)


def test_resume_after_a_crash_ends_bit_exact(tiny_bases, tmp_path, monkeypatch):
    settings = [
        "train.max_train_steps=6",
        "train.checkpoint_every=3",
        "train.lr=1e-2",
        "train.train_batch_size=2",
    ]
    whole_dir, crash_dir = tmp_path / "whole", tmp_path / "crash"
    for d in (whole_dir, crash_dir):
        write_dataset(d / "dataset", TOKEN)
    recipe.run(train_config(whole_dir, tiny_bases["sd15"], *settings))

    real_step, calls = recipe.training_step, []

    def crash_on_fifth(*args):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt("killed")
        return real_step(*args)

    monkeypatch.setattr(recipe, "training_step", crash_on_fifth)
    with pytest.raises(KeyboardInterrupt):
        recipe.run(train_config(crash_dir, tiny_bases["sd15"], *settings))
    assert [p.name for p in checkpoints.complete_checkpoints(RunPaths(crash_dir).checkpoints)] == ["step-3"]
    monkeypatch.setattr(recipe, "training_step", real_step)
    TestState.reset()
    recipe.run(train_config(crash_dir, tiny_bases["sd15"], *settings))

    whole, resumed = lora_tensors(whole_dir), lora_tensors(crash_dir)
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            load_file(whole_dir / "lora/demo_emb.safetensors").values(),
            load_file(crash_dir / "lora/demo_emb.safetensors").values(),
            strict=True,
        )
    )


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_bases, run_dir):
    config = train_config(
        run_dir,
        tiny_bases["sd15"],
        "train.max_train_steps=8",
        "train.checkpoint_every=1",
        "train.lr=1e30",
        "train.snr_gamma=null",
        "train.max_grad_norm=1e30",
    )
    with pytest.raises(recipe.TrainingDiverged, match="non-finite"):
        recipe.run(config)
    saved = checkpoints.complete_checkpoints(RunPaths(run_dir).checkpoints)
    assert saved, "at least the first good step was checkpointed"
    for path in saved:
        state = load_file(path / checkpoints.TRAINABLE_FILE)
        assert all(torch.isfinite(t).all() for t in state.values())
    assert not (RunPaths(run_dir).lora / "demo.safetensors").exists()


def test_prior_preservation_generates_class_images_and_trains(tiny_bases, run_dir):
    config = train_config(
        run_dir,
        tiny_bases["sd15"],
        "train.with_prior_preservation=true",
        "train.num_class_images=2",
        "train.max_train_steps=2",
    )
    recipe.run(config)
    assert len(list((run_dir / "class_images").glob("*.png"))) == 2
    assert (RunPaths(run_dir).lora / "demo.safetensors").is_file()


class TestState:
    @staticmethod
    def reset():
        reset_accelerate()


# -- bad input: clear errors before any model loads -------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "overrides", "must_name"),
    [
        ("none", [], "dataset/train/metadata.jsonl"),
        ("no-train", [], "no training images"),  # (no holdout trains: tests/test_reliability.py)
        ("ok", ["train.lora_rank=0"], "train.lora_rank"),
        ("ok", ["train.lr=-1"], "train.lr"),
        ("ok", ["train.resolution_px=100"], "multiple of 8"),
        (
            "ok",
            [
                "train.with_prior_preservation=true",
                "train.generate_class_images=false",
                "train.class_data_dir=CLASS",
            ],
            "train.class_data_dir",
        ),
        ("ok", ["base_model=FLUX"], "neither SD 1.5 nor SDXL"),
    ],
)
def test_bad_input_fails_before_any_model_loads(run_cli, tiny_bases, tmp_path, setup, overrides, must_name):
    out = tmp_path / "run"
    if setup != "none":
        write_dataset(out / "dataset", TOKEN, n_train=0 if setup == "no-train" else 4)
    (tmp_path / "CLASS").mkdir()
    flux = tmp_path / "FLUX"
    flux.mkdir()
    (flux / "model_index.json").write_text('{"_class_name": "FluxPipeline"}')
    overrides = [o.replace("CLASS", str(tmp_path / "CLASS")).replace("FLUX", str(flux)) for o in overrides]
    result = run_cli(
        "train", "configs/demo.yaml", f"output_dir={out}", f"base_model={tiny_bases['sd15']}", *overrides
    )
    assert result.returncode == 2, result.stderr
    assert must_name in result.stderr and "Traceback" not in result.stderr
    assert "Loading pipeline components" not in result.stderr


# -- scale out --------------------------------------------------------------------------------------


MULTI = ["train.max_train_steps=4", "train.checkpoint_every=2", "train.train_batch_size=1", "train.lr=1e-2"]


@pytest.fixture(scope="module")
def two_process_run(tiny_bases, tmp_path_factory):
    """One 4-step run on two CPU processes (gloo), batch 1, checkpoint at step 2; shared below."""
    run_dir = tmp_path_factory.mktemp("two")
    write_dataset(run_dir / "dataset", TOKEN)
    result = launch(run_dir, tiny_bases["sd15"], *MULTI)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result


@pytest.mark.slow
def test_two_processes_train_what_one_process_with_accumulation_trains(two_process_run, tiny_bases, tmp_path):
    run_dir, result = two_process_run
    assert "training on 2 process(es)" in result.stdout
    assert [p.name for p in checkpoints.complete_checkpoints(RunPaths(run_dir).checkpoints)] == ["step-2"]
    write_dataset(tmp_path / "dataset", TOKEN)
    # One intra-op thread, as each rank has: with two, this side's float sums vary from run to run.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        recipe.run(train_config(tmp_path, tiny_bases["sd15"], *MULTI, "train.gradient_accumulation_steps=2"))
    finally:
        torch.set_num_threads(threads)
    two, one = lora_tensors(run_dir), lora_tensors(tmp_path)
    assert two.keys() == one.keys()
    ups = [k for k in one if ".up." in k]
    largest = max(one[k].abs().max().item() for k in ups)
    difference = max((two[k] - one[k]).abs().max().item() for k in ups)
    print(
        f"LoRA up weights, 2 processes vs 1 with accumulation 2: largest difference {difference:.3g}, "
        f"{difference / largest:.3%} of the largest value {largest:.3g}"
    )
    assert largest > 1e-3  # they moved from zero
    assert difference / largest < 1e-3
    embeddings = [load_file(d / "lora/demo_emb.safetensors")["emb_params"] for d in (run_dir, tmp_path)]
    assert torch.allclose(*embeddings, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_every_process_ends_with_the_same_weights(two_process_run):
    _, result = two_process_run
    assert "trained weights identical on all 2 processes" in result.stdout


@pytest.mark.slow
def test_two_process_resume_ends_bit_exact(two_process_run, tiny_bases, tmp_path):
    """A two-process run killed after its step-2 checkpoint, resumed on two processes."""
    run_dir, _ = two_process_run
    killed = tmp_path / "killed"
    shutil.copytree(run_dir, killed, ignore=shutil.ignore_patterns("lora", "samples", "logs"))
    result = launch(killed, tiny_bases["sd15"], *MULTI)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in result.stdout and "(step 2)" in result.stdout
    whole, resumed = lora_tensors(run_dir), lora_tensors(killed)
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_micro_batches_follow_one_global_order_whatever_the_process_count(run_dir):
    images = ArtistImages.from_split(run_dir / "dataset", "train", make_buckets(64), "")
    one = [b for _, b in itertools.islice(micro_batches(images, 1, 0, 0, 1, 0), 12)]
    ranks = [list(itertools.islice(micro_batches(images, 1, 0, r, 3, 0), 4)) for r in range(3)]
    interleaved = [ranks[r][m] for m in range(4) for r in range(3)]
    assert [b for _, b in interleaved] == one
    assert [p for p, _ in interleaved] == list(range(12))
    resumed = list(itertools.islice(micro_batches(images, 1, 0, 1, 3, 2), 2))
    assert resumed == ranks[1][2:4]


def test_trainable_parameters_are_only_lora(tiny_bases, run_dir):
    config = train_config(run_dir, tiny_bases["sd15"])
    parts, _, _ = setup_step(config)
    names = {n for n, p in parts.unet.named_parameters() if p.requires_grad}
    assert names and all("lora_" in n for n in names)
    assert len(trainable_parameters(parts.unet)) == len(names)


# -- options ---------------------------------------------------------------------------------------


def test_timestep_bias_moves_sampling_towards_the_chosen_end(run_dir, tiny_bases):
    from train.loss import sample_timesteps

    def mean_timestep(*overrides):
        cfg = train_config(run_dir, tiny_bases["sd15"], *overrides).train
        weights = timestep_weights(cfg, 1000)
        return sample_timesteps(weights, 4000, torch.Generator().manual_seed(0)).float().mean().item()

    uniform = mean_timestep()
    assert mean_timestep("train.timestep_bias=later", "train.timestep_bias_multiplier=4") > uniform + 100
    assert mean_timestep("train.timestep_bias=earlier", "train.timestep_bias_multiplier=4") < uniform - 100
    ranged = mean_timestep(
        "train.timestep_bias=range",
        "train.timestep_bias_multiplier=50",
        "train.timestep_bias_range=[600, 700]",
    )
    assert 550 < ranged < 700


def test_text_encoder_lora_and_dora_are_saved_and_load(tiny_bases, run_dir):
    from diffusers import StableDiffusionPipeline

    config = train_config(
        run_dir,
        tiny_bases["sd15"],
        "train.train_text_encoder=true",
        "train.use_dora=true",
        "train.max_train_steps=2",
        "train.pivotal_tuning=false",
    )
    lora_file = recipe.run(config)
    keys = load_file(lora_file).keys()
    assert any(k.startswith("text_encoder.") for k in keys) and any(k.startswith("unet.") for k in keys)
    assert any("magnitude" in k for k in keys)  # DoRA's magnitude vectors
    kohya = load_file(lora_file.with_name("demo.kohya.safetensors"))
    assert any(k.endswith(".dora_scale") for k in kohya) and any(k.startswith("lora_te_") for k in kohya)
    pipe = StableDiffusionPipeline.from_pretrained(tiny_bases["sd15"])
    pipe.load_lora_weights(str(lora_file))
    assert any("lora" in n for n, _ in pipe.text_encoder.named_parameters())


def test_only_the_last_k_checkpoints_are_kept(tiny_bases, run_dir):
    config = train_config(
        run_dir,
        tiny_bases["sd15"],
        "train.max_train_steps=5",
        "train.checkpoint_every=1",
        "train.checkpoints_keep=2",
    )
    recipe.run(config)
    folder = RunPaths(run_dir).checkpoints
    assert [p.name for p in checkpoints.complete_checkpoints(folder)] == ["step-3", "step-4"]
    assert not list(folder.glob(".tmp-*"))


def test_deepspeed_on_a_machine_without_cuda_fails_at_once_saying_so(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(recipe.DistributedSetupError, match="DeepSpeed .* needs CUDA GPUs"):
        recipe.check_backend_fits_device()


def test_accelerate_configs_parse():
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {
        load_config_from_file(str(p)).distributed_type.value
        for p in (REPO / "configs/accelerate").glob("*.yaml")
    }
    assert kinds == {"NO", "MULTI_GPU", "DEEPSPEED", "FSDP"}


def test_sample_grid_labels_keep_the_whole_prompt():
    import numpy as np
    from PIL import Image

    from train.validation import grid

    tiles = [Image.new("RGB", (64, 64), "grey")] * 3
    prompt = "restyle: a village street with houses and a church under a night sky, <demo-artist>"
    sheet = np.asarray(grid([prompt, "short"], [tiles, tiles], "title").convert("L"))
    label_column = sheet[48 : 48 + 128, :200]  # the first row's label, under the two header lines
    inked_lines = np.flatnonzero((label_column < 128).any(axis=1))
    # Wrapped onto three lines, not cut after 34 characters: ink reaches well below the first line.
    assert inked_lines.max() - inked_lines.min() > 25


def test_lora_off_turns_off_the_text_encoder_lora_too(tiny_bases, run_dir):
    from train.validation import lora_off

    config = train_config(run_dir, tiny_bases["sd15"], "train.train_text_encoder=true")
    parts, _, step = setup_step(config)
    base, _ = step.encode(["a harbour"])
    with torch.no_grad():
        for name, parameter in parts.text_encoders[0].named_parameters():
            if "lora_B" in name:
                parameter.fill_(0.05)
    styled, _ = step.encode(["a harbour"])
    assert not torch.allclose(styled, base)
    with lora_off(parts):
        off, _ = step.encode(["a harbour"])
    assert torch.equal(off, base)
    assert torch.equal(step.encode(["a harbour"])[0], styled)
    assert all(p.requires_grad for n, p in parts.text_encoders[0].named_parameters() if "lora_" in n)
