"""docs/protocol.md matches the code: every topic listed, every example valid, the generated part up to date."""

from __future__ import annotations

import json
import re
from pathlib import Path

from careloop.codec import decode
from careloop.contract import SPECS
from careloop.protocol_doc import generated_section, splice
from careloop.topics import TopicKind

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def test_generated_section_is_up_to_date() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert splice(text, generated_section()) == text, "run: careloop contract docs --write docs/protocol.md"


def test_every_topic_the_code_can_build_is_in_the_table_with_its_qos_and_retain_flag() -> None:
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\| `([^`]+)` \| ([^|]+) \| \[(\w+)\]\(#\w+\) \| (\d) \| (yes|no) \|", line)
        if match:
            rows[match.group(1)] = (match.group(3), int(match.group(4)), match.group(5) == "yes")
    for kind in TopicKind:
        spec = SPECS[kind]
        assert rows.get(kind.value) == (spec.model.__name__, spec.qos, spec.retain), kind


def test_every_example_in_the_doc_is_a_valid_payload() -> None:
    text = DOC.read_text(encoding="utf-8")
    examples = re.findall(r"### (\w+)\n.*?Example on `[^`]+`:\n\n```json\n(.*?)```", text, re.DOTALL)
    models = {spec.model.__name__: spec.model for spec in SPECS.values()}
    assert {name for name, _ in examples} == set(models)
    for name, body in examples:
        payload = json.dumps(json.loads(body)).encode()
        decode(models[name], payload, now=1_790_000_100.0, max_bytes=SPECS_BY_MODEL[name])


SPECS_BY_MODEL = {spec.model.__name__: spec.max_bytes for spec in SPECS.values()}
