"""OpenMMLab integration: configs and heads read into records, registered modules, fragments, training.

Every module here may import mmengine/mmpose, lazily where it can, so that
``import adaptkit`` stays light.
"""
