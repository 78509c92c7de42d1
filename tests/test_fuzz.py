"""Bad files get one clear line: a seeded fuzz over configs, LoRA files, images and prompts. Every case
ends in success or the project's own one-line `error:` with its exit status, never a traceback or a
hang, and the input file is byte-identical afterwards."""

from __future__ import annotations

import dataclasses
import json
import random
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oeuvre.cli import run_main
from oeuvre.config_schema import Config

REPO = Path(__file__).resolve().parents[1]
SEED = 20261201


def outcome(capsys, main, argv) -> tuple[int, str]:
    """(exit code, stderr) of a CLI run in this process; any exception that is not the project's own
    one-line error escapes run_main and fails the test with its traceback."""
    with pytest.raises(SystemExit) as exited:
        run_main(main, [str(a) for a in argv])
    return int(exited.value.code or 0), capsys.readouterr().err


def assert_one_line_or_success(code: int, err: str, case: str) -> None:
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("skipped:")]
    if code == 0:
        return
    assert "Traceback" not in err, f"{case}: {err}"
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{case}: exit {code}, stderr {err!r}"


def _keys() -> list[tuple[str, str]]:
    sections = {f.name: f.type for f in dataclasses.fields(Config)}
    from oeuvre import config_schema

    out = [("", name) for name in sections if name not in ("data", "train", "infer", "app")]
    for section in ("train", "infer", "app"):
        cls = getattr(config_schema, f"{section.capitalize()}Config")
        out += [(section, f.name) for f in dataclasses.fields(cls)]
    return out


def config_cases(rng: random.Random, text: str, count: int) -> list[tuple[str, str]]:
    keys = _keys()
    wrong_values = ["abc", "[1, 2]", "{a: 1}", "-5", "1.0e30", "null", "''", "yes", "0.5"]
    cases = []
    for index in range(count):
        kind = index % 4
        if kind == 0:  # a misspelt or unknown key
            section, key = rng.choice(keys)
            bad = key[:-1] + rng.choice("xyz") if len(key) > 2 else key + "_"
            body = f"{section}:\n  {bad}: 1\n" if section else f"{bad}: 1\n"
        elif kind == 1:  # a wrong type or out-of-range value
            section, key = rng.choice(keys)
            value = rng.choice(wrong_values)
            body = f"{section}:\n  {key}: {value}\n" if section else f"{key}: {value}\n"
        elif kind == 2:  # YAML broken by a stray character
            at = rng.randrange(len(text))
            body = text[:at] + rng.choice([":", "[", "{", "\t", "- ", '"', "&x *y"]) + text[at:]
        else:  # a file cut short
            body = text[: rng.randrange(len(text))]
        cases.append((f"config {index} ({['key', 'value', 'yaml', 'cut'][kind]})", body))
    return cases


def test_fuzzed_configs_fail_with_one_line_or_load(capsys, tmp_path):
    from data.__main__ import main

    rng = random.Random(SEED)
    text = (REPO / "configs" / "demo.yaml").read_text()
    failures = 0
    for case, body in config_cases(rng, text, 60):
        path = tmp_path / "artist.yaml"
        path.write_text(body)
        before = path.read_bytes()
        code, err = outcome(capsys, main, [path, "--dry-run"])
        assert_one_line_or_success(code, err, f"{case}: {body[:200]!r}")
        failures += code != 0
        assert path.read_bytes() == before
    assert failures >= 30  # most mutations are errors (36 of 60 on configs/demo.yaml): not a pass-through


def lora_cases(rng: random.Random, data: bytes, count: int) -> list[tuple[str, bytes]]:
    header_len = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + header_len])
    cases = []
    for index in range(count):
        kind = index % 5
        if kind == 0:  # truncated anywhere
            body = data[: rng.randrange(len(data))]
        elif kind == 1:  # a header length that lies (huge, or past the end)
            body = struct.pack("<Q", rng.choice([2**63, len(data), header_len + 7])) + data[8:]
        elif kind == 2:  # bytes flipped inside the header
            body = bytearray(data)
            for _ in range(3):
                body[8 + rng.randrange(header_len)] ^= rng.randrange(1, 256)
            body = bytes(body)
        elif kind == 3:  # a tensor's dtype changed (sizes no longer match its offsets, or ints)
            changed = dict(header)
            name = rng.choice([k for k in changed if k != "__metadata__"])
            changed[name] = {**changed[name], "dtype": rng.choice(["I8", "BOOL", "F64", "U8"])}
            raw = json.dumps(changed).encode()
            body = struct.pack("<Q", len(raw)) + raw + data[8 + header_len :]
        else:  # not safetensors at all
            body = rng.choice([b"", b"PK\x03\x04zip", b"{}", bytes(rng.randrange(256) for _ in range(64))])
        cases.append((f"lora {index} (kind {kind})", body))
    return cases


def test_fuzzed_lora_files_fail_with_one_line(capsys, tmp_path, tiny_loras):
    from infer.__main__ import main

    rng = random.Random(SEED)
    data = tiny_loras["sd15"].read_bytes()
    for case, body in lora_cases(rng, data, 40):
        path = tmp_path / "style.safetensors"
        path.write_bytes(body)
        for argv in (
            ["lora", "inspect", path],
            ["lora", "convert", path, "--to", "kohya", tmp_path / "o.safetensors"],
        ):
            code, err = outcome(capsys, main, argv)
            assert_one_line_or_success(code, err, f"{case} {argv[1]}")
            assert path.read_bytes() == body


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height: a decompression bomb's calling card."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


def image_cases(photo: bytes) -> list[tuple[str, str, bytes]]:
    return [
        ("zero bytes", "empty.png", b""),
        ("truncated PNG", "cut.png", photo[: len(photo) // 2]),
        ("text named .jpg", "notes.jpg", b"this is not a picture"),
        ("bomb, 30000 x 30000", "bomb.png", _png_claiming(30000, 30000)),
        ("bomb, 12000 x 12000", "bomb2.png", _png_claiming(12000, 12000)),
    ]


@pytest.mark.parametrize("index", range(5))
def test_bad_images_are_one_line_before_any_model_loads(capsys, tmp_path, tiny_bases, tiny_loras, index):
    from infer.__main__ import main

    buffer = tmp_path / "photo.png"
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(buffer)
    case, name, body = image_cases(buffer.read_bytes())[index]
    path = tmp_path / name
    path.write_bytes(body)
    argv = ["restyle", path, "--lora", tiny_loras["sd15"], "--base", tiny_bases["sd15"], "--size", "64"]
    code, err = outcome(capsys, main, [*argv, "--steps", "2", "--device", "cpu", "--out", tmp_path / "out"])
    assert code == 2, f"{case}: {err}"
    assert_one_line_or_success(code, err, case)
    assert "no readable images" in err and path.read_bytes() == body
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("prompt", ["", "a painting, " * 150, "星空 über das Café, 🎨 ñandú"])
def test_odd_prompts_restyle_and_are_recorded(capsys, tmp_path, tiny_bases, tiny_loras, prompt):
    from infer.__main__ import main
    from infer.restyle.png_info import read_parameters

    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(photo)
    argv = ["restyle", photo, "--lora", tiny_loras["sd15"], "--base", tiny_bases["sd15"], "--prompt", prompt]
    code, err = outcome(
        capsys, main, [*argv, "--size", "64", "--steps", "2", "--device", "cpu", "--out", tmp_path]
    )
    assert code == 0, err
    (written,) = tmp_path.glob("photo_*.png")
    assert read_parameters(written).startswith(prompt.strip()[:50])
