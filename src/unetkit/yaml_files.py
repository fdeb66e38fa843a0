"""Reading the YAML files users write (configs, dataset.yaml, search spaces) without letting a small file cost
unbounded time or memory: aliases may expand to :data:`MAX_VALUES` values at most, and bytes that are not UTF-8
are a YAML error like any other, so every reader reports them with the file's name."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

MAX_VALUES = 100_000  # values of a document after alias expansion; a config or dataset.yaml has hundreds


class YamlTooLarge(yaml.YAMLError):
    """A document whose aliases expand beyond :data:`MAX_VALUES` values (a "billion laughs" file)."""


def _expanded(node: yaml.Node, sizes: dict[int, int], limit: int) -> int:
    """Values in ``node`` with every alias expanded, counted once per distinct node (``sizes`` memoises)."""
    if id(node) not in sizes:
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        else:
            children = []
        total = 1
        for child in children:
            total += _expanded(child, sizes, limit)
            if total > limit:
                raise YamlTooLarge(f"its aliases expand to more than {limit:,} values; write the values out")
        sizes[id(node)] = total
    return sizes[id(node)]


def load_yaml(text: str, limit: int = MAX_VALUES):
    """``yaml.safe_load`` of ``text``, refusing documents whose aliases expand beyond ``limit`` values."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        try:
            _expanded(node, {}, limit)
        except RecursionError:
            raise YamlTooLarge("it nests deeper than Python can follow; flatten it") from None
        return loader.construct_document(node)
    finally:
        loader.dispose()


def read_yaml(path: str | os.PathLike):
    """The YAML document in ``path``. Raises OSError when it cannot be read and ``yaml.YAMLError`` when it is not
    YAML, not UTF-8 text, or too large once its aliases are expanded."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise yaml.YAMLError(f"not UTF-8 text (byte {error.start}); save it as UTF-8") from None
    return load_yaml(text)
