"""What happened to every input: report.json (machine-readable) and report.html (a contact sheet)."""

from __future__ import annotations

import base64
import html
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from data.curate import Record
from oeuvre.atomic import atomic_write_text

TILES_PER_SECTION = 400  # the HTML stays a few MB at most; report.json always lists everything


def reason_counts(records: Sequence[Record]) -> dict[str, int]:
    return dict(sorted(Counter(r.code for r in records if r.status != "kept").items()))


def summary(records: Sequence[Record]) -> dict[str, int]:
    status = Counter(r.status for r in records)
    split = Counter(r.split for r in records if r.status == "kept")
    return {
        "inputs": len(records),
        "kept": status["kept"],
        "train": split["train"],
        "holdout": split["holdout"],
        "rejected": status["rejected"],
        "duplicates": status["duplicate"],
    }


def item_entry(record: Record, records: Sequence[Record]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "source": record.source,
        "status": record.status,
        "reason_code": record.code,
        "reason": record.reason,
        "duplicate_of": records[record.duplicate_of].source if record.duplicate_of is not None else None,
        "sha256": record.sha256,
        "width": record.width,
        "height": record.height,
        "phash": record.phash,
        "split": record.split,
        "file_name": f"{record.split}/{record.file_name}" if record.file_name else None,
        "text": record.text,
        "group": records[record.group].source if record.group is not None else None,
        "group_reason": record.group_reason,
    }
    if record.mask:
        entry["mask"] = record.mask  # {"from": [sidecar, alpha, frame], "frame": [left, top, right, bottom]}
    return entry


def work_groups(records: Sequence[Record]) -> list[dict[str, Any]]:
    """Every work with more than one image: its best copy, and each other image with why it belongs."""
    groups: dict[int, list[Record]] = {}
    for record in records:
        owner = record.group if record.group is not None else record.duplicate_of
        if owner is not None and (record.status == "kept" or record.code == "near_duplicate"):
            groups.setdefault(owner, []).append(record)
    return [
        {
            "work": records[owner].source,
            "split": records[owner].split,
            "members": [
                {"source": r.source, "status": r.status, "why": r.group_reason or r.reason}
                for r in members
                if r.index != owner
            ],
        }
        for owner, members in sorted(groups.items())
        if len(members) > 1
    ]


def build_report(records: Sequence[Record], header: dict[str, Any]) -> dict[str, Any]:
    return {
        **header,
        "counts": summary(records),
        "reasons": reason_counts(records),
        "groups": work_groups(records),
        "items": [item_entry(r, records) for r in records],
    }


def write_report_json(path: Path, report: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(report, indent=1, ensure_ascii=False) + "\n")


def _thumb(cache_root: Path, record: Record) -> str:
    if record.thumb and (cache_root / record.thumb).is_file():
        data = (cache_root / record.thumb).read_bytes()
        if record.mask and "frame" in record.mask:
            data = _with_frame_drawn(data, record.mask["frame"], record.width or 1)
        data = base64.b64encode(data).decode("ascii")
        return f'<img src="data:image/jpeg;base64,{data}" alt="">'
    return '<div class="none">no image</div>'


def _with_frame_drawn(thumb: bytes, box: list[int], width: int) -> bytes:
    """The thumbnail with the detected frame's inner edge outlined in red: what training keeps."""
    import io

    from PIL import Image, ImageDraw

    image = Image.open(io.BytesIO(thumb)).convert("RGB")
    scale = image.width / width
    ImageDraw.Draw(image).rectangle([round(v * scale) for v in box], outline=(255, 0, 0), width=2)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=80)
    return out.getvalue()


def _tile(cache_root: Path, record: Record, records: Sequence[Record]) -> str:
    name = html.escape(record.source.rsplit("/", 1)[-1] or record.source)
    lines = [f'<div class="name" title="{html.escape(record.source)}">{name}</div>']
    if record.status == "kept":
        size = f"{record.width}×{record.height}"
        lines.append(f'<div class="why">{record.split} · {size}</div>')
        if record.group is not None and record.group != record.index:
            lines.append(f'<div class="why group">{html.escape(record.group_reason or "")}</div>')
        if record.mask:
            lines.append(f'<div class="why">mask: {", ".join(record.mask["from"])}</div>')
    else:
        lines.append(f'<div class="why">{html.escape(record.reason or "")}</div>')
    return f'<figure class="{record.status}">{_thumb(cache_root, record)}{"".join(lines)}</figure>'


def render_html(report: dict[str, Any], records: Sequence[Record], cache_root: Path) -> str:
    counts = report["counts"]
    sections = [
        ("Kept: train", [r for r in records if r.status == "kept" and r.split == "train"]),
        ("Kept: holdout", [r for r in records if r.status == "kept" and r.split == "holdout"]),
        ("Rejected", [r for r in records if r.status == "rejected"]),
        ("Duplicates", [r for r in records if r.status == "duplicate"]),
    ]
    body = []
    for title, items in sections:
        tiles = "".join(_tile(cache_root, r, records) for r in items[:TILES_PER_SECTION])
        more = (
            f"<p>… and {len(items) - TILES_PER_SECTION} more (see report.json)</p>"
            if len(items) > TILES_PER_SECTION
            else ""
        )
        body.append(f"<h2>{title} ({len(items)})</h2><div class=grid>{tiles}</div>{more}")
    group_rows = "".join(
        f"<tr><td>{html.escape(g['work'])} ({g['split']})</td><td>"
        + "<br>".join(
            f"{html.escape(m['source'])}: {m['status']}, {html.escape(m['why'] or '')}" for m in g["members"]
        )
        + "</td></tr>"
        for g in report["groups"]
    )
    groups = (
        f"<h2>Works with several images ({len(report['groups'])})</h2><p>Each group is one work and stays "
        "on one side of the split.</p><table><tr><th>work</th><th>its other images</th></tr>"
        f"{group_rows}</table>"
        if report["groups"]
        else ""
    )
    reasons = "".join(
        f"<tr><td>{html.escape(code)}</td><td>{n}</td></tr>" for code, n in report["reasons"].items()
    )
    title = html.escape(f"{report['artist']}: dataset report")
    stats = " · ".join(f"{k} {v}" for k, v in counts.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 10px; }}
figure {{ margin: 0; width: 132px; padding: 6px; border-radius: 6px; background: #f3f3f3; }}
figure img, .none {{ width: 120px; height: 120px; object-fit: contain; display: block; margin: auto;
  background: #ddd; }}
.none {{ display: flex; align-items: center; justify-content: center; color: #777; }}
figure.kept {{ border: 2px solid #3a3; }} figure.rejected {{ border: 2px solid #c33; }}
figure.duplicate {{ border: 2px solid #d90; }}
.name {{ font-weight: 600; font-size: 12px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }}
.why {{ font-size: 11px; color: #555; word-break: break-word; }} .group {{ color: #36c; }}
table {{ border-collapse: collapse; }} td {{ padding: 2px 10px; border-bottom: 1px solid #ddd; }}
</style></head><body>
<h1>{title}</h1>
<p>trigger token <code>{html.escape(report["trigger_token"])}</code> · {stats}</p>
<table><tr><th>dropped because</th><th>files</th></tr>{reasons}</table>
{groups}
{"".join(body)}
</body></html>
"""


def write_report_html(
    path: Path, report: dict[str, Any], records: Sequence[Record], cache_root: Path
) -> None:
    atomic_write_text(path, render_html(report, records, cache_root))
