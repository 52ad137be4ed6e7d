"""What sets each waiting log's group, found for many logs at once (in C where built):
the runs of a handed-over list by what the bulk lane does with them, and logs grouped by
their callables' values or their own group fields. The batcher's helpers; no I/O."""

from __future__ import annotations

from typing import Any

from sls_beam import accelerated
from sls_beam.preparing import names_own_group


def group_by(keys: list, items: list) -> dict[Any, list]:
    """The items of each key, in order (in C where built)."""
    if accelerated.speedups is not None:
        return accelerated.speedups.group_by(keys, items)
    groups: dict[Any, list] = {}
    for key, item in zip(keys, items, strict=True):
        run = groups.get(key)
        if run is None:
            groups[key] = [item]
        else:
            run.append(item)
    return groups


#: The kinds of :func:`element_runs`: plain dicts, the bulk lane takes them as they come;
#: dicts that name their own topic, source or tags, grouped by those; the others.
PLAIN_RUN, OWN_GROUP_RUN, OTHER_RUN = 0, 1, 2


def _element_kind(element: Any) -> int:
    if element.__class__ is not dict:
        return OTHER_RUN
    return OWN_GROUP_RUN if names_own_group(element) else PLAIN_RUN


def element_runs(elements: list) -> list[tuple[int, int]]:
    """The runs of elements of one kind (see :data:`PLAIN_RUN`), in order, as (kind, end)
    (in C where built)."""
    if accelerated.speedups is not None:
        return accelerated.speedups.element_runs(elements)
    runs: list[tuple[int, int]] = []
    for index, element in enumerate(elements):
        kind = _element_kind(element)
        if runs and runs[-1][0] == kind:
            runs[-1] = (kind, index + 1)
        else:
            runs.append((kind, index + 1))
    return runs


def _tag_pairs(tags: Any) -> tuple | None:
    """Tags as part of a key to group by: their (key, value) pairs, in order, where they
    are an exact dict of exact str; else ``None`` (the log is taken one by one: values
    that compare equal but are written differently, ``1`` and ``True``, must not share a
    group)."""
    if tags.__class__ is not dict:
        return None
    pairs = tuple(tags.items())
    if all(key.__class__ is str and value.__class__ is str for key, value in pairs):
        return pairs
    return None


#: What a log's own group field is when it has none (distinct from its own ``None``).
_ABSENT = object()


def _fields_key(log: dict, called: tuple, own_fields: bool) -> tuple | None:
    """What :func:`group_by_fields` groups a log by, ``None`` for one taken one by one;
    ``called``: what its topic, source and tags callables gave (``_ABSENT`` where the
    option is not a callable); ``own_fields``: whether to look for its own."""
    own_of = log if own_fields else {}
    parts: list = []
    for field, value in zip(("__topic__", "__source__"), called, strict=False):
        own = own_of.get(field, _ABSENT)
        if own is not _ABSENT:
            value = own
        elif value is _ABSENT or value is None:  # the configuration's, or a callable's None
            parts.append(None)
            continue
        if value.__class__ is not str:
            return None
        parts.append(value)
    called_tags, own_tags = called[2], own_of.get("__tags__", _ABSENT)
    # A callable's None is no tags; a log's own None breaks a rule (taken one by one).
    for tags, none in ((called_tags, None), (own_tags, _ABSENT)):
        if tags is _ABSENT or tags is none:
            parts.append(None)
            continue
        pairs = _tag_pairs(tags)
        if pairs is None:
            return None
        parts.append(pairs)
    return tuple(parts)


def group_by_fields(
    logs: list[dict],
    topics: list | None,
    sources: list | None,
    tags: list | None,
    own: bool = True,
) -> dict[tuple, list[dict]]:
    """Dicts grouped by what sets their group, in order (in C where built): each key
    (topic, source, the callable's tags, the log's own tags). A topic or source is the
    log's own field where it has one (``own``: look for them; false where the caller
    knows the logs have none), else what the callable gave (``topics``, ``sources``: a
    value a log, or ``None`` where the option is not a callable), else ``None`` (the
    configuration's); each must be a str (a callable's may be None). Tags are (key,
    value) pairs of str (see :func:`_tag_pairs`), or ``None``. A log whose fields break
    these has a key of its own, ``(..., its index)``: the caller takes it one by one."""
    if accelerated.speedups is not None:
        return accelerated.speedups.group_by_fields(logs, topics, sources, tags, own)
    absent = [_ABSENT] * len(logs)
    columns = [absent if column is None else column for column in (topics, sources, tags)]
    keys = []
    for index, (log, *called) in enumerate(zip(logs, *columns, strict=True)):
        key = _fields_key(log, tuple(called), own)
        keys.append((..., index) if key is None else key)
    return group_by(keys, logs)
