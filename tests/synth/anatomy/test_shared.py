"""The shared drawing toolkits: layering between renderers, bones recorded without drawing."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

import medtune.synth.anatomy as anatomy_package
from medtune.synth.anatomy.bones import BoneKit, Pose
from medtune.synth.canvas import Canvas, round_corners

ANATOMY_DIR = Path(anatomy_package.__file__).parent


def _registers_a_renderer(path: Path) -> bool:
    """Whether the module decorates a function with ``register_anatomy(...)``."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef):
            for d in node.decorator_list:
                if isinstance(d, ast.Call) and getattr(d.func, "id", "") == "register_anatomy":
                    return True
    return False


def _renderer_modules() -> set[str]:
    """Modules of the anatomy package that register a renderer."""
    return {path.stem for path in ANATOMY_DIR.glob("*.py") if _registers_a_renderer(path)}


def _anatomy_imports(path: Path) -> set[str]:
    """Sibling modules of the anatomy package that ``path`` imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("medtune.synth.anatomy."):
                found.add(node.module.rsplit(".", 1)[1])
            elif node.module == "medtune.synth.anatomy":
                found.update(alias.name for alias in node.names)
    return found


def test_no_renderer_imports_another_renderer() -> None:
    renderers = _renderer_modules()
    assert {"hand", "foot", "knee", "shoulder", "pelvis", "spine", "skull"} <= renderers
    for name in renderers:
        wrong = (_anatomy_imports(ANATOMY_DIR / f"{name}.py") & renderers) - {name}
        assert not wrong, f"{name}.py imports renderer(s) {sorted(wrong)}"


def test_bone_without_drawing_records_the_same_bone() -> None:
    drawn, recorded = Canvas.blank(80, 80, 0.5), Canvas.blank(80, 80, 0.5)
    points, radii = [(10.0, 10.0), (30.0, 25.0)], [4.0, 3.0]
    a = drawn.bone("distal radius", points, radii, 0.8, cortex=0.3)
    b = recorded.bone("distal radius", points, radii, 0.8, cortex=0.3, draw=False)
    assert drawn.att.any() and not recorded.att.any()
    assert recorded.bones == [b]
    assert (a.name, a.cortex, a.density) == (b.name, b.cortex, b.density)
    assert np.array_equal(a.points, b.points) and np.array_equal(a.radii, b.radii)


def test_bone_drawn_into_a_target_leaves_the_canvas_alone() -> None:
    drawn, aside = Canvas.blank(80, 80, 0.5), Canvas.blank(80, 80, 0.5)
    target = np.zeros_like(aside.att)
    drawn.bone("fibula", [(5.0, 5.0), (35.0, 30.0)], 3.0, 1.0)
    aside.bone("fibula", [(5.0, 5.0), (35.0, 30.0)], 3.0, 1.0, target=target)
    assert not aside.att.any() and len(aside.bones) == 1
    assert np.array_equal(target, drawn.att)


def test_bone_union_shaft_is_recorded_once_and_drawn_once() -> None:
    canvas = Canvas.blank(120, 120, 0.5)
    kit = BoneKit(canvas, 1.0, np.random.default_rng(0))
    bone = kit.union(Pose(30.0, 30.0, 1.0, 0.0))
    bone.shaft("proximal tibia", [(0, 0), (0, 20)], [6.0, 5.0])
    assert not canvas.att.any(), "the union draws only on add()"
    bone.add()
    assert canvas.att.any()
    assert [b.name for b in canvas.bones] == ["proximal tibia"]


def test_round_corners_cuts_every_column_alike_and_keeps_open_ends() -> None:
    square = [(0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0)]
    flat = round_corners(square, rounds=2)
    assert flat.dtype == np.float32 and flat.shape == (16, 2)
    deep = round_corners([(x, y, 5.0) for x, y in square], rounds=2, dtype=np.float64)
    assert deep.dtype == np.float64 and deep.shape == (16, 3)
    assert np.allclose(deep[:, :2], flat) and np.allclose(deep[:, 2], 5.0)
    line = round_corners(square, rounds=2, closed=False)
    assert np.array_equal(line[0], square[0]) and np.array_equal(line[-1], square[-1])
