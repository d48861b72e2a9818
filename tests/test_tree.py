"""Output-tree paths: replace rebuilds every container on the path as its own type."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict, namedtuple

import pytest
import torch

from adaptkit.core.tree import iter_tensors, replace, select

Pair = namedtuple("Pair", ["low", "high"])


@dataclasses.dataclass(frozen=True)
class Out:
    logits: torch.Tensor
    maps: list


def test_replace_in_a_namedtuple_keeps_its_type_by_name_and_by_index():
    a, b, new = torch.zeros(1), torch.ones(1), torch.full((1,), 7.0)
    tree = Pair(a, b)
    by_name = replace(tree, "high", new)
    by_index = replace(tree, "1", new)
    assert type(by_name) is Pair and type(by_index) is Pair
    assert by_name.high is new and by_index.high is new and by_name.low is a
    assert tree.high is b  # the original is untouched


def test_replace_in_a_dataclass_dict_and_lists():
    a, b, c, new = (torch.full((1,), float(i)) for i in range(4))
    tree = Out(logits=a, maps=[OrderedDict(stage3=b, stage4=(c, Pair(a, b)))])
    out = replace(tree, "maps.0.stage4.1.low", new)
    assert type(out) is Out and type(out.maps) is list and type(out.maps[0]) is OrderedDict
    assert type(out.maps[0]["stage4"]) is tuple and type(out.maps[0]["stage4"][1]) is Pair
    assert select(out, "maps.0.stage4.1.low") is new
    assert out.logits is a and out.maps[0]["stage3"] is b  # off the path: shared
    assert select(tree, "maps.0.stage4.1.low") is a
    assert [p for p, _ in iter_tensors(out)] == [p for p, _ in iter_tensors(tree)]


def test_replace_at_the_top_and_in_a_plain_dict_with_int_keys():
    t = torch.zeros(1)
    assert replace(t, "", "x") == "x"
    out = replace({0: t, "a": [t, t]}, "a.1", "x")
    assert out == {0: t, "a": [t, "x"]}


@pytest.mark.parametrize(
    ("path", "match"), [("2", "the output has no element '2'"), ("0.zz", "path '0.zz': 0 has no element 'zz'")]
)
def test_replace_names_the_missing_key(path, match):
    with pytest.raises(KeyError, match=match):
        replace([Pair(torch.zeros(1), torch.zeros(1))], path, torch.ones(1))
