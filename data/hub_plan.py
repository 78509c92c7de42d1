"""What a streamed hub source will read, decided before the big reads: list the split's parquet shards,
read each shard's footer and filter columns (a small fraction of its bytes), and pick the cheaper way
to fetch the matching rows' images: row groups (only those holding matches) or the dataset viewer's
/filter endpoint (only the matching rows; wins when matches are spread over every row group).

Scans are kept in a small JSON per source, so an interrupted run never scans a finished shard again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from data.hub_http import HttpStatus, Net, RangeFile, get_json, hub_endpoint, viewer_endpoint
from data.sources import META_COLUMNS, SourceError, closest
from oeuvre.atomic import atomic_write_bytes, atomic_write_text
from oeuvre.config_schema import HubSource

PAGE_ROWS = 100  # the viewer's largest /filter page
JSON_BYTES_PER_ROW = 400  # a /filter row without its image: metadata and a signed image URL
FILTER_WINS_BELOW = 0.5  # use /filter only when it reads under half the row groups' bytes: it re-serves
# the viewer's copies of the images, the row groups are the originals


@dataclass
class GroupScan:
    rows: int
    read_bytes: int  # compressed size of the image and metadata column chunks: what reading it costs
    matches: list[int]  # matching rows, as indices in the shard


@dataclass
class ShardScan:
    url: str
    size: int
    rows: int
    scan_bytes: int  # footer and filter-column bytes read to scan it
    groups: list[GroupScan]
    seen: dict[str, list[Any]] = field(default_factory=dict)  # some filter values, for "closest" errors


class State:
    """`<cache>/<slug>.json`: the schema, each scanned shard, and the units whose rows are on disk."""

    def __init__(self, root: Path, source: HubSource, readonly: bool = False):
        key = json.dumps([source.hf, source.config_name, source.split, source.filter], sort_keys=True)
        slug = re.sub(r"[^A-Za-z0-9]+", "-", source.hf).strip("-")[:40]
        self.dir = root / f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
        self.path = self.dir / "state.json"
        self.readonly = readonly  # --dry-run writes nothing
        self._lock = threading.Lock()
        self.data: dict[str, Any] = {"schema": None, "scans": {}, "done": []}
        if self.path.is_file():
            # Written atomically, so only a hand edit makes it unreadable: then start over.
            with contextlib.suppress(ValueError):
                self.data.update(json.loads(self.path.read_text(encoding="utf-8")))
        self.done = set(self.data["done"])

    def save(self) -> None:
        if self.readonly:
            return
        with self._lock:
            self.data["done"] = sorted(self.done)
            atomic_write_text(self.path, json.dumps(self.data))

    def footer_path(self, shard: int) -> Path:
        return self.dir / "footers" / f"{shard:05d}.parquet"


@dataclass
class Plan:
    source: HubSource
    name: str
    net: Net
    state: State
    schema: dict[str, Any]  # {"columns": [...], "features": the `huggingface` schema metadata or None}
    shards: list[ShardScan]
    columns: list[str]  # the image column and the metadata columns, what is read for kept rows
    where: str  # the viewer's /filter clause
    selected: list[int]  # the global rows to keep, ascending
    matched: int
    method: str = "row_groups"  # row_groups | filter
    why: str = ""

    def offsets(self) -> list[int]:
        out, total = [], 0
        for shard in self.shards:
            out.append(total)
            total += shard.rows
        return out

    def group_cost(self) -> tuple[int, int]:
        """Row groups holding a selected row, and the bytes reading them costs."""
        chosen, count, cost = set(self.selected), 0, 0
        for offset, shard in zip(self.offsets(), self.shards, strict=True):
            for group in shard.groups:
                if any(offset + r in chosen for r in group.matches):
                    count, cost = count + 1, cost + group.read_bytes
        return count, cost

    def filter_cost(self) -> int:
        rows = sum(s.rows for s in self.shards) or 1
        image_bytes = sum(g.read_bytes for s in self.shards for g in s.groups)
        return len(self.selected) * image_bytes // rows + self.matched * JSON_BYTES_PER_ROW

    def describe(self) -> str:
        total = sum(s.size for s in self.shards)
        groups = sum(len(s.groups) for s in self.shards)
        with_matches, cost = self.group_cost()
        read = self.filter_cost() if self.method == "filter" else cost
        scan = sum(s.scan_bytes for s in self.shards)
        how = "the viewer's /filter" if self.method == "filter" else "row groups"
        return (
            f"{self.name}: {len(self.shards)} parquet shards, {mb(total)}; the filter columns ({mb(scan)} "
            f"read) match {self.matched} rows in {with_matches} of {groups} row groups; keeping "
            f"{len(self.selected)}; reading ~{mb(read)} ({100 * read / max(total, 1):.1f}% of the split) "
            f"by {how}: {self.why}"
        )


def mb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def make_plan(
    source: HubSource, net: Net, cache: Path, max_works: int | None, seed: int, readonly: bool = False
) -> Plan:
    name = f"data.sources hf {source.hf!r} [{source.split}]"
    state = State(cache, source, readonly)
    urls = list_shards(source, net, name)
    schema = state.data["schema"] or read_schema(state, urls[0], net, name)
    targets, where = resolve_filter(source, schema, name)
    columns = [source.image_column, *(c for c in META_COLUMNS if c in schema["columns"])]
    if source.image_column not in schema["columns"]:
        raise SourceError(
            f"{name}: no image column {source.image_column!r} (columns: {', '.join(schema['columns'])}); "
            "set image_column"
        )
    shards = scan_all(state, urls, targets, columns, net, name)
    offsets, matched = 0, []
    for shard in shards:
        matched += [offsets + r for g in shard.groups for r in g.matches]
        offsets += shard.rows
    if not matched:
        raise SourceError(no_match_message(source, shards, name))
    selected = matched
    if max_works is not None and len(matched) > max_works:
        selected = sorted(random.Random(seed).sample(matched, max_works))
    plan = Plan(source, name, net, state, schema, shards, columns, where, selected, len(matched))
    choose_method(plan)
    return plan


def list_shards(source: HubSource, net: Net, name: str) -> list[str]:
    """The split's parquet files from the Hub's /parquet API; unknown dataset or split named plainly."""
    base = f"{hub_endpoint()}/api/datasets/{source.hf}"
    try:
        listing = get_json(f"{base}/parquet", net, name)
    except HttpStatus as exc:
        if exc.status == 404 and _exists(base, net, name):
            raise NoParquet(f"{name}: no parquet export") from None
        if exc.status in (401, 403, 404):
            raise SourceError(
                f"{name}: no such dataset on {hub_endpoint()} (or it is private or gated: HTTP "
                f"{exc.status}); check the id, or point hf at a local copy"
            ) from None
        raise
    config = source.config_name or ("default" if "default" in listing else next(iter(listing), "default"))
    if config not in listing:
        raise SourceError(f"{name}: no config {config!r} (configs: {', '.join(listing)}); set config_name")
    if source.split not in listing[config]:
        splits = ", ".join(listing[config])
        raise SourceError(f"{name}: no split {source.split!r} (splits: {splits}); set split")
    return list(listing[config][source.split])


class NoParquet(SourceError):
    """The dataset exists but the Hub lists no parquet files for it: only plain streaming applies."""


def _exists(base: str, net: Net, name: str) -> bool:
    try:
        get_json(base, net, name)
    except HttpStatus:
        return False
    return True


def read_schema(state: State, url: str, net: Net, name: str) -> dict[str, Any]:
    import pyarrow.parquet as pq

    footer = RangeFile(url, net, f"{name} shard 0 ({url})").footer()
    arrow_schema = pq.read_metadata(_as_file(footer)).schema.to_arrow_schema()
    meta = (arrow_schema.metadata or {}).get(b"huggingface")
    features = json.loads(meta).get("info", {}).get("features") if meta else None
    state.data["schema"] = {"columns": arrow_schema.names, "features": features}
    return state.data["schema"]


def _as_file(data: bytes) -> Any:
    import io

    return io.BytesIO(data)


def class_names(schema: dict[str, Any], column: str) -> list[str] | None:
    feature = (schema.get("features") or {}).get(column) or {}
    return feature.get("names") if feature.get("_type") == "ClassLabel" else None


def resolve_filter(source: HubSource, schema: dict[str, Any], name: str) -> tuple[dict[str, set], str]:
    """Filter values as stored (ClassLabel names become their ints) and the same filter as viewer SQL."""
    targets: dict[str, set] = {}
    clauses = []
    for column, wanted in source.filter.items():
        if column not in schema["columns"]:
            raise SourceError(
                f"{name}: filter column {column!r} does not exist (columns: {', '.join(schema['columns'])})"
            )
        values = wanted if isinstance(wanted, list) else [wanted]
        names = class_names(schema, column)
        if names is not None:
            for value in values:
                if not isinstance(value, int) and value not in names:
                    raise SourceError(
                        f"{name}: filter {column}={value!r} matches no label; closest: "
                        f"{closest(str(value), names)}"
                    )
            values = [v if isinstance(v, int) else names.index(v) for v in values]
        targets[column] = set(values)
        sql = [f'"{column}"={v if isinstance(v, int) else _quote(str(v))}' for v in values]
        clauses.append(sql[0] if len(sql) == 1 else "(" + " OR ".join(sql) + ")")
    return targets, " AND ".join(clauses)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def no_match_message(source: HubSource, shards: list[ShardScan], name: str) -> str:
    if len(source.filter) > 1:
        return f"{name}: the filters {source.filter} match no row together"
    column, wanted = next(iter(source.filter.items()))
    first = wanted[0] if isinstance(wanted, list) else wanted
    seen = sorted({str(v) for s in shards for v in s.seen.get(column, [])})
    return f"{name}: filter {column}={first!r} matches no row; closest values: {closest(str(first), seen)}"


def scan_all(
    state: State, urls: list[str], targets: dict[str, set], columns: list[str], net: Net, name: str
) -> list[ShardScan]:
    """Scan the shards not scanned before, four at a time (latency, not bandwidth, bounds small reads)."""
    scans = state.data["scans"]

    def one(index: int) -> None:
        url = urls[index]
        if url in scans:
            return
        scan = scan_shard(state, index, url, targets, columns, net, f"{name} shard {index} ({url})")
        with state._lock:
            scans[url] = asdict(scan)
        state.save()

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(one, range(len(urls))))
    return [
        ShardScan(**{**s, "groups": [GroupScan(**g) for g in s["groups"]]}) for s in (scans[u] for u in urls)
    ]


def scan_shard(
    state: State, index: int, url: str, targets: dict[str, set], columns: list[str], net: Net, what: str
) -> ShardScan:
    import pyarrow.parquet as pq

    remote = RangeFile(url, net, what)
    footer = remote.footer()
    if not state.readonly:
        atomic_write_bytes(state.footer_path(index), footer)  # the read phase needs it again
    metadata = pq.read_metadata(_as_file(footer))
    parquet = pq.ParquetFile(remote, metadata=metadata, pre_buffer=False)
    groups, seen, first = [], {c: set() for c in targets}, 0
    for g in range(metadata.num_row_groups):
        info = metadata.row_group(g)
        cost = sum(
            info.column(c).total_compressed_size
            for c in range(info.num_columns)
            if info.column(c).path_in_schema.split(".")[0] in columns
        )
        keep = [True] * info.num_rows
        if targets:
            table = parquet.read_row_group(g, columns=list(targets))
            for column, wanted in targets.items():
                values = table.column(column).to_pylist()
                if len(seen[column]) < 1000:
                    seen[column].update(v for v in values if v is not None)
                keep = [k and v in wanted for k, v in zip(keep, values, strict=True)]
        groups.append(GroupScan(info.num_rows, cost, [first + r for r, k in enumerate(keep) if k]))
        first += info.num_rows
    seen_lists = {c: sorted(v, key=str)[:1000] for c, v in seen.items()}
    return ShardScan(url, remote.size, metadata.num_rows, remote.bytes_read, groups, seen_lists)


def choose_method(plan: Plan) -> None:
    """Row groups unless the viewer can filter this split completely and reads under half as much."""
    source = plan.source
    _, group_bytes = plan.group_cost()
    if source.read == "row_groups" or not source.filter:
        plan.why = "asked for (read: row_groups)" if source.filter else "no filter: every row is kept"
        return
    try:
        probe = get_json(
            f"{viewer_endpoint()}/filter",
            Net(plan.net.timeout_s, min(plan.net.retries, 1)),
            f"{plan.name}: the dataset viewer's /filter",
            dataset=source.hf,
            config=source.config_name or "default",
            split=source.split,
            where=plan.where,
            offset=0,
            length=1,
        )
        total, partial = int(probe["num_rows_total"]), bool(probe.get("partial"))
    except (SourceError, KeyError, TypeError, ValueError) as exc:
        total, partial, problem = -1, True, str(exc).split(": ")[-1]
    else:
        problem = (
            "its index covers only part of the split"
            if partial
            else f"it counts {total} matches, the scan {plan.matched}"
            if total != plan.matched
            else ""
        )
    if problem:
        if source.read == "filter":
            raise SourceError(f"{plan.name}: read: filter, but the viewer cannot serve it: {problem}")
        plan.why = f"the viewer's /filter is not usable ({problem})"
        return
    ratio = plan.filter_cost() / max(group_bytes, 1)
    if source.read == "filter" or ratio < FILTER_WINS_BELOW:
        plan.method = "filter"
        plan.why = (
            "asked for (read: filter)"
            if source.read == "filter"
            else f"matches spread: /filter reads {ratio:.0%} of what the row groups would"
        )
    else:
        times = 1 / max(ratio, 1e-9)
        plan.why = f"matches clustered: the row groups (the originals) read {times:.1f}x /filter's bytes"
