"""The floors of the package, read from the source with ast: core/ imports no system, trlm.data imports only core,
and no two modules import each other (directly or around a loop)."""

from __future__ import annotations

import ast
from pathlib import Path

import trlm

PKG = Path(trlm.__file__).parent
SYSTEMS = sorted(p.name for p in PKG.iterdir() if (p / "__init__.py").exists() and p.name not in ("core", "data"))


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every trlm module ``path`` imports, at module level or inside a function (``from a import b`` gives
    ``a.b`` when that is a module, else ``a``)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "trlm"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "trlm":
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                is_module = (PKG.parent / Path(*sub.split("."))).with_suffix(".py").exists() or (
                    PKG.parent / Path(*sub.split(".")) / "__init__.py").exists()
                out.add(sub if is_module else node.module)
    return out


def floor(module: str) -> str:
    """``trlm.rerank.bench`` -> ``rerank``; a root module (``trlm.cli``) -> ``trlm``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and (PKG / parts[1] / "__init__.py").exists() else "trlm"


def test_the_layout_knows_the_systems():
    assert {"rerank", "speculative", "guard", "scoring", "serve"} <= set(SYSTEMS)  # the test sees the tree


def test_core_imports_no_system():
    bad = [f"{module_name(p)} imports {m}" for p in sorted((PKG / "core").rglob("*.py")) for m in sorted(imports(p))
           if floor(m) in SYSTEMS or floor(m) in ("trlm", "data")]
    assert not bad, "core/ must stand on its own:\n" + "\n".join(bad)


def test_data_imports_only_core():
    bad = [f"{module_name(p)} imports {m}" for p in sorted((PKG / "data").rglob("*.py")) for m in sorted(imports(p))
           if floor(m) not in ("core", "data")]
    assert not bad, "trlm.data reads files for every system and imports none:\n" + "\n".join(bad)


def test_no_two_modules_import_each_other():
    graph = {module_name(p): {m for m in imports(p) if m != module_name(p)} for p in PKG.rglob("*.py")}
    loops = sorted(f"{a} <-> {b}" for a, deps in graph.items() for b in deps
                   if a < b and a in graph.get(b, ()) and not a.endswith(("__init__",)))
    assert not loops, "import loops:\n" + "\n".join(loops)
