"""Which checkpoint, strength and LoRA scale to recommend, from held-out evidence: the decision rule alone.

A cell is one (checkpoint step, strength, scale) setting with its mean held-out style similarity, mean
content kept and the number of outputs flagged as copies. Eligible cells keep content at or above a
floor and copy nothing; the choice is the eligible cell with the highest style similarity, ties (to
TIE_DIGITS decimals) going to the earlier checkpoint, then the lower scale, then the lower strength.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

TIE_DIGITS = 6  # style similarities equal to this many decimals are a tie
FLOOR_FRACTION = 0.9  # default floor: this fraction of the base model's own content kept


@dataclass(frozen=True)
class Cell:
    """One setting of the grid and the figures measured for it (means over the content images)."""

    step: int
    strength: float
    scale: float
    style: float
    content_kept: float
    copies: int

    def eligible(self, floor: float) -> bool:
        return self.content_kept >= floor and self.copies == 0

    def rank(self) -> tuple:
        """Sort key: best first."""
        return (-round(self.style, TIE_DIGITS), self.step, self.scale, self.strength)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Recommendation:
    """The choice and the runner-up (None where no cell, or only one, is eligible), and the evidence."""

    choice: Cell | None
    runner_up: Cell | None
    floor: float
    cells: tuple[Cell, ...]

    def to_json(self) -> dict:
        return {
            "choice": self.choice.to_json() if self.choice else None,
            "runner_up": self.runner_up.to_json() if self.runner_up else None,
            "floor": self.floor,
            "rule": RULE,
            "cells": [c.to_json() for c in self.cells],
        }

    @classmethod
    def from_json(cls, data: dict) -> Recommendation:
        def cell(value: dict | None) -> Cell | None:
            return Cell(**value) if value else None

        cells = tuple(Cell(**c) for c in data["cells"])
        return cls(cell(data["choice"]), cell(data["runner_up"]), float(data["floor"]), cells)


RULE = (
    "highest held-out style similarity among the settings whose content kept is at least the floor and "
    "whose outputs copy no training work; ties go to the earlier checkpoint, then the lower scale"
)


def default_floor(base_content_kept: float) -> float:
    """The floor when the config leaves it null: a fraction of what the base model alone keeps."""
    return round(FLOOR_FRACTION * base_content_kept, 4)


def recommend(cells: Iterable[Cell], floor: float) -> Recommendation:
    """The best eligible cell and the next one (see the module docstring for the rule)."""
    cells = tuple(cells)
    ranked = sorted((c for c in cells if c.eligible(floor)), key=Cell.rank)
    return Recommendation(
        choice=ranked[0] if ranked else None,
        runner_up=ranked[1] if len(ranked) > 1 else None,
        floor=floor,
        cells=cells,
    )


def describe(cell: Cell) -> str:
    return (
        f"step {cell.step}, strength {cell.strength:g}, scale {cell.scale:g}: style {cell.style:.4f}, "
        f"content kept {cell.content_kept:.3f}, copies {cell.copies}"
    )
