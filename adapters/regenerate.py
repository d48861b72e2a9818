"""Regenerate (or check) the committed config fragments in this folder.

    python adapters/regenerate.py          # rewrite every fragment
    python adapters/regenerate.py --check  # exit 1 if any fragment is stale

Each fragment puts a shipped backbone into a stock mmpose config; its
header names the `adaptkit wrap` command that writes it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from adaptkit.mm.stock import FRAGMENT_NAMES as CONFIGS
from adaptkit.mm.stock import HEAD_FRAGMENTS
from adaptkit.mm.stock import SHIPPED_BACKBONES as BACKBONES

HERE = Path(__file__).resolve().parent


def fragments() -> dict[Path, tuple[str, str]]:
    """Every shipped fragment path -> (backbone, config)."""
    every = {
        HERE / f"{backbone}_{name}.py": (backbone, config) for backbone in BACKBONES for name, config in CONFIGS.items()
    }
    every.update(
        {HERE / f"{backbone}_{name}.py": (backbone, config) for name, (backbone, config) in HEAD_FRAGMENTS.items()}
    )
    return every


def render(backbone: str, config: str, path: Path) -> str:
    """The fragment text ``adaptkit wrap`` writes for this pair."""
    from adaptkit.mm.fragments import wrap_config

    with tempfile.TemporaryDirectory() as tmp:
        text = wrap_config(
            backbone,
            config,
            Path(tmp) / path.name,
            command=f"adaptkit wrap {backbone} --target {config} --out adapters/{path.name}",
        ).text
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 when a fragment is stale")
    args = parser.parse_args(argv)
    stale = []
    for path, (backbone, config) in fragments().items():
        text = render(backbone, config, path)
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
            print(f"wrote adapters/{path.name}")
    if stale:
        print(f"stale fragments: {', '.join(stale)}; run 'make adapters'", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
