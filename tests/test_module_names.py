"""Each probed feature names the submodule whose forward returned it."""

from __future__ import annotations

import torch
import torch.nn as nn

from adaptkit.core.probing import probe


class Pyramid(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(inplace=True))
        self.stages = nn.ModuleList([nn.Sequential(nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU(inplace=True)) for _ in range(2)])
        self.spp = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        c2 = self.stem(x)
        c4 = self.stages[0](c2)
        c8 = self.stages[1](c4)
        return {"c2": c2, "c4": c4, "c8": c8, "ppm": self.spp(c8), "sum": c8 + 1}


def test_outermost_submodule_names_each_feature_and_hooks_are_removed():
    model = Pyramid()
    for mode in ("meta", "real"):
        result = probe(model, (2, 3, 64, 64), mode=mode)
        names = {f.path: f.module for f in result.features}
        # the inplace ReLU returns the conv's tensor too: the enclosing Sequential wins
        assert names == {"c2": "stem", "c4": "stages.0", "c8": "stages.1", "ppm": "spp", "sum": None}
    assert all(not m._forward_hooks for m in model.modules())
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32))["ppm"].shape == (1, 4, 4, 4)


def test_module_name_reaches_probe_json(run_cli, tmp_path):
    source = tmp_path / "net.py"
    source.write_text(
        "import torch.nn as nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.layer1 = nn.Conv2d(3, 8, 3, 4, 1)\n"
        "    def forward(self, x):\n"
        "        return [self.layer1(x)]\n"
    )
    import json

    code, out, err = run_cli("probe", f"{source}:Net", "--input", "2x3x64x64", "--json")
    assert code == 0, err
    assert json.loads(out)["features"][0]["module"] == "layer1"
