"""Typed configuration: dataclasses loaded from YAML, with ``section.key=value`` overrides.

Every option is declared with :func:`option`, which records its default and a one-line doc::

    @dataclass
    class OptimConfig:
        lr: float = option(1e-6, "Peak learning rate of AdamW.")

:func:`load` reads a YAML file into a config dataclass, applies command-line overrides and checks
every key, type and ``choices=`` of an option; mistakes raise :class:`ConfigError` naming the key and
what is valid. :func:`validate` checks the choices of a config built or changed in Python.
:func:`render` prints every option with its value and doc (``rlvr train --print-config``).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

C = TypeVar("C")


class ConfigError(ValueError):
    """A configuration key or value that is not valid; the message says what to write instead."""


@dataclasses.dataclass(frozen=True)
class Registered:
    """The valid values of an option are the names in a plug-in registry, looked up when a config is
    checked (so a plug-in registered later counts). ``names`` is ``"module:attribute"``: a function
    returning the names, or a :class:`rlvr.registry.Registry`. ``extra`` values are valid too
    (``auto``); a value starting with one of ``prefixes`` is taken as it is (``hf:ORG/NAME``)."""

    names: str
    extra: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()

    def valid(self) -> list[str]:
        module, _, attribute = self.names.partition(":")
        source = getattr(importlib.import_module(module), attribute)
        registered = source.available() if hasattr(source, "available") else source()
        return [*self.extra, *registered]

    def allows(self, value: str) -> bool:
        return value.startswith(self.prefixes) or value in self.valid()


Choices = tuple[str, ...] | Registered


def option(default: Any, doc: str, choices: Choices | None = None) -> Any:
    """A config field with a default and a one-line doc. Mutable defaults are copied per instance.
    ``choices``: the only valid values, fixed (a tuple) or the names of a registry (:class:`Registered`),
    checked whenever a config is built by :func:`load`/:func:`from_dict` or passed to :func:`validate`."""
    metadata = {"doc": doc} if choices is None else {"doc": doc, "choices": choices}
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def validate(config: Any, prefix: str = "") -> None:
    """Check every option with ``choices`` in ``config`` and its sections, however the config was built
    (loaded, or made and changed in Python); :class:`ConfigError` names the key and the valid values."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            validate(value, f"{prefix}{field.name}.")
        elif "choices" in field.metadata:
            _check_choice(value, field.metadata["choices"], prefix + field.name)


def _check_choice(value: Any, choices: Choices, key: str) -> None:
    if isinstance(choices, Registered):
        if isinstance(value, str) and choices.allows(value):
            return
        valid = choices.valid() + [p + "..." for p in choices.prefixes]
    elif value in choices:
        return
    else:
        valid = list(choices)
    close = difflib.get_close_matches(str(value), valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"{key}: {value!r} is not one of the valid choices {', '.join(map(repr, valid))}.{hint}")


def load(cls: type[C], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> C:
    """Build ``cls`` from defaults, then the YAML file at ``path``, then ``key=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist; pass the path of a YAML file")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {error}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections, not {type(loaded).__name__}")
        data = loaded or {}
    for override in overrides:
        key, value = parse_override(override)
        _set_dotted(data, key, value)
    return from_dict(cls, data)


def parse_override(text: str) -> tuple[str, Any]:
    """``"trainer.lr=1e-5"`` -> ``("trainer.lr", 1e-05)``; the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


class _DottedKeys(dict):
    """The keys ``key=value`` overrides set in a mapping that no file gave whole: for a mapping-valued option
    (``problems.options.digits=3``) they change those keys of its value, the others keep theirs."""


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        child = node.setdefault(part, _DottedKeys())
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {dotted!r}: {part!r} is a value, not a section")
        node = child
    node[last] = value


def from_dict(cls: type[C], data: dict[str, Any], prefix: str = "", defaults: C | None = None) -> C:
    """Build dataclass ``cls`` from a (nested) mapping, checking every key and value. Keys the mapping leaves
    out keep the values of ``defaults`` (the section's own default, e.g. ``option(ToolsConfig(name="python"),
    ...)``, whose other keys an override of one key must not reset to the class's defaults)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping of keys to values, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(_unknown_key_message(prefix + str(key), list(fields), prefix))
        if dataclasses.is_dataclass(hints[key]):
            section_default = getattr(defaults, key) if defaults is not None else _field_default(fields[key])
            kwargs[key] = from_dict(hints[key], value if value is not None else {}, f"{prefix}{key}.", section_default)
        else:
            if isinstance(value, _DottedKeys):  # keys of a mapping option, over its value (the section's default)
                value = _merged(getattr(defaults, key) if defaults is not None else _field_default(fields[key]), value)
            kwargs[key] = _coerce(value, hints[key], prefix + key)
    try:
        built = dataclasses.replace(defaults, **kwargs) if defaults is not None else cls(**kwargs)
    except (TypeError, ValueError) as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {error}") from None
    if not prefix:  # the sections were built by the recursion: check the whole config once, at the top
        validate(built)
    return built


def _merged(base: Any, keys: _DottedKeys) -> dict[str, Any]:
    merged = dict(base) if isinstance(base, dict) else {}
    for key, value in keys.items():
        merged[key] = _merged(merged.get(key), value) if isinstance(value, _DottedKeys) else value
    return merged


def _field_default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None if field.default is dataclasses.MISSING else field.default


def _unknown_key_message(dotted: str, valid: list[str], prefix: str) -> str:
    name = dotted.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" Did you mean {prefix + close[0]!r}?" if close else ""
    section = f"section {prefix.rstrip('.')!r}" if prefix else "the top level"
    return f"unknown config key {dotted!r}.{hint} Valid keys in {section}: {', '.join(valid)}."


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value if value is not None else {}, key + ".")
    if origin in (Union, types.UnionType):
        args = get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} is not a valid {_type_name(hint)}")
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of the valid choices {', '.join(map(repr, choices))}")
        return value
    if origin in (list, tuple):
        (item_hint, *_) = get_args(hint) or (Any,)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item_hint, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads "1e-6" as a string
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected a whole number, got {value!r}")
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported option type {hint!r}")


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def to_dict(config: Any) -> dict[str, Any]:
    """The config as plain nested dicts (for saving next to a run, and reloading with :func:`load`)."""
    return dataclasses.asdict(config)


def render(config: Any, indent: int = 0) -> str:
    """YAML text of every option with its value, each followed by its one-line doc as a comment."""
    lines: list[str] = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        doc = field.metadata.get("doc", "")
        pad = "  " * indent
        if dataclasses.is_dataclass(value):
            lines.append(f"{pad}{field.name}:" + (f"  # {doc}" if doc else ""))
            lines.append(render(value, indent + 1))
        else:
            text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
            text = text.removesuffix("\n...").removesuffix("...").strip()
            lines.append(f"{pad}{field.name}: {text}" + (f"  # {doc}" if doc else ""))
    return "\n".join(lines)
