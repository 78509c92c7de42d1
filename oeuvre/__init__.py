"""Shared plumbing for oeuvre: config schema and loader, run paths, errors, device choice.

Imports none of `data`, `train` or `infer`; they import from here.
"""

__version__ = "0.1.0"
