"""The protocol record (model/study/protocol.py): declared before any result, amended (never
silently replaced) after one."""

from __future__ import annotations

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
