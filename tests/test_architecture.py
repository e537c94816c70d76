"""The layering rule: core <- finetune <- strategies <- adapters <- cli, and small files.

Imports are read from the source (``ast``), lazy ones inside functions included, so a layer
that reaches up is caught even when the import only runs on some path.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["core", "finetune", "strategies", "adapters", "cli"]
FOLDERS = {
    "kronos_alpha": "kronos_alpha",
    "finetune": "kronos_alpha.finetune",
    "strategies": "kronos_alpha.strategies",
    "adapters": "kronos_alpha.adapters",
}
MAX_LINES = 420


def layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "kronos_alpha":
        return None
    if len(parts) > 1 and parts[1] in ("finetune", "strategies", "adapters", "cli"):
        return parts[1]
    return "core"


def source_files():
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("").parts
            module = ".".join([package, *[p for p in rel if p != "__init__"]])
            yield path, module


def imported_modules(path: Path, module: str):
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def upward_imports() -> list[str]:
    found = []
    for path, module in source_files():
        here = layer(module)
        for lineno, target in imported_modules(path, module):
            there = layer(target)
            if there and ORDER.index(there) > ORDER.index(here):
                found.append(f"{path.relative_to(ROOT)}:{lineno} ({here} imports {target})")
    return sorted(set(found))


def test_no_module_imports_a_higher_layer():
    assert upward_imports() == []


def test_the_checker_catches_an_upward_import(tmp_path, monkeypatch):
    """The walk above finds a planted import of the CLI from the core."""
    core = tmp_path / "kronos_alpha"
    core.mkdir()
    (core / "__init__.py").write_text("")
    (core / "bad.py").write_text("def f():\n    from .cli import main\n    return main\n")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    monkeypatch.setattr(f"{__name__}.FOLDERS", {"kronos_alpha": "kronos_alpha"})
    found = upward_imports()
    assert "kronos_alpha/bad.py:2 (core imports kronos_alpha.cli)" in found
    assert all(f.startswith("kronos_alpha/bad.py:2 ") for f in found)


@pytest.mark.parametrize("folder", sorted(FOLDERS))
def test_no_package_file_is_over_about_400_lines(folder):
    long = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / folder).rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
