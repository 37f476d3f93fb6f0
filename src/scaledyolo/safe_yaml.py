"""The one YAML reader for files users hand us (data, hyper-parameter and model spec YAML).

`yaml.safe_load` builds no objects of arbitrary classes, but it still trusts sizes: 500 bytes of nested
aliases ("billion laughs") describe a document of billions of nodes, and whatever walks or merges it then
runs for minutes into MemoryError. Here the document is composed first, its size counted with every alias
expanded, and only a document within MAX_NODES (and a file within MAX_BYTES) is constructed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from scaledyolo.errors import UserError

MAX_BYTES = 4 << 20  # a data YAML with the 1,203 LVIS names is about 20 KB
MAX_NODES = 100_000  # scalars, lists and mappings, each alias counted as a full copy of what it names


class _TooLarge(Exception):
    """The document expands past MAX_NODES (or refers to itself)."""


def _expanded_size(root: yaml.Node) -> int:
    """Nodes in the document with aliases expanded, stopping as soon as the count passes MAX_NODES."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise _TooLarge("an alias refers to the node that contains it")
        open_nodes.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > MAX_NODES:
                raise _TooLarge(f"it expands to more than {MAX_NODES:,} values (nested aliases)")
        open_nodes.discard(key)
        sizes[key] = total
        return total

    return size(root)


def read_yaml(path: str | Path, kind: str = "YAML file") -> Any:
    """The content of a YAML file, or a one-line UserError naming it (`kind` says what file was expected)."""
    path = Path(path)
    try:
        if not path.is_file():
            raise UserError(f"{kind} not found", path)
        if path.stat().st_size > MAX_BYTES:
            raise UserError(f"refusing to read it: {path.stat().st_size:,} bytes, the limit for a YAML file is "
                            f"{MAX_BYTES:,}", path)
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is None:
            return None
        _expanded_size(node)
        loader = yaml.SafeLoader("")
        try:
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except _TooLarge as exc:
        raise UserError(f"refusing to read it: {exc}", path) from None
    except (OSError, UnicodeDecodeError) as exc:  # a folder, no permission, a binary file
        raise UserError(f"cannot read it as a YAML text file ({getattr(exc, 'strerror', None) or exc})", path) from None
    except yaml.YAMLError as exc:
        raise UserError(f"not valid YAML ({str(exc).splitlines()[0]})", path) from None
    except RecursionError:
        raise UserError("not valid YAML (nested too deeply)", path) from None


def read_yaml_mapping(path: str | Path, kind: str, expected: str, empty: bool = False) -> dict[str, Any]:
    """A YAML file that must hold a mapping (data, hyper-parameter and spec YAML all do): its dict, or a
    one-line UserError naming the file; `expected` says what the mapping should hold. `empty`: an empty
    file is an empty mapping (hyper-parameter overrides) instead of an error."""
    data = read_yaml(path, kind)
    if data is None and empty:
        return {}
    if not isinstance(data, dict):
        raise UserError(expected, path)
    return data

