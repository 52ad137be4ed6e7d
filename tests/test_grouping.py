"""What sets each waiting log's group, found for many logs at once: C and Python alike."""

from __future__ import annotations

from sls_beam import accelerated, grouping


class Subclass(dict):
    """A dict subclass: not a plain log (the per-log path reads it)."""


def test_element_runs_are_what_the_bulk_lane_does_with_each_element(monkeypatch):
    elements = [
        {},
        {"a": 1},
        Subclass(a=1),
        {"__tags__": {}},
        {"__source__": "s", "b": 2},
        {"__topic__": "t"},
        {"__topic__": "t", "__tags__": {}},
        {"b": 2},
        "text",
        {1: 2},
    ]
    cases = [elements, elements[2:], elements[:2], [], ["text"], elements[4:6]]
    found = [grouping.element_runs(case) for case in cases]
    plain, own, other = grouping.PLAIN_RUN, grouping.OWN_GROUP_RUN, grouping.OTHER_RUN
    # {1: 2}: plain here; the encoder refuses its key later, and it goes log by log
    assert found == [
        [(plain, 2), (other, 3), (own, 7), (plain, 8), (other, 9), (plain, 10)],
        [(other, 1), (own, 5), (plain, 6), (other, 7), (plain, 8)],
        [(plain, 2)],
        [],
        [(other, 1)],
        [(own, 2)],
    ]
    monkeypatch.setattr(accelerated, "speedups", None)
    assert [grouping.element_runs(case) for case in cases] == found


def test_group_by_fields_groups_by_the_logs_own_fields_and_what_their_callables_gave(
    monkeypatch,
):
    logs = [{"__source__": "a"}, {"__topic__": "t"}, {"__source__": "a", "x": 1}, {}]
    logs += [
        {"__topic__": "t", "__source__": 7},  # not a str: taken one by one
        {"__tags__": {"k": "v", "j": "w"}, "__source__": "a"},
        {"__source__": "a", "__tags__": {"k": "v", "j": "w"}, "y": 2},
        {"__tags__": {"k": 1}},  # not str: taken one by one
        {"__tags__": {"k": True}},
        {"__tags__": ["k"]},
        {"__source__": None},  # an own None is not the configuration's source
        {"__topic__": None, "__tags__": None},
    ]
    pairs = (("k", "v"), ("j", "w"))

    def grouped(*columns):
        found = grouping.group_by_fields(logs, *columns)
        places = {id(log): place for place, log in enumerate(logs)}  # {"k": 1} == {"k": True}
        return [(key, [places[id(log)] for log in run]) for key, run in found.items()]

    own_only = [
        ((None, "a", None, None), [0, 2]),
        (("t", None, None, None), [1]),
        ((None, None, None, None), [3]),
        ((..., 4), [4]),
        ((None, "a", None, pairs), [5, 6]),
        ((..., 7), [7]),
        ((..., 8), [8]),
        ((..., 9), [9]),
        ((..., 10), [10]),
        ((..., 11), [11]),
    ]
    assert grouped(None, None, None) == own_only
    # A callable's values, where the log has no field of its own: a str or None; tags a
    # dict of str or None (a dict of ints, or a list, is taken one by one).
    topics = ["c"] * 11 + [None]
    sources = ["s", 5, "s", None, "s", "s", "s", "s", "s", "s", "s", "s"]
    tags = [{"p": "q"}, None, {"p": "q"}, {"p": 1}, None, {}, *[None] * 6]
    assert grouped(topics, sources, tags) == [
        (("c", "a", (("p", "q"),), None), [0, 2]),
        ((..., 1), [1]),
        ((..., 3), [3]),
        ((..., 4), [4]),
        (("c", "a", (), pairs), [5]),
        (("c", "a", None, pairs), [6]),
        ((..., 7), [7]),
        ((..., 8), [8]),
        ((..., 9), [9]),
        ((..., 10), [10]),
        ((..., 11), [11]),
    ]
    in_c = grouped(topics, sources, tags)
    monkeypatch.setattr(accelerated, "speedups", None)
    assert grouped(None, None, None) == own_only
    assert grouped(topics, sources, tags) == in_c


def test_group_by_fields_finds_a_groups_logs_by_their_text_however_many_groups(monkeypatch):
    # Equal text in distinct str objects (as each parsed log has), non-ASCII text, tags in
    # another order (another key, as the pairs differ), and more groups than C keeps
    # keys for (each found through the dict of groups).
    def text(*parts: str) -> str:
        return "".join(parts)  # a new str object each time

    logs, topics, sources, tags = [], [], [], []
    for i in range(600):
        group = i % 150
        logs.append({"__source__": text("h-", str(group % 50))} if group % 3 == 0 else {})
        topics.append(text("主题-", str(group % 7)) if group % 5 else None)
        sources.append(text("src-", "😀" * (group % 2), str(group)))
        tags.append(
            {text("a"): text("1"), text("b"): str(group % 4)}
            if group % 2
            else {text("b"): str(group % 4), text("a"): text("1")}
        )

    def grouped(*columns, own=True):
        found = grouping.group_by_fields(logs, *columns, own=own)
        places = {id(log): place for place, log in enumerate(logs)}
        return [(key, [places[id(log)] for log in run]) for key, run in found.items()]

    cases = [
        ((topics, sources, tags), {}),
        ((None, sources, None), {}),
        ((None, None, tags), {"own": False}),
        ((topics, None, None), {"own": False}),
    ]
    in_c = [grouped(*columns, **options) for columns, options in cases]
    # Each log is in the group its text says, and its logs are in order.
    for (columns, options), found in zip(cases, in_c, strict=True):
        assert sorted(place for _, places in found for place in places) == list(range(600))
        for key, places in found:
            assert places == sorted(places)
            for place in places:
                topic, source, called_tags, own_tags = key
                own_source = logs[place].get("__source__") if options.get("own", True) else None
                assert source == own_source or source == (columns[1] or [None] * 600)[place]
                assert topic == (columns[0] or [None] * 600)[place]
                assert called_tags == (
                    None if columns[2] is None else tuple(columns[2][place].items())
                )
                assert own_tags is None
    assert len(in_c[0]) == 150  # the first 32 groups found by the key table, the rest not
    monkeypatch.setattr(accelerated, "speedups", None)
    assert [grouped(*columns, **options) for columns, options in cases] == in_c


class _CollidesWithSource:
    """A log's key whose hash is "__source__"'s: looking that field up runs its __eq__,
    which takes the log's own topic away and makes new str of the topic's size (where a
    freed topic's memory would go)."""

    def __init__(self, log: dict):
        self.log = log
        self.made: list[str] = []

    def __hash__(self) -> int:
        return hash("__source__")

    def __eq__(self, other) -> bool:
        self.log.pop("__topic__", None)
        self.made += ["".join(("other-", str(i))) for i in range(64)]
        return False


def test_group_by_fields_holds_a_logs_own_fields_while_user_code_changes_the_log(monkeypatch):
    def grouped():
        log = {"__topic__": "".join(("topic-", "1"))}  # the dict holds its only reference
        log[_CollidesWithSource(log)] = 1
        return [
            (key, len(run))
            for key, run in grouping.group_by_fields([log], None, None, None).items()
        ]

    # The topic it had when its fields were read (the per-log path, later, names the key
    # that is not a str).
    assert grouped() == [(("topic-1", None, None, None), 1)]
    monkeypatch.setattr(accelerated, "speedups", None)
    assert grouped() == [(("topic-1", None, None, None), 1)]
