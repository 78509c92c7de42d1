"""Evaluation (`python -m infer evaluate`): held-out style similarity, copies (through
infer/works/copy_check.py), content kept, the palette, checkpoint comparison, the report (HTML, JSON,
plots), and the copy-detection benchmark (`python -m infer.evaluate.copy_bench`).
May import: infer.restyle, infer.lora, infer.works, infer.bases, oeuvre."""
