"""The pipeline, pure torch: probe -> plan -> build -> emit / fuse.

Nothing under ``adaptkit.core`` imports mmengine, mmcv, mmpose, rich or
matplotlib (``tests/test_boundaries.py`` keeps it so): the stages pass
frozen records (``records.py``) and plain modules between them.
"""
