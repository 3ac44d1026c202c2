"""The package's shape holds: no import cycles, plain networks (no speed code, no context variables), the option
list in one place, every environment variable read in one settings module per service."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "SadTalker" / "sadtalker"


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(path: Path, top_level_only: bool) -> set[str]:
    """Absolute `sadtalker.*` modules a file imports (at module level only, or anywhere). `from pkg import mod`
    counts as importing `pkg.mod` (a package's __init__ running first is Python's doing, not a dependency)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    known = modules()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sadtalker"):
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & set(known)
            found |= submodules
            if len(submodules) < len(node.names):   # names defined in the module itself
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("sadtalker"))
    return found


def test_no_import_cycles_among_module_level_imports():
    """Module-level imports of the package form a DAG (lazy imports inside functions are allowed to point back)."""
    mods = modules()
    graph = {name: {m for m in imports_of(path, top_level_only=True) if m in mods and m != name}
             for name, path in mods.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_networks_are_plain_pytorch():
    """Nothing under nets/ imports the speed package or the engines, or keeps context variables."""
    for path in (PACKAGE / "nets").rglob("*.py"):
        imported = imports_of(path, top_level_only=False)
        assert not any(m.startswith(("sadtalker.accel", "sadtalker.engines", "sadtalker.service")) for m in imported), \
            (path, imported)
        assert "winograd" not in path.read_text().lower() or path.name == "__init__.py", path


def test_no_context_variables_in_the_package():
    for path in PACKAGE.rglob("*.py"):
        assert "ContextVar" not in path.read_text(), path


def test_the_option_list_is_defined_once():
    """The options are declared as fields of one class (GenerationOptions); the service, the command line and the
    front read them from there (from_mapping / from_json / json_schema), not from class fields or columns of their
    own."""
    options = {"still_mode", "pose_style", "expression_scale", "idle_seconds", "use_blink"}
    places = []
    for path in list(PACKAGE.rglob("*.py")) + list((ROOT / "DemoFront").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                fields = {s.target.id for s in node.body if isinstance(s, ast.AnnAssign)
                          and isinstance(s.target, ast.Name)}
                if len(fields & options) >= 2:
                    places.append(f"{path.relative_to(ROOT).as_posix()}:{node.name}")
    assert places == ["SadTalker/sadtalker/options.py:GenerationOptions"], places


def test_environment_is_read_only_in_the_settings_modules():
    """The model service's variables are read in service/settings.py and io/limits.py (the limits shared with the
    front); the standard XDG_CACHE_HOME / CC / GLIBC_TUNABLES conventions and the process environment handed to
    child processes are the only other reads."""
    allowed = {"service/settings.py", "io/limits.py", "runtime/malloc_tuning.py", "accel/native.py"}
    reads = re.compile(r"os\.environ(?:\.get)?\s*[\[(]\s*[\"']([A-Z_]+)[\"']|os\.getenv\(\s*[\"']([A-Z_]+)")
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        names = {a or b for a, b in reads.findall(path.read_text())}
        if rel in allowed:
            if rel in ("runtime/malloc_tuning.py", "accel/native.py"):
                assert names <= {"XDG_CACHE_HOME", "CC", "GLIBC_TUNABLES"}, (rel, names)
            continue
        assert not names, (rel, names)


def test_every_setting_read_is_in_the_readme_table():
    readme = (ROOT / "README.md").read_text()
    names = set()
    for path in (PACKAGE / "service" / "settings.py", PACKAGE / "io" / "limits.py"):
        names |= set(re.findall(r"[\"']((?:SADTALKER|MAX)_[A-Z_]+)[\"']", path.read_text()))
    missing = sorted(n for n in names if f"`{n}`" not in readme)
    assert not missing, missing
