"""The house's boundaries: the core is pure torch, and `import adaptkit` stays light.

Each check runs in a fresh interpreter, so modules other tests imported do
not hide an import the core makes on its own.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pytest

import adaptkit.core

from .conftest import ROOT

#: what the core may never import: OpenMMLab, and the rendering libraries the CLI and benchmarks use
FORBIDDEN = ("mmengine", "mmcv", "mmpose", "mmdet", "mmpretrain", "rich", "matplotlib")
CORE_MODULES = sorted(f"adaptkit.core.{m.name}" for m in pkgutil.iter_modules(adaptkit.core.__path__))


def _imported_after(statement: str) -> list[str]:
    code = f"import sys, json\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _forbidden(modules: list[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in FORBIDDEN)


def test_the_core_has_modules_to_check():
    assert {"adaptkit.core.probing", "adaptkit.core.planning", "adaptkit.core.records"} <= set(CORE_MODULES)


def test_core_never_imports_openmmlab_or_renderers():
    imports = "\n".join(f"import {m}" for m in CORE_MODULES)
    assert _forbidden(_imported_after(imports)) == []


@pytest.mark.parametrize("statement", ["import adaptkit", "import adaptkit.errors", "from adaptkit import probe"])
def test_public_entry_points_stay_light(statement):
    assert _forbidden(_imported_after(statement)) == []


def test_core_sources_name_no_outside_package():
    """A lazy import inside a function would slip past sys.modules; the source text does not."""
    offenders = []
    for path in sorted((ROOT / "adaptkit" / "core").glob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            words = line.strip().split()
            if len(words) >= 2 and words[0] in ("import", "from"):
                top = words[1].split(".")[0]
                if top in FORBIDDEN or (
                    words[1].startswith("adaptkit.") and words[1].split(".")[1] not in ("core", "errors")
                ):
                    offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert offenders == []
