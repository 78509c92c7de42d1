"""infer: everything after training. One subpackage per concern; imports point down this list only:

    app       the Gradio web app and its Space template        may use evaluate, restyle, lora, works, bases
    evaluate  held-out style, copy check, content kept, report may use restyle, lora, works, bases
    restyle   img2img with the artist LoRA, sweeps, PNG info   may use lora, works, bases
    lora      the LoRA files: formats, metadata, card, tools   may use bases
    works     the artist's works as vectors: descriptors, index  uses none of the others
    bases     resolving a base model, the tiny offline builder uses none of the others

Every subpackage may use `oeuvre` (the shared core); none imports `train` or `data`. `infer/__main__.py`
only wires command names to the subpackages. tests/test_layout.py checks these rules.
"""
