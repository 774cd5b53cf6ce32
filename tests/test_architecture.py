"""The package layout's dependency direction, checked on the source so it cannot drift.

    kernel (controlplane)  <-  domain apps (tenants, models_registry, nodes)
                           <-  features (gateway, metering, dashboard)

The project wiring (URLs, ASGI, settings) sits on top and may import anything. The kernel may
import `tenants` (tenant narrowing and roles are part of every API base class), nothing else.
The node agent runs on GPU hosts with the standard library only. docs/architecture.md draws
the same picture.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KERNEL = "controlplane"
DOMAIN = {"tenants", "models_registry", "nodes"}
FEATURES = {"gateway", "metering", "dashboard"}
PROJECT = {KERNEL} | DOMAIN | FEATURES | {"devtools"}
# The top of the graph: these wire every app together, so they import what they wire.
WIRING = {
    "controlplane.asgi",
    "controlplane.urls",
    "controlplane.api.urls",
    "controlplane.settings",
    "controlplane.wsgi",
}


def project_imports(path: Path) -> set[str]:
    """Every project module `path` imports, at any depth (lazy imports count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {name for name in found if name.split(".")[0] in PROJECT}


def modules(*packages: str) -> list[tuple[str, Path]]:
    found = []
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found.append((name.removesuffix(".__init__"), path))
    return found


def offending(packages: set[str] | tuple[str, ...], forbidden: set[str]) -> list[str]:
    return [
        f"{name} imports {target}"
        for name, path in modules(*packages)
        if name not in WIRING
        for target in sorted(project_imports(path))
        if target.split(".")[0] in forbidden
    ]


def test_the_kernel_imports_no_domain_app_but_tenants_and_no_feature() -> None:
    assert offending((KERNEL,), (DOMAIN - {"tenants"}) | FEATURES) == []


def test_domain_apps_never_import_the_gateway_metering_or_the_dashboard() -> None:
    assert offending(tuple(DOMAIN), FEATURES) == []


def test_the_gateway_and_metering_never_import_the_dashboard() -> None:
    assert offending(("gateway", "metering"), {"dashboard"}) == []


def test_dev_tools_import_nothing_of_the_control_plane() -> None:
    assert offending(("devtools",), PROJECT - {"devtools"}) == []


# Imported inside a try where present: NVML reads a GPU host's devices, and a CPU node has none.
OPTIONAL_ON_GPU_HOSTS = {"pynvml"}


def test_the_node_agent_needs_only_the_standard_library_and_itself() -> None:
    stdlib = set(sys.stdlib_module_names) | OPTIONAL_ON_GPU_HOSTS
    problems = []
    for name, path in modules("nodes/agent"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module]
            else:
                continue
            for target in targets:
                top = target.split(".")[0]
                if target.startswith("nodes.agent") or top in stdlib or top == "__future__":
                    continue
                problems.append(f"{name} imports {target}")
    assert problems == []


@pytest.mark.parametrize("package", sorted(PROJECT))
def test_every_module_over_400_lines_says_why_at_its_top(package: str) -> None:
    """Long modules are allowed when they hold one concept, and say so where a reader starts."""
    unexplained = []
    for name, path in modules(package):
        text = path.read_text()
        if text.count("\n") <= 400:
            continue
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if "lines" not in docstring:
            unexplained.append(name)
    assert unexplained == []
