"""Data: guidance sampling, flow and list-file readers, tf.data pipeline, synthetic data.

The modules of this package (``guidance``, ``flow_io``, ``lists``, ``pipeline``,
``synthetic``, ``tfds_builder``) are not written yet; see the README's status.
"""
