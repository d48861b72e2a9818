"""Importing adaptkit's mmpose plugin never replaces a class someone else registered."""

from __future__ import annotations

import importlib

import pytest
import torch.nn as nn

import adaptkit.mm.plugin as plugin
from adaptkit.errors import ConfigError


@pytest.fixture
def models():
    from mmpose.registry import MODELS

    saved = dict(MODELS.module_dict)
    yield MODELS
    MODELS.module_dict.clear()
    MODELS.module_dict.update(saved)


def test_reimporting_rebinds_adaptkit_own_names(models):
    old = plugin.ForeignBackbone
    importlib.reload(plugin)  # a new class object with the same module and name
    assert plugin.ForeignBackbone is not old and models.get("ForeignBackbone") is plugin.ForeignBackbone


def test_a_users_sctnet_is_kept_with_a_warning(models):
    class SCTNet(nn.Module):  # the user's own, registered first
        pass

    models.module_dict.pop("SCTNet", None)
    models.register_module(name="SCTNet", module=SCTNet)
    with pytest.warns(UserWarning, match="already holds a 'SCTNet'"):
        assert plugin.register("SCTNet", plugin.SCTNet, required=False) is False
    assert models.get("SCTNet") is SCTNet


def test_a_users_class_under_a_name_fragments_need_is_a_config_error(models):
    class ShapeAdapter(nn.Module):
        pass

    models.module_dict.pop("ShapeAdapter", None)
    models.register_module(name="ShapeAdapter", module=ShapeAdapter)
    with pytest.raises(ConfigError, match="already holds a 'ShapeAdapter'.*will not replace it"):
        plugin.register("ShapeAdapter", plugin.ShapeAdapter)
    assert models.get("ShapeAdapter") is ShapeAdapter
