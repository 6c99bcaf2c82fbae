"""Parse a rendered run manifest exactly as ``yaml.safe_load`` does, at a fraction of the cost.

Every manifest the reconciler applies is parsed back from the template's text and checked
(:mod:`reconciler.render.renderer`), and ``plan`` does it for each run it would create.  With
libyaml, ``yaml.load(text, CSafeLoader)`` composes the node tree in C but builds the data
with PyYAML's pure-Python ``SafeConstructor`` — generators, a deep-construction stack and
a memo per node — which was 83 % of render-and-check.

Here the same C composition (same loader, so the same YAML 1.1 implicit resolution that
``kubectl`` applies: ``yes`` and ``0755`` mean what they mean to the API server) is
followed by a direct build: strings are taken as they are, sequences and mappings become
lists and dicts, and every other scalar (int, float, bool, null, timestamp, binary) is
handed to PyYAML's own constructor, so its value is PyYAML's.  Anything this short path
does not reproduce exactly — text that may hold an alias (``*``) or a merge key (``<<``),
tags other than the standard ``str``/``seq``/``map`` on collections, keys that are not
scalars — makes it give up and return ``yaml.load``'s answer instead.  Errors are PyYAML's
own.
"""

from __future__ import annotations

from typing import Any

import yaml

_Loader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_STR = "tag:yaml.org,2002:str"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"


class _Unusual(Exception):
    """The document uses something only the full constructor builds exactly."""



def load_manifest(text: str) -> Any:
    """``yaml.load(text, Loader=CSafeLoader)``, faster for ordinary manifests."""
    if "*" not in text and "<<" not in text:  # no alias, no merge key can be in it
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            return None if node is None else _build(node, loader.construct_object)
        except _Unusual:
            pass
        finally:
            loader.dispose()
    return yaml.load(text, Loader=_Loader)  # a safe loader: CSafeLoader, or SafeLoader without libyaml


def _build(node: yaml.Node, construct: Any) -> Any:
    """The data of ``node``: strings as they are, collections built here, every other scalar
    by PyYAML's constructor (``construct``)."""
    tag = node.tag
    if tag == _STR and type(node) is yaml.ScalarNode:
        return node.value
    if tag == _MAP and type(node) is yaml.MappingNode:
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if type(key_node) is not yaml.ScalarNode:
                raise _Unusual  # a collection as a key: PyYAML's error (or tuple), not ours
            key = key_node.value if key_node.tag == _STR else construct(key_node, deep=True)
            out[key] = _build(value_node, construct)
        return out
    if tag == _SEQ and type(node) is yaml.SequenceNode:
        return [_build(child, construct) for child in node.value]
    if type(node) is yaml.ScalarNode:
        return construct(node, deep=True)
    raise _Unusual  # a tagged collection (!!set, !!omap, !!pairs, ...)
