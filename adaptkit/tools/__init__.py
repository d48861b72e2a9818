"""Tools around the pipeline: the environment check (``doctor``) and the mmcv 1.x port check (``port``)."""
