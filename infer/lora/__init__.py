"""The LoRA files (`python -m infer lora`): diffusers and kohya layouts, which base a file is for,
metadata, the model card, inspect/convert/resize/merge/push, and training checkpoints as LoRA files.
May import: infer.bases, oeuvre. Never the app, evaluation or restyling: `push --with-app` is handed
the app's files by the command line."""
