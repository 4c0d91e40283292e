"""Reading the Token2Wav YAML configs (flow.yaml, optional hift.yaml) as plain data.

They are HyperPyYAML files: `!new:module.Class` tags make the original loader import and call code.
Here yaml.SafeLoader (PyYAML, already a dependency of the gguf package) builds only dicts, lists and
scalars; every `!tag` is a mere marker: a tagged mapping gives a dict, a tagged sequence a list, a
tagged scalar its text, and `!ref <key>` is replaced by the top-level value it names. Nothing is
imported or executed, whatever the file says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import ConversionError


class _Ref:
    def __init__(self, target: str):
        self.target = target


class _PlainLoader(yaml.SafeLoader):
    """SafeLoader that treats unknown tags as plain data (see the module docstring)."""


def _construct_tagged(loader: _PlainLoader, tag_suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


def _construct_ref(loader: _PlainLoader, node: yaml.Node) -> _Ref:
    text = str(loader.construct_scalar(node)).strip()
    if not (text.startswith("<") and text.endswith(">")):
        raise ConversionError(f"unsupported !ref {text!r} (only !ref <top_level_key>)")
    return _Ref(text[1:-1])


_PlainLoader.add_constructor("!ref", _construct_ref)
_PlainLoader.add_multi_constructor("!", _construct_tagged)


def _resolve(obj: Any, top: dict, depth: int = 0) -> Any:
    if depth > 32:
        raise ConversionError("!ref chain too deep")
    if isinstance(obj, _Ref):
        if obj.target not in top:
            raise ConversionError(f"!ref <{obj.target}> names no top-level key")
        return _resolve(top[obj.target], top, depth + 1)
    if isinstance(obj, dict):
        return {k: _resolve(v, top, depth) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_resolve(v, top, depth) for v in obj]
    return obj


def load_plain_yaml(path: str | Path) -> dict[str, Any]:
    """The file's top-level mapping, tags stripped (module docstring)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConversionError(f"cannot read {p}: {e}") from e
    except UnicodeDecodeError as e:
        raise ConversionError(f"{p}: not UTF-8 text ({e})") from e
    try:
        data = yaml.load(text, Loader=_PlainLoader)  # noqa: S506 - SafeLoader subclass, plain data only
    except ConversionError as e:
        raise ConversionError(f"{p}: {e}") from None
    except yaml.YAMLError as e:
        raise ConversionError(f"{p}: invalid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConversionError(f"{p}: expected a mapping at the top level")
    try:
        return _resolve(data, data)
    except ConversionError as e:
        raise ConversionError(f"{p}: {e}") from None
