"""The web app (`python -m infer app`): page layout, button handlers, the kept pipeline, run discovery,
the Nearest-works tab and the Space template that `lora push --with-app` uploads.
May import: infer.evaluate, infer.restyle, infer.lora, infer.works, infer.bases, oeuvre."""
