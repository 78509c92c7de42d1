"""Copy check and content kept: copy-sensitive, not style-sensitive."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.synth import paint_artist
from infer.evaluate import alterations
from infer.evaluate.content_kept import content_kept
from infer.restyle.content import house
from infer.works.copy_check import copy_features, nearest_copy, work_features
from oeuvre.phash import phash
from oeuvre.same_picture_index import PictureIndex

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "paintings"


def _works(tmp_path, n=6, size_px=192):
    return [
        Image.open(p).convert("RGB") for p in paint_artist(tmp_path, "swirl", n=n, seed=1, size_px=size_px)
    ]


def test_output_identical_to_a_training_image_is_flagged_as_that_copy(tmp_path):
    works = _works(tmp_path)
    match = nearest_copy(copy_features(works[3].copy()), [work_features(w) for w in works])
    assert match.flagged and match.index == 3 and match.match.work_coverage > 0.95


# The simulated restyle is checked on the real paintings (test_copy_bench): it repaints the synthetic
# artists' fine strokes, which is most of what they are.
ALTERED = ["mild", "crop", "rescale", "jpeg", "colour", "flip", "rotate", "blur", "combined"]


@pytest.mark.parametrize("alteration", ALTERED)
def test_altered_copy_is_flagged_against_the_right_original(tmp_path, alteration):
    works = _works(tmp_path)
    index = PictureIndex([work_features(w) for w in works])
    altered = getattr(alterations, alteration)(works[2], np.random.default_rng(7))
    match = nearest_copy(copy_features(altered), index)
    assert match.flagged and match.index == 2, match.match


def test_a_crop_is_outlined_where_it_was_taken(tmp_path):
    work = _works(tmp_path, n=1)[0]
    detail = work.crop((96, 0, 192, 120))  # the right half, top 62 %
    match = nearest_copy(copy_features(detail), [work_features(work)])
    x0, y0, x1, y1 = match.match.region
    assert match.flagged and abs(x0 - 0.5) < 0.05 and x1 > 0.95 and y0 < 0.05 and abs(y1 - 0.625) < 0.05


def test_a_new_work_by_the_same_artist_is_not_flagged(tmp_path):
    works = _works(tmp_path, n=8)
    index = PictureIndex([work_features(w) for w in works[:7]])
    assert not nearest_copy(copy_features(works[7]), index).flagged
    restyled = alterations.restyle(works[7], np.random.default_rng(0))  # not a copy of any of them either
    assert not nearest_copy(copy_features(restyled), index).flagged


def test_phash_of_identical_images_matches_and_differs_for_other_layouts(tmp_path):
    works = _works(tmp_path, n=2)
    assert phash(works[0]) == phash(works[0].copy())
    assert phash(works[0]) != phash(works[1])


def test_content_kept_is_one_for_the_content_itself_and_lower_for_another_picture(tmp_path):
    content = house(96)
    same = content_kept(content, content.copy())
    other = content_kept(content, _works(tmp_path, n=1)[0])
    assert same["content_kept"] > 0.999
    assert other["content_kept"] < 0.5 and set(other) == {"ssim_luma", "ssim_edges", "content_kept"}


def test_content_kept_prefers_a_recoloured_content_to_an_unrelated_image(tmp_path):
    content = house(96)
    recoloured = Image.merge("RGB", content.split()[::-1])  # same layout, other colours
    assert (
        content_kept(content, recoloured)["content_kept"]
        > content_kept(content, _works(tmp_path, 1)[0])["content_kept"]
    )


@pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"real paintings not present at {FIXTURES}")
def test_mildly_altered_and_restyled_paintings_are_flagged_against_their_original():
    paths = sorted(FIXTURES.rglob("*.jpg"))
    works = [Image.open(p).convert("RGB") for p in paths]
    index = PictureIndex([work_features(w) for w in works])
    rng = np.random.default_rng(1)
    for i, work in enumerate(works):
        for alter in (alterations.mild, alterations.restyle):
            match = nearest_copy(copy_features(alter(work, rng)), index)
            assert match.flagged and match.index == i, (paths[i].name, alter.__name__, match.match)
    photo = Image.open(FIXTURES.parent / "photos" / "tubingen.png").convert("RGB")
    assert not nearest_copy(copy_features(alterations.restyle(photo, rng)), index).flagged
