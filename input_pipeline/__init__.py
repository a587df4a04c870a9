"""Data: guidance sampling, flow and list-file readers, tf.data pipeline, synthetic data.

Modules: ``guidance`` (sparse guidance sampling), ``flow_io`` (``.flo`` and 8-bit
flow images), ``lists`` (the original's list files), ``synthetic`` (the embedded
moving-sprites dataset), ``pipeline`` (tf.data) and ``tfds_builder`` (TFDS
packaging).
"""
