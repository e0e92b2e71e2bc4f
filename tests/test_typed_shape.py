"""Typed configuration end to end: no ``Any`` in ``Config`` or in the supervisor's parts (issue 10, item 4)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from pathlib import Path

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


def _architecture() -> str:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    start = readme.index("## Architecture")
    return readme[start : readme.index("\n## ", start + 1)]


def test_readme_architecture_names_every_part_of_the_package() -> None:
    """The architecture table names every module and package of gateway/, and every module of gateway/domain/."""
    section = _architecture()
    root = Path(app_mod.__file__).resolve().parent
    parts = sorted(
        p.stem if p.suffix == ".py" else p.name
        for p in root.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())
    )
    missing = [name for name in parts if f"`gateway/{name}" not in section]
    assert missing == [], f"README architecture does not name: {missing}"
    domain = sorted(p.name for p in (root / "domain").glob("*.py") if p.stem != "__init__")
    assert [name for name in domain if f"`{name}`" not in section] == []


def test_readme_architecture_diagram_names_only_what_exists() -> None:
    """Every path the diagram draws (channels/voice, domain/ports.py, ...) exists in the package."""
    section = _architecture()
    diagram = section[section.index("```") + 3 : section.index("```", section.index("```") + 3)]
    root = Path(app_mod.__file__).resolve().parent
    drawn = set(re.findall(r"\b([a-z_]+/(?:[a-z_]+(?:\.py)?)?)(?![A-Za-z])", diagram))  # not "serial/AT"
    assert len(drawn) >= 10, drawn
    for path in drawn:
        target = root / path
        assert target.exists() or target.with_suffix(".py").exists(), f"the diagram shows {path}, which is not there"
