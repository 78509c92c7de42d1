"""One img2img base in memory for the web app, with artist LoRAs swapped in and out through diffusers'
adapter API (load_lora_weights(adapter_name=...) / set_adapters / delete_adapters) instead of reloading it.

The restyling itself is the restyle command's Restyler over the kept base (loaded by the same
`load_base`/`attach_lora`), with the LoRA unfused (so the next artist can swap in) and each denoising
step reported for the progress bar.
"""

from __future__ import annotations

import gc
import queue
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from infer.lora.files import LoraFileError
from infer.restyle.restyler import (
    LoadedBase,
    Restyler,
    attach_lora,
    control_pipeline,
    load_base,
    load_embedding,
)
from infer.restyle.settings import Settings

StepCallback = Callable[[int, int], None]  # (steps done, steps in this call)
LOADING = threading.Lock()


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


@dataclass
class _Loaded:
    base: LoadedBase
    adapter: str | None = None  # the one artist LoRA loaded now
    adapter_key: tuple | None = None  # (file, mtime, size): a retrained LoRA is reloaded
    embedding_tokens: tuple[tuple[str, ...], ...] = ()  # tokens added per tokenizer
    lora_hashes: dict = field(default_factory=dict)


def adapter_name(lora_file: Path) -> str:
    return "artist_" + re.sub(r"[^A-Za-z0-9_]", "_", lora_file.stem)


class KeeperPool:
    """One PipelineKeeper per worker: a request borrows a free one (waiting while all are busy), so
    `workers` renders run at once, each on its own pipeline; memory grows by one base per worker."""

    def __init__(self, workers: int) -> None:
        self.keepers = [PipelineKeeper() for _ in range(workers)]
        self._free: queue.SimpleQueue[PipelineKeeper] = queue.SimpleQueue()
        for keeper in self.keepers:
            self._free.put(keeper)

    @contextmanager
    def borrow(self) -> Iterator[PipelineKeeper]:
        keeper = self._free.get()
        try:
            with keeper.lock:
                yield keeper
        finally:
            self._free.put(keeper)


class PipelineKeeper:
    """Holds at most one base pipeline; `restyler(settings)` returns it with the settings' LoRA active.

    Calls are serialised by its lock (KeeperPool hands each worker its own keeper). After any
    failure while swapping, the pipeline is dropped, so the next request starts from a clean base."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: _Loaded | None = None
        self.base_loads = 0  # how many times a base was loaded (tests check swaps do not reload it)

    @property
    def lock(self) -> threading.Lock:
        return self._lock

    def restyler(self, settings: Settings, on_step: StepCallback | None = None) -> Restyler:
        """Call with `lock` held. Loads the base only when it differs from the one in memory."""
        from oeuvre.devices import choose_device, choose_dtype

        device = choose_device(settings.device)
        dtype = choose_dtype(device, settings.dtype)
        # Loading is one worker at a time: diffusers' and transformers' loaders patch torch globally
        # (empty-weight init), so a load beside another worker's embedding swap corrupts it. Renders
        # themselves run side by side.
        with LOADING:
            loaded = self._loaded
            if loaded is None or (loaded.base.base_model, loaded.base.device, loaded.base.dtype) != (
                settings.base_model,
                device,
                dtype,
            ):
                self.drop()
                loaded = self._loaded = _Loaded(load_base(settings.base_model, device, dtype))
                self.base_loads += 1
            try:
                self._activate(loaded, settings)
                # ControlNets load once and stay with the base (only LoRAs swap); several control
                # pipelines over the same base share its modules.
                pipe = control_pipeline(loaded.base, tuple(c.model for c in settings.controls))
            except BaseException:
                self.drop()
                raise
        pipe = _StepReporting(pipe, on_step)
        lora_hash = loaded.lora_hashes.get(loaded.adapter)
        return Restyler(settings, loaded.base, loaded.adapter, lora_hash, fused=False, pipe=pipe)

    def drop(self) -> None:
        self._loaded = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover - torch is a dependency
            pass

    def _activate(self, loaded: _Loaded, settings: Settings) -> None:
        """Make the settings' LoRA (and embedding) the only ones applied, swapping out the previous artist."""
        lora = settings.lora_file
        if lora is None:
            raise LoraFileError("the web app restyles with an artist LoRA; this run has none")
        stat = lora.stat()
        key = (str(lora.resolve()), stat.st_mtime_ns, stat.st_size)
        if loaded.adapter_key == key:
            return
        pipe = loaded.base.pipe
        if loaded.adapter is not None:
            pipe.delete_adapters([loaded.adapter])
            loaded.adapter = loaded.adapter_key = None
        self._unload_embedding(loaded)
        name = adapter_name(lora)
        loaded.lora_hashes[name] = attach_lora(loaded.base, lora, name)
        loaded.adapter = name
        if settings.embedding_file is not None:
            before = _added_tokens(pipe)
            load_embedding(pipe, settings.embedding_file, settings.trigger_token, loaded.base.arch)
            loaded.embedding_tokens = tuple(
                tuple(sorted(after - old)) for old, after in zip(before, _added_tokens(pipe), strict=True)
            )
        loaded.adapter_key = key

    @staticmethod
    def _unload_embedding(loaded: _Loaded) -> None:
        pipe = loaded.base.pipe
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
