"""The package layout's rules (infer/__init__.py): imports point one way, and nothing runs back up."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What each infer subpackage may import from infer (besides itself); every one may import oeuvre.
ALLOWED = {
    "bases": set(),
    "works": set(),
    "lora": {"bases"},
    "restyle": {"lora", "works", "bases"},
    "evaluate": {"restyle", "lora", "works", "bases"},
    "app": {"evaluate", "restyle", "lora", "works", "bases"},
}


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at its top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_infer_subpackages_import_only_downwards():
    wrong = []
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / "infer" / package).glob("*.py")):
            for module in imported_modules(path):
                parts = module.split(".")
                upward = parts[0] == "infer" and len(parts) > 1 and parts[1] not in (package, *allowed)
                if parts[0] in ("train", "data") or upward:
                    wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_core_and_data_never_import_infer_or_train():
    wrong = [
        f"{path.relative_to(ROOT)} imports {module}"
        for folder, banned in (("oeuvre", ("infer", "train", "data")), ("data", ("infer", "train")))
        for path in sorted((ROOT / folder).glob("*.py"))
        for module in imported_modules(path)
        if module.split(".")[0] in banned
    ]
    assert not wrong, "\n".join(wrong)


def test_every_infer_module_sits_in_a_subpackage():
    loose = sorted(p.name for p in (ROOT / "infer").glob("*.py"))
    # __main__ wires commands; app_space.py is the old import path of Spaces pushed before the layout.
    assert loose == ["__init__.py", "__main__.py", "app_space.py"]
