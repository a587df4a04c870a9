"""Every evaluation: end-point error and its baselines, pictures, the summary table.

Conventions: arrays are NHWC; flow has channels (dx, dy) in pixels (x to the
right, y down); ``sparse`` (N, H, W, 2) holds the flow at guidance pixels and 0
elsewhere, ``mask`` (N, H, W, 2) is 1.0 at guidance pixels (both channels) and 0
elsewhere; ``image`` (N, H, W, 3) is RGB normalised as the input pipeline
does (``cmp_jax.normalization``: (v - mean) / std on the 0-255 scale with the
ImageNet mean and std).

Modules (their public names are re-exported here; none imports TensorFlow):

* ``metrics``: EPE sums and pixel counts overall and per target-magnitude
  range (summable across devices and batches), their means, per-image EPE,
  and the ``eval/...`` metrics of a whole evaluation.
* ``baselines``: zero flow, nearest-guidance fill and Gaussian splat, in NumPy
  on the host: what the guidance alone predicts without looking at the image.
* ``pictures``: image with guidance arrows | target flow | predicted flow.
* ``summary``: the end-of-training table (model and baselines per magnitude
  range, ratio to nearest fill) and its ``summary/...`` scalars.

``cmp_jax.evaluation.evaluator`` (imported on its own: it reads data through
the TensorFlow input pipeline) holds ``Evaluator``, the eval loop the training
loop calls, and ``evaluate_workdir``, which evaluates a finished workdir on any
data (``scripts/benchmark.py propagation``).
"""

from cmp_jax.evaluation.baselines import (
    baseline_flows,
    gaussian_splat_flow,
    guided_pixels,
    nearest_guidance_flow,
)
from cmp_jax.evaluation.metrics import (
    BASELINES,
    MAGNITUDE_RANGE_NAMES,
    MAGNITUDE_RANGES,
    epe_sums,
    image_epe,
    summarize_epe,
    summarize_eval,
)
from cmp_jax.evaluation.pictures import (
    batch_pictures,
    draw_guidance,
    flow_pictures,
)
from cmp_jax.evaluation.summary import (
    FRAC_BELOW_NEAREST,
    format_summary,
    report_summary,
    summary_scalars,
)

__all__ = [
    "BASELINES",
    "FRAC_BELOW_NEAREST",
    "MAGNITUDE_RANGES",
    "MAGNITUDE_RANGE_NAMES",
    "baseline_flows",
    "batch_pictures",
    "draw_guidance",
    "epe_sums",
    "flow_pictures",
    "format_summary",
    "gaussian_splat_flow",
    "guided_pixels",
    "image_epe",
    "nearest_guidance_flow",
    "report_summary",
    "summarize_epe",
    "summarize_eval",
    "summary_scalars",
]
