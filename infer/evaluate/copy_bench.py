"""`python -m infer.evaluate.copy_bench`: how well the copy check sees altered copies, and how fast.

Positives: altered versions of each work (infer/evaluate/alterations.py), from ../shared/fixtures/paintings
when present, else two synthetic artists painted by `python -m data synth` (run as a command: infer/ does
not import data/). A positive counts only when its nearest work is its own original. Negatives: each
query's best score against every *other* work (the artist's others and other artists'), and restyles of
unrelated content (photos, the built-in scenes). Prints one JSON object: per alteration the true-positive
rate at zero false flags (threshold just above the best negative), the rate at the shipped threshold,
ROC AUC; comparisons per second; and the full check of N outputs against M works, timed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from infer.evaluate import alterations
from infer.works.copy_check import copy_features, work_features
from oeuvre.same_picture import COPY_INLIERS, verify
from oeuvre.same_picture_index import PictureIndex

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"


def load_works(folder: Path | None) -> tuple[str, list[Image.Image], list[Image.Image]]:
    """(source, works, unrelated content images)."""
    from infer.restyle.content import harbour, house, portrait

    unrelated = [scene(384) for scene in (house, harbour, portrait)]
    if folder is not None and (folder / "paintings").is_dir():
        works = [Image.open(p).convert("RGB") for p in sorted((folder / "paintings").rglob("*.jpg"))]
        unrelated += [Image.open(p).convert("RGB") for p in sorted((folder / "photos").glob("*.png"))]
        unrelated += [
            Image.open(p).convert("RGB") for p in sorted((folder / "single_image_transfer").glob("*"))
        ]
        return f"fixtures ({folder / 'paintings'})", works, unrelated
    works = []
    with tempfile.TemporaryDirectory(prefix="oeuvre-copy-bench-") as tmp:
        for style in ("swirl", "wash"):
            command = [sys.executable, "-m", "data", "synth", f"{tmp}/{style}", "--style", style]
            subprocess.run(
                [*command, "--n", "6", "--seed", "3", "--size", "384"], check=True, capture_output=True
            )
            works += [Image.open(p).convert("RGB") for p in sorted(Path(tmp, style).glob("*.png"))]
    return "synthetic artists (python -m data synth: swirl, wash)", works, unrelated


def roc_auc(positives: list[float], negatives: list[float]) -> float:
    """Probability that a positive outscores a negative (ties count half): the area under the ROC."""
    p, n = np.asarray(positives, float)[:, None], np.asarray(negatives, float)[None, :]
    return float(((p > n).sum() + 0.5 * (p == n).sum()) / max(1, p.size * n.size))


def measure(works: list[Image.Image], unrelated: list[Image.Image], repeats: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    index = PictureIndex([work_features(w) for w in works])
    positives: dict[str, list[float]] = {name: [] for name in alterations.ALTERATIONS}
    negatives: list[float] = []
    for name, alter in alterations.ALTERATIONS.items():
        for i, work in enumerate(works):
            for _ in range(repeats):
                found = index.search(copy_features(alter(work, rng)))
                own = [m.inliers for j, m in found if j == i]
                others = [m.inliers for j, m in found if j != i]
                top_is_own = found[0][0] == i
                positives[name].append(own[0] if own and top_is_own else 0)
                negatives.append(max(others, default=0))
    for content in unrelated:
        for query in (content, alterations.restyle(content, rng)):
            negatives.append(max((m.inliers for _, m in index.search(copy_features(query))), default=0))
    zero_false = max(negatives) + 1
    rows = {
        name: {
            "n": len(scores),
            "tpr_at_zero_false_flags": round(float(np.mean([s >= zero_false for s in scores])), 3),
            "tpr_at_shipped_threshold": round(float(np.mean([s >= COPY_INLIERS for s in scores])), 3),
            "auc": round(roc_auc(scores, negatives), 4),
            "min_score": min(scores),
        }
        for name, scores in positives.items()
    }
    every = [s for scores in positives.values() for s in scores]
    rows["all"] = {
        "n": len(every),
        "tpr_at_zero_false_flags": round(float(np.mean([s >= zero_false for s in every])), 3),
        "tpr_at_shipped_threshold": round(float(np.mean([s >= COPY_INLIERS for s in every])), 3),
        "auc": round(roc_auc(every, negatives), 4),
        "min_score": min(every),
    }
    false_flags = sum(n >= COPY_INLIERS for n in negatives)
    return {
        "alterations": rows,
        "negatives": len(negatives),
        "max_negative_score": max(negatives),
        "shipped_threshold": COPY_INLIERS,
        "false_flags_at_shipped_threshold": false_flags,
    }


def comparisons_per_s(works: list[Image.Image], seconds: float = 3.0) -> float:
    """Geometric verifications (query with its mirror against one work) per second, one process."""
    query, targets = copy_features(works[0]), [work_features(w) for w in works[1:6]]
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for target in targets:
            verify(query, target)
        done += len(targets)
    return done / (time.perf_counter() - start)


def scale_check(works: list[Image.Image], n_outputs: int, n_works: int, seed: int) -> dict:
    """The whole check of `n_outputs` outputs against `n_works` works (the real ones plus distinct filler
    pictures): the works' features (built once per dataset, then cached) timed apart from the check."""
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    features = [work_features(w) for w in works]
    for _ in range(n_works - len(works)):
        low = rng.uniform(0, 255, (10, 10, 3)).astype(np.uint8)
        filler = np.asarray(Image.fromarray(low).resize((256, 256), Image.Resampling.BICUBIC), np.float32)
        filler += rng.normal(0, 14, filler.shape)
        features.append(work_features(Image.fromarray(np.clip(filler, 0, 255).astype(np.uint8))))
    works_s = time.perf_counter() - start
    outputs = [alterations.combined(works[i % len(works)], rng) for i in range(n_outputs)]
    start = time.perf_counter()
    index = PictureIndex(features)
    found = [index.search(copy_features(o)) for o in outputs]
    check_s = time.perf_counter() - start
    right = sum(f[0][0] == i % len(works) and f[0][1].same_picture for i, f in enumerate(found))
    return {
        "outputs": n_outputs,
        "works": n_works,
        "check_s": round(check_s, 1),
        "work_features_s": round(works_s, 1),
        "flagged_right_original": right,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m infer.evaluate.copy_bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--fixtures", type=Path, default=FIXTURES, help="folder with paintings/ (else synthetic)"
    )
    parser.add_argument("--repeats", type=int, default=2, help="altered versions per work and alteration")
    parser.add_argument("--outputs", type=int, default=100)
    parser.add_argument("--works", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    source, works, unrelated = load_works(args.fixtures)
    start = time.perf_counter()
    result = {
        "works_from": source,
        "n_works": len(works),
        **measure(works, unrelated, args.repeats, args.seed),
    }
    result["measure_s"] = round(time.perf_counter() - start, 1)
    result["comparisons_per_s"] = round(comparisons_per_s(works), 1)
    result["scale"] = scale_check(works, args.outputs, args.works, args.seed)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
