"""Restyling (`python -m infer restyle`, `content`): settings resolution, the one base+LoRA loader and
its Restyler, A1111 `parameters` PNG metadata, sweeps, the nearest-work reference, its bench.
May import: infer.lora, infer.works, infer.bases, oeuvre."""
