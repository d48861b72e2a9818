"""The stock mmpose configs adaptkit ships fragments for, benchmarks and tests against: one place.

Plain data (no OpenMMLab import), read by ``adapters/regenerate.py``, the
benchmarks and the tests.
"""

from __future__ import annotations

__all__ = [
    "STOCK_CONFIGS",
    "SHIPPED_BACKBONES",
    "FRAGMENT_NAMES",
    "HEAD_FRAGMENTS",
    "HRNET",
    "CROWDPOSE",
    "RTMPOSE_M",
    "SIMCC",
]

HRNET = "mmpose::body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w32_8xb64-210e_coco-256x192.py"
CROWDPOSE = "mmpose::body_2d_keypoint/topdown_heatmap/crowdpose/td-hm_res50_8xb64-210e_crowdpose-256x192.py"
RTMPOSE_M = "mmpose::body_2d_keypoint/rtmpose/coco/rtmpose-m_8xb256-420e_coco-256x192.py"
SIMCC = "mmpose::body_2d_keypoint/simcc/coco/simcc_res50_8xb64-210e_coco-256x192.py"

#: short name (benchmarks, CLI choices) -> stock config
STOCK_CONFIGS: dict[str, str] = {"hrnet": HRNET, "crowdpose": CROWDPOSE}

#: the part of a shipped fragment's file name that names its stock config -> that config
FRAGMENT_NAMES: dict[str, str] = {"hrnet-w32_coco-256x192": HRNET, "res50_crowdpose-256x192": CROWDPOSE}

#: backbones with a committed fragment for every config in FRAGMENT_NAMES
SHIPPED_BACKBONES: tuple[str, ...] = ("sctnet-s", "sctnet-b")

#: fragments shipped for one backbone each, beyond the heatmap heads above: file name part -> (backbone, config)
HEAD_FRAGMENTS: dict[str, tuple[str, str]] = {
    "rtmpose-m_coco-256x192": ("sctnet-b", RTMPOSE_M),
    "simcc-res50_coco-256x192": ("sctnet-b", SIMCC),
}
