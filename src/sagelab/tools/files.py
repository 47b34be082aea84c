"""Load actions from YAML or JSON files, or from a folder of them (``data/actions/*.yaml``).

Action files are written by people who are not reading this code, so every error names the file
and the path of the offending field (``demo.yaml: actions[2].parameters[0].type: ...``) and stops
at load time; a tool that silently failed to load would only show up as an agent that never calls
it.

A file holds a list of actions, a mapping with an ``actions`` list, or one action mapping::

    actions:
      - name: search_records
        description: Find customer accounts by name, city or notes.
        parameters:
          - {name: query, type: String, description: Words to look for.}
          - {name: limit, type: Int, description: How many to return., default: 5}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sagelab.tools.model import Action

__all__ = ["ActionFileError", "load_actions", "load_actions_file"]

_SUFFIXES = (".yaml", ".yml", ".json")


class ActionFileError(ValueError):
    """An action file cannot be read or does not describe valid actions; the message says
    which file, which field, and what is wrong with it."""


def load_actions(path: str | Path) -> list[Action]:
    """Actions from one file, or from every ``*.yaml``/``*.yml``/``*.json`` in a folder
    (sorted by file name); action names must be unique across all of them."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in _SUFFIXES and p.is_file())
    elif path.exists():
        files = [path]
    else:
        raise ActionFileError(f"{path}: no such file or folder")
    actions: list[Action] = []
    origin: dict[str, Path] = {}
    for file in files:
        for action in load_actions_file(file):
            if action.name in origin:
                raise ActionFileError(
                    f"{file}: action {action.name!r} is already defined in {origin[action.name]}"
                )
            origin[action.name] = file
            actions.append(action)
    return actions


def load_actions_file(path: str | Path) -> list[Action]:
    path = Path(path)
    raw = _read(path)
    if raw is None:
        return []
    if isinstance(raw, dict) and "actions" in raw:
        extra = sorted(set(raw) - {"actions"})
        if extra:
            raise ActionFileError(f"{path}: unknown top-level keys {extra}; only 'actions'")
        items, prefix = raw["actions"], "actions"
    elif isinstance(raw, dict):
        return [_action(path, "", raw)]
    else:
        items, prefix = raw, ""
    if not isinstance(items, list):
        raise ActionFileError(
            f"{path}: {prefix or 'the file'} must be a list of actions, got {type(items).__name__}"
        )
    actions = [_action(path, f"{prefix}[{i}]", item) for i, item in enumerate(items)]
    names = [a.name for a in actions]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ActionFileError(f"{path}: action names must be unique; repeated: {repeated}")
    return actions


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ActionFileError(f"{path}: cannot read ({exc.strerror})") from exc
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise ActionFileError(f"{path}: not valid {kind}: {exc}") from exc


def _action(path: Path, where: str, item: Any) -> Action:
    if not isinstance(item, dict):
        raise ActionFileError(f"{path}: {where or 'the file'}: an action must be a mapping")
    try:
        return Action.model_validate(item)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = _join(where, err["loc"])
        more = f" (and {len(exc.errors()) - 1} more problems)" if len(exc.errors()) > 1 else ""
        name = f" (action {item['name']!r})" if isinstance(item.get("name"), str) else ""
        raise ActionFileError(f"{path}: {field}{name}: {_message(err)}{more}") from exc


def _join(prefix: str, loc: tuple[int | str, ...]) -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(action)"


def _message(err: Any) -> str:
    msg = str(err["msg"])
    prefix = "Value error, "
    msg = msg[len(prefix) :] if msg.startswith(prefix) else msg
    if isinstance(err.get("input"), bool) and err["type"] == "string_type":
        msg += " (YAML reads bare on/off/yes/no as true/false; put the word in quotes)"
    return msg
