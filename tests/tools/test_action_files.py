"""Loading actions from YAML/JSON files and folders, and the errors people will see."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sagelab.tools import (
    ActionFileError,
    Parameter,
    load_actions,
    load_actions_file,
    to_json_schema,
)
from sagelab.tools.demo import DEMO_ACTIONS_FILE, DemoDatabase, demo_registry

ACTION = {
    "name": "remind",
    "description": "Set a reminder.",
    "parameters": [
        {"name": "text", "type": "String", "description": "What to remember."},
        {"name": "day", "type": "Date", "default": "2024-05-31"},
        {"name": "tags", "type": "List", "items": "String", "required": False},
    ],
}


def test_the_three_file_shapes(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"actions": [ACTION]}))
    (tmp_path / "b.json").write_text(json.dumps([{**ACTION, "name": "remind_list"}]))
    (tmp_path / "c.yaml").write_text(
        "name: remind_single\ndescription: Set a reminder.\nparameters:\n"
        "  - {name: day, type: Date, default: 2024-05-31}\n"  # YAML makes this a date object
    )
    (tmp_path / "notes.txt").write_text("ignored")
    actions = load_actions(tmp_path)
    assert [a.name for a in actions] == ["remind", "remind_list", "remind_single"]
    assert actions[0].parameters[1] == Parameter(name="day", type="Date", default="2024-05-31")
    assert actions[2].parameters[0].default == "2024-05-31"


def test_empty_file_has_no_actions(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    assert load_actions(tmp_path / "empty.yaml") == []


def test_demo_file_equals_the_decorated_demo_tools() -> None:
    from_file = {a.name: a for a in load_actions(DEMO_ACTIONS_FILE.parent)}
    with DemoDatabase(":memory:") as db, demo_registry(db) as registry:
        from_code = {a.name: a for a in registry.actions()}
    assert from_file.keys() == from_code.keys() == {"search_records", "get_record", "update_record"}
    for name, action in from_file.items():
        assert to_json_schema(action) == to_json_schema(from_code[name])
        assert action == from_code[name]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("actions: [", "not valid YAML"),
        ("actions: {name: x}", "actions must be a list of actions"),
        ("42", "the file must be a list of actions"),
        ("actions: []\nextra: 1", "unknown top-level keys"),
        ("actions: [hello]", r"actions\[0\]: an action must be a mapping"),
        (
            "actions:\n  - {name: ok, description: d}\n  - {name: bad name, description: d}",
            r"actions\[1\]\.name \(action 'bad name'\): String should match pattern",
        ),
        (
            "actions:\n  - name: t\n    description: d\n    parameters:\n"
            "      - {name: q, type: Text}",
            r"actions\[0\]\.parameters\[0\]\.type \(action 't'\): Input should be 'String'",
        ),
        (
            "actions:\n  - name: t\n    description: d\n    parameters:\n"
            "      - {name: n, type: Int, default: many}",
            r"actions\[0\]\.parameters\[0\] \(action 't'\): default 'many' does not fit n \(Int\)",
        ),
        (
            "- {name: t, description: d}\n- {name: t, description: e}",
            "action names must be unique; repeated: \\['t'\\]",
        ),
        ("name: t", r"description \(action 't'\): Field required"),
        (
            "name: t\ndescription: d\nparameters:\n  - {name: on, type: Boolean}",
            r"parameters\[0\]\.name \(action 't'\): .*bare on/off/yes/no.*quotes",
        ),
    ],
)
def test_errors_name_the_file_and_the_field(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "tools.yaml"
    path.write_text(content)
    with pytest.raises(ActionFileError, match=message) as info:
        load_actions(path)
    assert str(info.value).startswith(f"{path}: ")


def test_invalid_json_is_reported_as_json(tmp_path: Path) -> None:
    path = tmp_path / "tools.json"
    path.write_text("{")
    with pytest.raises(ActionFileError, match="not valid JSON"):
        load_actions_file(path)


def test_duplicates_across_files_name_both(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("name: t\ndescription: d\n")
    (tmp_path / "b.yaml").write_text("name: t\ndescription: e\n")
    with pytest.raises(
        ActionFileError, match=r"b\.yaml: action 't' is already defined in .*a\.yaml"
    ):
        load_actions(tmp_path)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ActionFileError, match="no such file or folder"):
        load_actions(tmp_path / "nope")
