"""`python -m infer lora ...`: inspect, convert, resize, merge, push --dry-run, and bad input refused."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from lora_helpers import make_random_embedding, make_random_lora
from safetensors.torch import load_file, save_file

from infer.lora.files import LoraFileError, read_lora_metadata
from infer.lora.tools import load_lora, merge, push, resize, save_lora


@pytest.fixture
def cli(capsys):
    """`python -m infer ARGS` in this process (the subprocess path is checked once, by inspect):
    returns (exit code, stdout, stderr)."""
    from infer.__main__ import main
    from oeuvre.cli import run_main

    def run(module, *args):
        assert module == "infer"
        with pytest.raises(SystemExit) as info:
            run_main(main, [str(a) for a in args])
        out = capsys.readouterr()
        return info.value.code, out.out, out.err

    return run


def _delta(lora, component, module):
    c = lora.components[component]
    return (c.alpha[module] / c.rank(module)) * c.up[module].double() @ c.down[module].double()


@pytest.fixture(scope="module")
def pair(tiny_bases, tmp_path_factory):
    """Two SD 1.5 LoRAs of the same base (different seeds), rank 4, alpha 8."""
    root = tmp_path_factory.mktemp("pair")
    base = tiny_bases["sd15"]
    return [make_random_lora(base, "sd15", root / f"{n}.safetensors", seed=n) for n in (1, 2)]


def test_inspect_reports_format_arch_rank_alpha_targets_and_trigger(run_cli, tiny_loras, tmp_path):
    result = run_cli("infer", "lora", "inspect", tiny_loras["sdxl"], "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert (info["format"], info["arch"], info["rank"], info["alpha"]) == ("diffusers", "sdxl", 4, 8.0)
    assert info["targets"]["unet"]["layer_types"] == ["to_k", "to_out.0", "to_q", "to_v"]
    assert info["trigger"] == "<tiny>" and info["parameters"] > 0
    assert info["metadata"]["oeuvre.base_model"]
    text = run_cli("infer", "lora", "inspect", tiny_loras["sd15"]).stdout
    assert "format: diffusers" in text and "rank: 4" in text and "alpha: 8.0" in text


def test_inspect_knows_an_embedding_file(tmp_path):
    from infer.lora.tools import inspect_file

    info = inspect_file(make_random_embedding("sdxl", tmp_path / "e_emb.safetensors"))
    assert info["format"] == "embedding" and info["arch"] == "sdxl"
    assert info["vectors"] == {"clip_l": [2, 32], "clip_g": [2, 32]}


def test_convert_cli_both_directions_carries_metadata(cli, tiny_loras, tmp_path):
    kohya_out, back = tmp_path / "k.safetensors", tmp_path / "d.safetensors"
    result = cli("infer", "lora", "convert", tiny_loras["sd15"], "--to", "kohya", kohya_out)
    assert result[0] == 0, result[2]
    assert any(key.startswith("lora_unet_") for key in load_file(kohya_out))
    assert cli("infer", "lora", "convert", kohya_out, "--to", "diffusers", back)[0] == 0
    assert any(key.startswith("unet.") for key in load_file(back))
    for path in (kohya_out, back):
        assert read_lora_metadata(path)["oeuvre.caption"] == "a painting in the style of <tiny>"


def test_resize_keeps_the_best_low_rank_update_and_reports_its_energy(pair):
    lora = load_lora(pair[0])
    smaller, retained = resize(lora, 2)
    assert 0.0 < retained < 1.0
    original_sq = resized_error_sq = 0.0
    for component, c in lora.components.items():
        for module in c.down:
            assert smaller.components[component].rank(module) == 2
            full, low = _delta(lora, component, module), _delta(smaller, component, module)
            original_sq += float(full.pow(2).sum())
            resized_error_sq += float((full - low).pow(2).sum())
    # Eckart-Young: what the truncation drops is exactly the energy it reports as lost.
    assert resized_error_sq / original_sq == pytest.approx(1.0 - retained, rel=1e-4)


def test_resize_to_the_same_rank_changes_nothing(pair):
    lora = load_lora(pair[0])
    same, retained = resize(lora, 4)
    assert retained == pytest.approx(1.0)
    module = next(iter(lora.components["unet"].down))
    assert torch.allclose(_delta(lora, "unet", module), _delta(same, "unet", module), atol=1e-6)


def test_resize_cli_prints_retained_energy_and_writes_lower_rank(cli, pair, tmp_path):
    out = tmp_path / "r2.safetensors"
    result = cli("infer", "lora", "resize", pair[0], "--rank", "2", out)
    assert result[0] == 0, result[2]
    assert "retained energy" in result[1]
    unet = load_lora(out).components["unet"]
    assert {unet.rank(module) for module in unet.down} == {2}
    assert read_lora_metadata(out)["ss_network_dim"] == "2"


def test_merge_is_the_weighted_sum_of_both_updates(pair, tmp_path):
    a, b = load_lora(pair[0]), load_lora(pair[1])
    merged = load_lora(save_lora(merge(a, b, (0.7, 0.3)), tmp_path / "m.safetensors", "diffusers"))
    for module in a.components["unet"].down:
        expected = 0.7 * _delta(a, "unet", module) + 0.3 * _delta(b, "unet", module)
        assert torch.allclose(_delta(merged, "unet", module), expected, atol=1e-6)


def test_merge_cli_takes_weights(cli, pair, tmp_path):
    out = tmp_path / "m.safetensors"
    result = cli("infer", "lora", "merge", pair[0], pair[1], out, "--weights", "0.7,0.3")
    assert result[0] == 0, result[2]
    assert json.loads(read_lora_metadata(out)["oeuvre.merge_weights"]) == [0.7, 0.3]
    bad = cli("infer", "lora", "merge", pair[0], pair[1], out, "--weights", "0.7")
    assert bad[0] == 2 and "expected two comma-separated numbers" in bad[2]


def test_merge_of_different_architectures_refused(cli, tiny_loras, tmp_path):
    result = cli("infer", "lora", "merge", tiny_loras["sd15"], tiny_loras["sdxl"], tmp_path / "m.safetensors")
    assert result[0] == 2
    assert result[2].count("\n") == 1 and "expected the same base" in result[2]
    assert str(tiny_loras["sdxl"]) in result[2]


def test_merge_of_different_bases_refused(tiny_bases, pair, tmp_path):
    other = make_random_lora(
        tiny_bases["sd15"], "sd15", tmp_path / "o.safetensors", metadata={"oeuvre.base_model": "some/other"}
    )
    with pytest.raises(LoraFileError, match="expected LoRAs of the same base") as info:
        merge(load_lora(pair[0]), load_lora(other))
    assert "o.safetensors" in str(info.value)


def _run_folder(tmp_path, lora):
    folder = tmp_path / "run" / "lora"
    (folder / "samples").mkdir(parents=True)
    (folder / "demo.safetensors").write_bytes(lora.read_bytes())
    (folder / "README.md").write_text("---\nlicense: other\n---\n# card\n")
    (folder / "samples" / "step-000002.png").write_bytes(b"png")
    return folder.parent


def test_push_dry_run_lists_what_would_go_up(cli, tiny_loras, tmp_path):
    run_dir = _run_folder(tmp_path, tiny_loras["sd15"])
    result = cli("infer", "lora", "push", run_dir, "--repo", "me/demo-style", "--private", "--dry-run")
    assert result[0] == 0, result[2]
    assert "would upload 3 files to https://huggingface.co/me/demo-style (private)" in result[1]
    for name in ("README.md", "demo.safetensors", "samples/step-000002.png"):
        assert name in result[1]


def test_push_sends_one_commit_through_the_hub_api(tiny_loras, tmp_path):
    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs["private"]))

        def create_commit(self, repo_id, operations, **kwargs):
            calls.append(("create_commit", repo_id, sorted(op.path_in_repo for op in operations)))

    push(_run_folder(tmp_path, tiny_loras["sd15"]), "me/demo", private=True, api=FakeApi())
    assert calls == [
        ("create_repo", "me/demo", True),
        ("create_commit", "me/demo", ["README.md", "demo.safetensors", "samples/step-000002.png"]),
    ]


def test_push_refuses_a_bad_repo_id_and_a_folder_without_lora(cli, tmp_path):
    bad = cli("infer", "lora", "push", tmp_path, "--repo", "no-slash", "--dry-run")
    assert bad[0] == 2 and "expected USER/NAME" in bad[2]
    missing = cli("infer", "lora", "push", tmp_path, "--repo", "me/x", "--dry-run")
    assert missing[0] == 2 and "no lora/ folder" in missing[2]


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin"])
def test_pickled_files_refused_by_the_tools_without_unpickling(cli, tmp_path, suffix):
    marker = tmp_path / "UNPICKLED"  # an absolute path: unpickling would write it wherever the cwd is

    class Boom:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('x')",))

    path = tmp_path / f"evil{suffix}"
    path.write_bytes(pickle.dumps(Boom()))
    result = cli("infer", "lora", "convert", path, "--to", "kohya", tmp_path / "o.safetensors")
    # The refusal's own words: the pytest temp path already holds "pickle".
    assert result[0] == 2 and "pickles that can run code" in result[2] and result[2].count("\n") == 1
    assert not marker.exists() and not (tmp_path / "o.safetensors").exists()


def test_truncated_file_is_a_one_line_error(cli, tiny_loras, tmp_path):
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(tiny_loras["sd15"].read_bytes()[:1000])
    result = cli("infer", "lora", "inspect", cut)
    assert result[0] == 2 and "truncated or corrupt" in result[2]
    assert result[2].count("\n") == 1 and "cut.safetensors" in result[2]


def test_file_without_lora_keys_is_refused(cli, tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"conv_in.weight": torch.zeros(2, 2)}, path)
    result = cli("infer", "lora", "resize", path, "--rank", "2", tmp_path / "o.safetensors")
    assert result[0] == 2 and "no LoRA keys" in result[2] and "model.safetensors" in result[2]


def test_embedding_is_not_taken_for_a_lora(tmp_path):
    path = make_random_embedding("sd15", tmp_path / "e_emb.safetensors")
    with pytest.raises(LoraFileError, match="token embedding, not a LoRA"):
        load_lora(path)


def test_dora_is_inspected_converted_and_refused_by_resize_and_merge_with_the_reason(
    cli, tiny_bases, pair, tmp_path
):
    dora = make_random_lora(tiny_bases["sd15"], "sd15", tmp_path / "dora.safetensors", dora=True)
    code, out, _ = cli("infer", "lora", "inspect", dora, "--json")
    assert code == 0 and json.loads(out)["dora"] is True
    code, _, _ = cli("infer", "lora", "convert", dora, "--to", "kohya", tmp_path / "k.safetensors")
    assert code == 0 and any(k.endswith(".dora_scale") for k in load_file(tmp_path / "k.safetensors"))
    code, _, err = cli("infer", "lora", "resize", dora, "--rank", "2", tmp_path / "r.safetensors")
    assert code == 2 and "DoRA" in err and "retrain" in err
    code, _, err = cli("infer", "lora", "merge", pair[0], dora, tmp_path / "m.safetensors")
    assert code == 2 and "DoRA" in err and "not linear" in err
