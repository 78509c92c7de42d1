"""The artist's works as vectors (`python -m infer nearest`): style descriptors (weights-free, CLIP,
CSD) and the nearest-work index beside the dataset. Used by restyling, evaluation and the app.
May import: oeuvre only."""
