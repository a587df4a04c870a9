"""TFDS packaging of CMP training data; importing this registers the ``cmp_flow`` builder.

Build with the TFDS CLI (array_record gives the random access the pipeline uses)::

    tfds build cmp_flow --imports input_pipeline.tfds_builder --config lists \
        --manual_dir DIR --data_dir ~/tensorflow_datasets --file_format array_record
    tfds build cmp_flow --imports input_pipeline.tfds_builder --config synthetic \
        --file_format array_record

Adding ``--beam_pipeline_options="runner=...,..."`` generates the examples on Apache Beam
(``cmp_flow`` module docstring; docs/data.md).
"""

from input_pipeline.tfds_builder.cmp_flow import CmpFlow, CmpFlowConfig

__all__ = ["CmpFlow", "CmpFlowConfig"]
