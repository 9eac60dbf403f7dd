"""The protocol record (model/study/protocol.py): declared before any result, amended (never
silently replaced) after one."""

from __future__ import annotations

import json

import pytest

from lymph.data.errors import ConfigError
from lymph.model.study.protocol import protocol_sha256, record_protocol


def test_protocol_record_lists_changes_after_the_first_result(tmp_path) -> None:
    path = tmp_path / "protocol.json"
    first = {"sizes": [40], "steps": 3200}
    assert record_protocol(path, first, n_results=0)["sha256"] == protocol_sha256(first)
    redeclared = record_protocol(path, {"sizes": [40], "steps": 100}, n_results=0)
    assert redeclared["amendments"] == []  # no result seen yet: a new declaration
    assert record_protocol(path, {"sizes": [40], "steps": 100}, n_results=5)["amendments"] == []
    changed = record_protocol(path, {"sizes": [40, 20], "steps": 100}, n_results=5)
    (amendment,) = changed["amendments"]
    assert amendment["changes"] == ["sizes: [40] → [40, 20]"]
    assert record_protocol(path, {"sizes": [40, 20], "steps": 100}, n_results=9) == changed
    assert protocol_sha256({"a": 1, "b": 2}) == protocol_sha256({"b": 2, "a": 1})
    late = record_protocol(tmp_path / "late.json", first, n_results=3)  # an older study folder
    assert late["amendments"][0]["changes"] == ["protocol first recorded after 3 finished run(s)"]


@pytest.mark.parametrize("edit, match", [
    (lambda text: text.replace('"steps": 3200', '"steps": 3300'),
     r"protocol\.json: a declared protocol no longer matches its sha256 .* edited or damaged"),
    (lambda text: text.replace('"steps": 100', '"steps": 10'),  # in the amendment's protocol
     r"protocol\.json: a declared protocol no longer matches its sha256"),
    (lambda text: text[: len(text) // 2], r"protocol\.json: not a protocol record"),
    (lambda text: text.replace('"amendments"', '"amendmentz"'),
     r"protocol\.json: not a protocol record \('amendments'\)"),
    (lambda text: "\udcff" + text, r"protocol\.json: not a protocol record"),
])
def test_an_edited_or_damaged_protocol_record_is_refused(tmp_path, edit, match) -> None:
    """The record is the study's proof that its protocol came first: an edit that leaves valid
    JSON (a changed number) is caught by the sha256 each declared protocol carries."""
    path = tmp_path / "protocol.json"
    record_protocol(path, {"sizes": [40], "steps": 3200}, n_results=0)
    record_protocol(path, {"sizes": [40], "steps": 100}, n_results=4)  # one amendment
    text = json.dumps(json.loads(path.read_text()), indent=1)
    assert edit(text) != text
    path.write_bytes(edit(text).encode("utf-8", "surrogateescape"))
    with pytest.raises(ConfigError, match=match):
        record_protocol(path, {"sizes": [40], "steps": 100}, n_results=5)
