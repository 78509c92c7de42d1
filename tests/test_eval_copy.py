"""Copy check and content kept: copy-sensitive, not style-sensitive."""

from __future__ import annotations

from PIL import Image, ImageFilter

from data.synth import paint_artist
from infer.evaluate.content_kept import content_kept
from infer.evaluate.copy_check import copy_features, nearest_copy
from infer.restyle.content import house
from oeuvre.phash import phash


def _works(tmp_path, n=6):
    return [Image.open(p).convert("RGB") for p in paint_artist(tmp_path, "swirl", n=n, seed=1, size_px=96)]


def test_output_identical_to_a_training_image_is_flagged_as_that_copy(tmp_path):
    works = _works(tmp_path)
    match = nearest_copy(copy_features(works[3].copy()), [copy_features(w) for w in works])
    assert match.flagged and match.index == 3 and match.phash_distance == 0


def test_resized_reencoded_copy_is_still_flagged(tmp_path):
    works = _works(tmp_path)
    copy = works[2].resize((64, 64), Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(0.6))
    match = nearest_copy(copy_features(copy), [copy_features(w) for w in works])
    assert match.flagged and match.index == 2


def test_a_new_work_in_the_same_style_is_not_flagged(tmp_path):
    works = _works(tmp_path, n=8)
    match = nearest_copy(copy_features(works[7]), [copy_features(w) for w in works[:7]])
    assert not match.flagged


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
