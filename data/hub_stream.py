"""Fetch a planned hub source's kept rows, resumably: each unit of work (a row group, or a /filter page)
writes its rows' images and metadata under the source's cache folder and is then marked done in its
state JSON, so a re-run after Ctrl-C or a network error skips what is finished and reads nothing twice.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from data.hub_http import TRAFFIC, Net, RangeFile, get, get_json, viewer_endpoint
from data.hub_plan import PAGE_ROWS, NoParquet, Plan, class_names, make_plan, mb
from data.sources import META_COLUMNS, Candidate, SourceError, closest, hub_candidate
from oeuvre.atomic import atomic_write_bytes, atomic_write_text
from oeuvre.config_schema import DataConfig, HubSource


@dataclass
class Unit:
    key: str  # its name in the state's done list
    rows: list[int]  # the selected global rows it brings
    fetch: Callable[[], None]
    shard: int


def iter_streamed(
    source: HubSource, config: DataConfig, seed: int, cache: Path, progress: bool = False
) -> Iterator[Candidate]:
    net = Net(config.download_timeout_s, config.download_retries)
    try:
        plan = make_plan(source, net, cache, config.max_works, seed)
    except NoParquet:
        return iter_plain_stream(source)
    if progress:
        print(plan.describe(), file=sys.stderr)
    units = filter_units(plan) if plan.method == "filter" else group_units(plan)

    def items() -> Iterator[Candidate]:
        start = TRAFFIC.bytes
        bar = tqdm(
            total=len(plan.selected), desc=f"hf {source.hf}", unit="work", disable=not progress, leave=False
        )
        with bar:
            for unit in units:
                if unit.key not in plan.state.done:
                    unit.fetch()
                    plan.state.done.add(unit.key)
                    plan.state.save()
                bar.update(len(unit.rows))
                bar.set_postfix(shard=f"{unit.shard + 1}/{len(plan.shards)}", read=mb(TRAFFIC.bytes - start))
                for row in unit.rows:
                    yield row_candidate(plan, row)

    return items()


def row_path(plan: Plan, row: int) -> Path:
    return plan.state.dir / "rows" / f"{row:09d}"


def row_candidate(plan: Plan, row: int) -> Candidate:
    path = row_path(plan, row)
    meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    return hub_candidate(plan.source, row, {"path": str(path.with_suffix(".bin"))}, meta)


def save_row(plan: Plan, row: int, image: bytes | None, meta: dict[str, Any]) -> None:
    path = row_path(plan, row)
    atomic_write_bytes(path.with_suffix(".bin"), image or b"")
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, ensure_ascii=False, default=str))


def labelled(plan: Plan, column: str, value: Any) -> Any:
    names = class_names(plan.schema, column)
    if names is not None and isinstance(value, int) and 0 <= value < len(names):
        return names[value]
    return value


# -- row groups: only those holding a kept row, only the image and metadata columns ----------------


def group_units(plan: Plan) -> list[Unit]:
    chosen, units = set(plan.selected), []
    for index, (offset, shard) in enumerate(zip(plan.offsets(), plan.shards, strict=True)):
        for g, group in enumerate(shard.groups):
            rows = [offset + r for r in group.matches if offset + r in chosen]
            if rows:
                units.append(Unit(f"rg:{index}:{g}", rows, _group_reader(plan, index, g, rows), index))
    return units


def _group_reader(plan: Plan, index: int, group: int, rows: list[int]) -> Callable[[], None]:
    def fetch() -> None:
        import pyarrow.parquet as pq

        shard = plan.shards[index]
        what = f"{plan.name} shard {index} ({shard.url})"
        footer = plan.state.footer_path(index)
        if not footer.is_file():
            raise SourceError(f"{what}: its scan is missing from the cache; delete {plan.state.path}")
        metadata = pq.read_metadata(footer)
        remote = RangeFile(shard.url, plan.net, what, size=shard.size)
        table = pq.ParquetFile(remote, metadata=metadata, pre_buffer=False).read_row_group(
            group, columns=plan.columns
        )
        offset = plan.offsets()[index]
        first = offset + sum(g.rows for g in shard.groups[:group])
        for row in rows:
            record = table.slice(row - first, 1).to_pylist()[0]
            cell = record.pop(plan.source.image_column)
            image = cell.get("bytes") if isinstance(cell, dict) else cell
            save_row(plan, row, image, {k: labelled(plan, k, v) for k, v in record.items()})

    return fetch


# -- the viewer's /filter: only the matching rows, a page of 100 at a time ------------------------


def filter_units(plan: Plan) -> list[Unit]:
    chosen, units = set(plan.selected), []
    matched = [
        offset + r
        for offset, shard in zip(plan.offsets(), plan.shards, strict=True)
        for g in shard.groups
        for r in g.matches
    ]
    for start in range(0, len(matched), PAGE_ROWS):
        rows = [r for r in matched[start : start + PAGE_ROWS] if r in chosen]
        if rows:
            reader = _page_reader(plan, start, set(rows))
            units.append(Unit(f"filter:{start}", rows, reader, _shard_of(plan, rows[0])))
    return units


def _shard_of(plan: Plan, row: int) -> int:
    offsets = plan.offsets()
    return max(i for i, o in enumerate(offsets) if o <= row)


def _page_reader(plan: Plan, start: int, rows: set[int]) -> Callable[[], None]:
    def fetch() -> None:
        source = plan.source
        what = f"{plan.name}: /filter rows {start}-{start + PAGE_ROWS - 1}"
        page = get_json(
            f"{viewer_endpoint()}/filter",
            plan.net,
            what,
            dataset=source.hf,
            config=source.config_name or "default",
            split=source.split,
            where=plan.where,
            offset=start,
            length=PAGE_ROWS,
        )
        got = {item["row_idx"]: item["row"] for item in page.get("rows", [])}
        if not rows <= set(got):
            raise SourceError(f"{what}: the viewer's rows differ from the scan's (the dataset changed?)")
        for row in sorted(rows):
            record = dict(got[row])
            cell = record.pop(source.image_column, None) or {}
            image = get(cell["src"], plan.net, f"{what}: image of row {row}")[0] if "src" in cell else None
            meta = {k: labelled(plan, k, record.get(k)) for k in plan.columns[1:]}
            save_row(plan, row, image, meta)

    return fetch


# -- neither: plain streaming through `datasets` (reads every row, stores none of them) ------------


def iter_plain_stream(source: HubSource) -> Iterator[Candidate]:
    import datasets

    name = f"data.sources hf {source.hf!r} [{source.split}]"
    try:
        stream = datasets.load_dataset(source.hf, source.config_name, split=source.split, streaming=True)
        stream = stream.cast_column(source.image_column, datasets.Image(decode=False))
    except Exception as exc:  # noqa: BLE001 - datasets raises many types; the user needs one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SourceError(f"{name}: cannot stream: {first}") from None
    features = stream.features or {}
    targets: dict[str, set] = {}
    for column, wanted in source.filter.items():
        if column not in features:
            raise SourceError(
                f"{name}: filter column {column!r} does not exist (columns: {', '.join(features)})"
            )
        values, names = (
            wanted if isinstance(wanted, list) else [wanted],
            getattr(features[column], "names", None),
        )
        for value in values:
            if names is not None and not isinstance(value, int) and value not in names:
                raise SourceError(
                    f"{name}: filter {column}={value!r} matches no label; closest: {closest(value, names)}"
                )
        targets[column] = {names.index(v) if names and isinstance(v, str) else v for v in values}

    def items() -> Iterator[Candidate]:
        for row, record in enumerate(stream):
            if all(record.get(c) in wanted for c, wanted in targets.items()):
                meta = {c: _name(features[c], record.get(c)) for c in META_COLUMNS if c in features}
                yield hub_candidate(source, row, record.get(source.image_column), meta)

    return items()


def _name(feature: Any, value: Any) -> Any:
    names = getattr(feature, "names", None)
    return names[value] if names and isinstance(value, int) and 0 <= value < len(names) else value
