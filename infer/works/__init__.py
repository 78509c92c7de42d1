"""The artist's works as vectors (`python -m infer nearest`): style descriptors (weights-free, CLIP,
CSD), the nearest-work index beside the dataset, and the copy check (is a picture an altered copy of
one work? through oeuvre/same_picture.py). Used by restyling, evaluation and the app.
May import: oeuvre only."""
