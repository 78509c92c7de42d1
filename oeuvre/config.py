"""Load a run's config: configs/base.yaml, then the artist's YAML, then `dotted.key=value` overrides.

The merged mapping is checked against the dataclasses in `config_schema` and frozen. Every error names
where the bad value came from (the file or the override), the dotted key, and what was expected.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from oeuvre.config_schema import Config
from oeuvre.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROJECT_CONFIGS = PROJECT_ROOT / "configs"
BASE_NAME = "base.yaml"
_OVERRIDE_KEY = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that reads `1e-4` as a float (YAML 1.1 wants `1.0e-4`) and rejects duplicate keys."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_yaml(text: str, origin: str) -> Any:
    """YAML text to Python values, with syntax errors reported as one line naming `origin`."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{origin}{where}: YAML syntax error: {problem}") from None


# -- reading layers ------------------------------------------------------------------------------


def read_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(
            f"{path}: config file not found (artists with a config: {', '.join(list_artists()) or 'none'})"
        )
    data = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    return data


def parse_override(text: str) -> dict[str, Any]:
    """`train.lr=1e-4` -> {"train": {"lr": 0.0001}}; the value is parsed as YAML."""
    origin = f"override {text!r}"
    key, sep, raw_value = text.partition("=")
    key = key.strip()
    if not sep:
        raise ConfigError(f"{origin}: expected KEY=VALUE (e.g. train.max_train_steps=2000)")
    if not _OVERRIDE_KEY.fullmatch(key):
        raise ConfigError(f"{origin}: expected a dotted key such as train.lr before '=', got {key!r}")
    value = parse_yaml(raw_value, origin)
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def base_config_for(path: Path) -> Path:
    """base.yaml beside the artist config, else the project's own."""
    beside = path.parent / BASE_NAME
    return beside if beside.is_file() else PROJECT_CONFIGS / BASE_NAME


def list_artists(configs_dir: Path = PROJECT_CONFIGS) -> list[str]:
    return sorted(p.stem for p in configs_dir.glob("*.yaml") if p.name != BASE_NAME)


# -- merging with provenance ---------------------------------------------------------------------


def merge_layer(
    merged: dict[str, Any], origins: dict[str, str], layer: dict[str, Any], origin: str, prefix: str = ""
) -> None:
    """Deep-merge `layer` into `merged` in place; lists and scalars replace, mappings merge.

    `origins` maps every dotted key to the layer that set it last, so errors can name the file.
    """
    for key, value in layer.items():
        if not isinstance(key, str):
            raise ConfigError(f"{origin}: keys must be strings, got {key!r} under '{prefix or '<top>'}'")
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            origins[dotted] = origin
            merge_layer(merged[key], origins, value, origin, dotted + ".")
        else:
            merged[key] = value
            for stale in [k for k in origins if k.startswith(dotted + ".")]:
                del origins[stale]
            origins[dotted] = origin


# -- checking against the schema -----------------------------------------------------------------


class _Checker:
    def __init__(self, origins: dict[str, str], fallback_origin: str):
        self.origins = origins
        self.fallback_origin = fallback_origin

    def origin_of(self, dotted: str) -> str:
        """The layer that set `dotted`, or its nearest parent (a list replaced whole, say)."""
        key = dotted
        while key:
            if key in self.origins:
                return self.origins[key]
            parent = re.sub(r"(\.[^.\[]+|\[\d+\])$", "", key)
            key = "" if parent == key else parent
        return self.fallback_origin

    def fail(self, dotted: str, expected: str, value: Any) -> typing.NoReturn:
        raise ConfigError(f"{self.origin_of(dotted)}: {dotted}: expected {expected}, got {value!r}")

    def dataclass_value(self, cls: type, value: Any, dotted: str) -> Any:
        if not isinstance(value, dict):
            self.fail(dotted or "<top>", f"a mapping of {cls.__name__} keys", value)
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in value:
            if key not in fields:
                where = f"{dotted}.{key}" if dotted else str(key)
                close = difflib.get_close_matches(str(key), list(fields), n=1)
                prefix = f"{dotted}." if dotted else ""
                hint = (
                    f"; did you mean '{prefix}{close[0]}'?" if close else f"; known keys: {', '.join(fields)}"
                )
                raise ConfigError(f"{self.origin_of(where)}: unknown key '{where}'{hint}")
        kwargs = {}
        for name, f in fields.items():
            where = f"{dotted}.{name}" if dotted else name
            if name not in value:
                if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                    continue
                raise ConfigError(
                    f"{self.origin_of(dotted) if dotted else self.fallback_origin}: missing key '{where}' "
                    f"(expected {describe(hints[name], f.metadata)})"
                )
            kwargs[name] = self.value(hints[name], value[name], where, f.metadata)
        return cls(**kwargs)

    def value(self, tp: Any, value: Any, dotted: str, rules: typing.Mapping[str, Any]) -> Any:
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin in (Union, types.UnionType):
            if value is None and type(None) in args:
                return None
            members = [a for a in args if a is not type(None)]
            if all(dataclasses.is_dataclass(m) for m in members):
                return self.one_of_dataclasses(members, value, dotted)
            for member in members:
                try:
                    return self.value(member, value, dotted, rules)
                except ConfigError:
                    continue
            self.fail(dotted, describe(tp, rules), value)
        if dataclasses.is_dataclass(tp):
            return self.dataclass_value(tp, value, dotted)
        if origin is Literal:
            # YAML 1.1 reads no/off/false (and yes/on/true) as booleans: `train.mixed_precision=no` on the
            # command line arrives as False. Where the choices include "no", False means it.
            if value is False and "no" in args:
                value = "no"
            if value not in args:
                self.fail(dotted, describe(tp, rules), value)
            return value
        if origin in (tuple, list):
            if not isinstance(value, list):
                self.fail(dotted, describe(tp, rules), value)
            if "length" in rules and len(value) != rules["length"]:
                self.fail(dotted, describe(tp, rules), value)
            if rules.get("nonempty") and not value:
                self.fail(dotted, describe(tp, rules), value)
            item_rules = {k: v for k, v in rules.items() if k not in ("length", "nonempty")}
            items = [self.value(args[0], v, f"{dotted}[{i}]", item_rules) for i, v in enumerate(value)]
            return tuple(items) if origin is tuple else items
        if origin is dict:
            if not isinstance(value, dict):
                self.fail(dotted, describe(tp, rules), value)
            return {
                self.value(args[0], k, dotted, {}): self.value(args[1], v, f"{dotted}.{k}", {})
                for k, v in value.items()
            }
        return self.scalar(tp, value, dotted, rules)

    def one_of_dataclasses(self, members: list[type], value: Any, dotted: str) -> Any:
        # The shape is chosen by its required key: {folder: ...}, {hf: ...} or {urls: ...}.
        shapes = " | ".join(_shape(m) for m in members)
        if isinstance(value, dict):
            for member in members:
                required = [
                    f.name
                    for f in dataclasses.fields(member)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                ]
                if all(r in value for r in required):
                    return self.dataclass_value(member, value, dotted)
        self.fail(dotted, f"one of {shapes}", value)

    def scalar(self, tp: Any, value: Any, dotted: str, rules: typing.Mapping[str, Any]) -> Any:
        if tp is bool:
            ok = isinstance(value, bool)
        elif tp is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif tp is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            value = float(value) if ok else value
        elif tp is str:
            ok = isinstance(value, str)
        else:  # pragma: no cover - a schema type this checker does not know is a programming error
            raise TypeError(f"config schema uses unsupported type {tp!r} at {dotted}")
        if not ok or not satisfies(value, rules):
            self.fail(dotted, describe(tp, rules), value)
        return value


def satisfies(value: Any, rules: typing.Mapping[str, Any]) -> bool:
    checks = {
        "gt": lambda v, r: v > r,
        "ge": lambda v, r: v >= r,
        "lt": lambda v, r: v < r,
        "le": lambda v, r: v <= r,
        "multiple_of": lambda v, r: v % r == 0,
        "nonempty": lambda v, r: not r or bool(v.strip()),
        "contains": lambda v, r: r in v,
        "pattern": lambda v, r: re.fullmatch(r, v) is not None,
    }
    return all(checks[name](value, limit) for name, limit in rules.items() if name in checks)


def describe(tp: Any, rules: typing.Mapping[str, Any] = {}) -> str:  # noqa: B006 - read only
    """Plain words for a type and its rules: 'an integer > 0 and a multiple of 8'."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        text = " or ".join(describe(m, rules) for m in members)
        return f"{text} or null" if type(None) in args else text
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (tuple, list):
        item_rules = {k: v for k, v in rules.items() if k not in ("length", "nonempty")}
        items = _plural(describe(args[0], item_rules))
        if "length" in rules:
            return f"a list of {rules['length']} {items}"
        return f"{'a non-empty' if rules.get('nonempty') else 'a'} list of {items}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return _shape(tp)
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))
    limits = {
        "gt": "> {}",
        "ge": ">= {}",
        "lt": "< {}",
        "le": "<= {}",
        "multiple_of": "a multiple of {}",
        "contains": "containing {!r}",
        "pattern": "matching {!r}",
    }
    parts = [fmt.format(rules[name]) for name, fmt in limits.items() if name in rules]
    if rules.get("nonempty"):
        words = "a non-empty string"
    return " ".join([words, " and ".join(parts)]) if parts else words


def _plural(text: str) -> str:
    return re.sub(r"^an? (\w+)", r"\1s", text)


def _shape(cls: type) -> str:
    first = dataclasses.fields(cls)[0].name
    return "{" + first + ": ...}"


# -- public entry points -------------------------------------------------------------------------


def load_config(path: str | Path, overrides: typing.Sequence[str] = ()) -> Config:
    """Resolve base.yaml < the artist config < overrides into a frozen, checked `Config`."""
    path = Path(path)
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    base = base_config_for(path)
    artist_layer = read_config_file(path)
    if path.resolve() != base.resolve():
        merge_layer(merged, origins, read_config_file(base), str(base))
    merge_layer(merged, origins, artist_layer, str(path))
    for text in overrides:
        merge_layer(merged, origins, parse_override(text), f"override {text!r}")
    config = _Checker(origins, str(base)).dataclass_value(Config, merged, "")
    output_dir = config.output_dir.replace("{artist}", config.artist)
    return dataclasses.replace(config, output_dir=output_dir)


def to_plain(value: Any) -> Any:
    """Dataclasses and tuples to dicts and lists, for YAML and JSON."""
    if dataclasses.is_dataclass(value):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    return value


def config_to_yaml(config: Config) -> str:
    return yaml.safe_dump(to_plain(config), sort_keys=False, allow_unicode=True)
