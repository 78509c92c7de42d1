"""One img2img base in memory for the web app, with artist LoRAs swapped in and out through diffusers'
adapter API (load_lora_weights(adapter_name=...) / set_adapters / delete_adapters) instead of reloading it.

The restyling itself is restyle.py's Restyler: ArtistRestyler only binds it to the kept pipeline, keeps the
LoRA unfused (so the next artist can swap in) and reports each denoising step for the progress bar.
"""

from __future__ import annotations

import gc
import re
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from infer.lora_files import LoraFileError, check_lora_fits
from infer.png_info import SAMPLER_NAMES
from infer.restyle import Restyler, Settings, _quiet_libraries, file_sha256, load_embedding

StepCallback = Callable[[int, int], None]  # (steps done, steps in this call)


class _StepReporting:
    """The pipeline, with `callback_on_step_end` added to every call so each denoising step is reported."""

    def __init__(self, pipe, on_step: StepCallback | None):
        self._pipe = pipe
        self._on_step = on_step

    def __getattr__(self, name: str):
        return getattr(self._pipe, name)

    def __call__(self, **kwargs):
        def step_end(pipe, step: int, timestep, callback_kwargs: dict) -> dict:
            if self._on_step is not None:
                # The scheduler's own count: PLMS, for one, runs a warm-up step more than asked.
                self._on_step(step + 1, pipe.num_timesteps)
            return callback_kwargs

        return self._pipe(**kwargs, callback_on_step_end=step_end)


class ArtistRestyler(Restyler):
    """restyle.py's Restyler over an already-loaded pipeline whose active adapter is this artist's LoRA."""

    def __init__(self, settings: Settings, loaded: _Loaded, adapter: str, on_step: StepCallback | None):
        # Deliberately not Restyler.__init__: that loads a fresh base; here the kept one is reused.
        self.settings = settings
        self.device = loaded.device
        self.dtype = loaded.dtype
        self.arch = loaded.arch
        self.pipe = _StepReporting(loaded.pipe, on_step)
        self.fused = False
        self._embeds = {}
        self.sampler = loaded.sampler
        self.base_hash = loaded.base_hash
        self.lora_hash = loaded.lora_hashes.get(adapter)
        self.adapter = adapter

    def set_scale(self, scale: float) -> None:
        self.pipe.set_adapters([self.adapter], adapter_weights=[scale])
        self._embeds.clear()  # a text-encoder LoRA's scale changes the prompt embeddings


@dataclass
class _Loaded:
    base_model: str
    pipe: object
    device: str
    dtype: object
    arch: str
    sampler: str
    base_hash: str | None
    adapter: str | None = None  # the one artist LoRA loaded now
    adapter_key: tuple | None = None  # (file, mtime, size): a retrained LoRA is reloaded
    embedding_tokens: tuple[tuple[str, ...], ...] = ()  # tokens added per tokenizer
    lora_hashes: dict | None = None


def adapter_name(lora_file: Path) -> str:
    return "artist_" + re.sub(r"[^A-Za-z0-9_]", "_", lora_file.stem)


class PipelineKeeper:
    """Holds at most one base pipeline; `restyler(settings)` returns it with the settings' LoRA active.

    Calls are serialised by a lock (Gradio's queue already runs one at a time by default). After any
    failure while swapping, the pipeline is dropped, so the next request starts from a clean base."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: _Loaded | None = None
        self.base_loads = 0  # how many times a base was loaded (tests check swaps do not reload it)

    @property
    def lock(self) -> threading.Lock:
        return self._lock

    def restyler(self, settings: Settings, on_step: StepCallback | None = None) -> ArtistRestyler:
        """Call with `lock` held. Loads the base only when it differs from the one in memory."""
        from oeuvre.devices import choose_device, choose_dtype

        device = choose_device(settings.device)
        dtype = choose_dtype(device, settings.dtype)
        loaded = self._loaded
        if loaded is None or (loaded.base_model, loaded.device, loaded.dtype) != (
            settings.base_model,
            device,
            dtype,
        ):
            self.drop()
            loaded = self._loaded = self._load_base(settings.base_model, device, dtype)
        try:
            self._activate(loaded, settings)
        except BaseException:
            self.drop()
            raise
        return ArtistRestyler(settings, loaded, loaded.adapter, on_step)

    def drop(self) -> None:
        self._loaded = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover - torch is a dependency
            pass

    def _load_base(self, base_model: str, device: str, dtype) -> _Loaded:
        from infer.base_model import load_img2img_pipeline, resolve_base

        _quiet_libraries()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
            pipe = load_img2img_pipeline(base_model, dtype=dtype)
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        self.base_loads += 1
        unet_files = sorted((resolve_base(base_model) / "unet").glob("*.safetensors"))
        return _Loaded(
            base_model=base_model,
            pipe=pipe,
            device=device,
            dtype=dtype,
            arch="sdxl" if getattr(pipe, "text_encoder_2", None) is not None else "sd15",
            sampler=SAMPLER_NAMES.get(type(pipe.scheduler).__name__, type(pipe.scheduler).__name__),
            base_hash=file_sha256(unet_files[0])[:10] if unet_files else None,
            lora_hashes={},
        )

    def _activate(self, loaded: _Loaded, settings: Settings) -> None:
        """Make the settings' LoRA (and embedding) the only ones applied, swapping out the previous artist."""
        lora = settings.lora_file
        if lora is None:
            raise LoraFileError("the web app restyles with an artist LoRA; this run has none")
        stat = lora.stat()
        key = (str(lora.resolve()), stat.st_mtime_ns, stat.st_size)
        if loaded.adapter_key == key:
            return
        pipe = loaded.pipe
        if loaded.adapter is not None:
            pipe.delete_adapters([loaded.adapter])
            loaded.adapter = loaded.adapter_key = None
        self._unload_embedding(loaded)
        check_lora_fits(lora, pipe, settings.base_model)
        name = adapter_name(lora)
        pipe.load_lora_weights(str(lora), adapter_name=name)
        if not any(name in names for names in pipe.get_list_adapters().values()):
            raise LoraFileError(
                f"{lora}: diffusers found no LoRA layers it could apply to base {settings.base_model}; "
                "expected a diffusers- or kohya-format LoRA for this base"
            )
        loaded.adapter = name
        if settings.embedding_file is not None:
            before = _added_tokens(pipe)
            load_embedding(pipe, settings.embedding_file, settings.trigger_token, loaded.arch)
            loaded.embedding_tokens = tuple(
                tuple(sorted(after - old)) for old, after in zip(before, _added_tokens(pipe), strict=True)
            )
        loaded.lora_hashes[name] = file_sha256(lora, skip_header=True)[:12]
        loaded.adapter_key = key

    @staticmethod
    def _unload_embedding(loaded: _Loaded) -> None:
        pipe = loaded.pipe
        pairs = [("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2")]
        for tokens, (tokenizer, encoder) in zip(loaded.embedding_tokens, pairs, strict=False):
            if tokens:
                pipe.unload_textual_inversion(
                    list(tokens), tokenizer=getattr(pipe, tokenizer), text_encoder=getattr(pipe, encoder)
                )
        loaded.embedding_tokens = ()


def _added_tokens(pipe) -> list[set[str]]:
    tokenizers = [getattr(pipe, name, None) for name in ("tokenizer", "tokenizer_2")]
    return [
        {t.content for t in tokenizer.added_tokens_decoder.values() if not t.special}
        for tokenizer in tokenizers
        if tokenizer is not None
    ]
