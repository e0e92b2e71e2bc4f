"""Typed configuration end to end: no ``Any`` in ``Config`` or in the supervisor's parts (issue 10, item 4)."""

from __future__ import annotations

import ast
import dataclasses
import inspect

from gateway import app as app_mod
from gateway import config as config_mod
from gateway import values


def test_config_sections_are_typed() -> None:
    annotations = config_mod.Config.__annotations__
    assert annotations, "Config has no annotations"
    for name, hint in annotations.items():
        assert "Any" not in str(hint), f"Config.{name} is {hint}"
    # Every section named in the file has a field of its own class.
    types = config_mod._section_types()
    fields = {f.name for f in dataclasses.fields(config_mod.Config)}
    assert set(types) <= fields
    for name, cls in types.items():
        assert annotations[name] == cls.__name__, (name, annotations[name], cls.__name__)


def test_app_parts_are_typed() -> None:
    tree = ast.parse(inspect.getsource(app_mod.App))
    found = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Attribute):
            found += 1
            shown = ast.unparse(node.annotation)
            assert "Any" not in shown, f"App.{node.target.attr}: {shown}"
    assert found >= 5


def test_values_module_imports_nothing_from_gateway() -> None:
    tree = ast.parse(inspect.getsource(values))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert not (node.module or "").startswith("gateway"), node.module
        if isinstance(node, ast.Import):
            assert all(not a.name.startswith("gateway") for a in node.names)


def test_secret_never_prints() -> None:
    secret = values.Secret("hunter2")
    assert str(secret) == repr(secret).strip("'") == f"{secret}" == "********"
    assert secret.reveal() == "hunter2"
    assert config_mod.Secret is values.Secret


def test_health_states_order_and_metric() -> None:
    s = values.HealthState
    assert values.worst([]) is s.OK
    hs = [values.ok("a", "A", "fine"), values.down("b", "B", "broken", "fix it"), values.off("c", "C", "off")]
    assert values.worst(hs) is s.DOWN
    assert [h.state.metric for h in hs] == [0, 2, -1]
    assert hs[1].problem
    assert not hs[0].problem
    assert hs[1].as_dict()["fix"] == "fix it"
