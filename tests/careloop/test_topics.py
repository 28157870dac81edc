"""The topic tree: every topic pinned, build/parse round trips, and nothing outside the tree is accepted."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from careloop.topics import ID_PATTERN, Topic, TopicError, TopicKind, TopicTree

ids = st.from_regex(ID_PATTERN, fullmatch=True)
bad_ids = st.one_of(
    st.just(""),
    st.text(min_size=65, max_size=80, alphabet="abc"),
    st.builds(lambda a, c, b: a + c + b, ids, st.sampled_from(["/", "+", "#", " ", "\x00", "é", "."]), ids),
    st.builds(lambda c, a: c + a, st.sampled_from(["_", "-"]), ids),
)


def test_the_full_topic_set_is_pinned() -> None:
    """Adding, renaming or removing a topic is a protocol change: it must show up here and in docs/protocol.md."""
    tree = TopicTree()
    built = sorted(
        tree.build(
            kind,
            **{k: v for k, v in (("home_id", "H"), ("device_id", "D"), ("component", "C")) if "{" + k + "}" in kind},
        )
        for kind in TopicKind
    )
    assert built == sorted(
        [
            "careloop/v1/home/H/device/D/vitals",
            "careloop/v1/home/H/device/D/accel",
            "careloop/v1/home/H/device/D/sos",
            "careloop/v1/home/H/device/D/ok",
            "careloop/v1/home/H/device/D/gps",
            "careloop/v1/home/H/device/D/battery",
            "careloop/v1/home/H/device/D/wear",
            "careloop/v1/home/H/device/D/motion",
            "careloop/v1/home/H/device/D/thermal",
            "careloop/v1/home/H/device/D/occupancy",
            "careloop/v1/home/H/device/D/availability",
            "careloop/v1/home/H/device/D/command",
            "careloop/v1/home/H/edge/vitals",
            "careloop/v1/home/H/edge/events",
            "careloop/v1/home/H/edge/health",
            "careloop/v1/home/H/edge/heartbeat",
            "careloop/v1/home/H/edge/availability",
            "careloop/v1/home/H/alert",
            "careloop/v1/deadletter/C",
        ]
    )


@given(root=ids, kind=st.sampled_from(list(TopicKind)), home=ids, device=ids, component=ids)
def test_build_then_parse_gives_back_the_same_identifiers(
    root: str, kind: TopicKind, home: str, device: str, component: str
) -> None:
    tree = TopicTree(root)
    values = {"home_id": home, "device_id": device, "component": component}
    given_ids = {k: v for k, v in values.items() if "{" + k + "}" in kind.value}
    topic = tree.build(kind, **given_ids)
    parsed = tree.parse(topic)
    assert parsed == Topic(kind, **given_ids)
    assert tree.build_parsed(parsed) == topic


@given(kind=st.sampled_from([k for k in TopicKind if k.is_device_topic]), bad=bad_ids, good=ids)
def test_identifiers_that_could_break_the_tree_are_refused(kind: TopicKind, bad: str, good: str) -> None:
    tree = TopicTree()
    with pytest.raises(TopicError):
        tree.build(kind, home_id=bad, device_id=good)
    with pytest.raises(TopicError):
        tree.build(kind, home_id=good, device_id=bad)


@given(text=st.text(max_size=120))
def test_parse_accepts_exactly_what_build_produces(text: str) -> None:
    """Any string either parses to a topic that builds back to itself, or is refused with TopicError."""
    tree = TopicTree()
    for candidate in (text, "careloop/v1/" + text, "careloop/v1/home/h1/" + text):
        try:
            parsed = tree.parse(candidate)
        except TopicError:
            continue
        assert tree.build_parsed(parsed) == candidate


@pytest.mark.parametrize(
    ("topic", "why"),
    [
        ("careloop/v2/home/h1/device/d1/vitals", "not under"),
        ("other/v1/home/h1/device/d1/vitals", "not under"),
        ("careloop/v1/home/h1/device/d1/heartrate", "unknown device stream"),
        ("careloop/v1/home/h1/device/+/vitals", "device id"),
        ("careloop/v1/home/#/edge/events", "home id"),
        ("careloop/v1/home/h1/edge/accel", "unknown edge stream"),
        ("careloop/v1/home/h1/device/d1/vitals/extra", "does not match"),
        ("careloop/v1/home/h1", "does not match"),
        ("careloop/v1/deadletter/in gest", "component"),
        ("careloop/v1/", "does not match"),
    ],
)
def test_parse_says_what_is_wrong(topic: str, why: str) -> None:
    with pytest.raises(TopicError, match=why):
        TopicTree().parse(topic)


def test_build_refuses_missing_and_surplus_identifiers() -> None:
    tree = TopicTree()
    with pytest.raises(TopicError, match="need device_id"):
        tree.build(TopicKind.DEVICE_VITALS, home_id="h1")
    with pytest.raises(TopicError, match="have no device_id"):
        tree.build(TopicKind.EDGE_EVENTS, home_id="h1", device_id="d1")


def test_filters_and_shared_subscriptions() -> None:
    tree = TopicTree("t1")
    assert tree.filter(TopicKind.DEVICE_VITALS) == "t1/v1/home/+/device/+/vitals"
    assert tree.filter(TopicKind.EDGE_EVENTS, home_id="h7") == "t1/v1/home/h7/edge/events"
    assert tree.home_devices_filter("h7") == "t1/v1/home/h7/device/+/+"
    assert tree.edge_uplink_filter() == "t1/v1/home/+/edge/+"
    assert TopicTree.shared("ingest", tree.edge_uplink_filter()) == "$share/ingest/t1/v1/home/+/edge/+"
    with pytest.raises(TopicError):
        tree.filter(TopicKind.DEVICE_VITALS, home_id="a/b")
    with pytest.raises(TopicError):
        TopicTree("a/b")
