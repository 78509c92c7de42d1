"""Evaluation (`python -m infer evaluate`): held-out style similarity, the copy check, content kept,
checkpoint comparison, and the report (HTML, JSON, plots).
May import: infer.restyle, infer.lora, infer.works, infer.bases, oeuvre."""
