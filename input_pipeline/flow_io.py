"""Optical-flow file formats: Middlebury ``.flo`` and the original CMP's 8-bit flow image pairs.

Flow arrays are float32 of shape (H, W, 2) holding (dx, dy) in pixels: x to the right, y down, the
motion of each pixel of the first frame.

* ``.flo`` (Middlebury): little-endian float32 magic 202021.25, int32 width, int32 height, then the
  H * W * 2 float32 values in row-major (H, W, 2) order. Lossless.
* Flow image pair (the original's ``flow_file_type: "jpg"``): one 8-bit grayscale image per component,
  value ``v`` meaning ``v / 255 * 100 - 50`` pixels, i.e. linear over [-50, 50] px with a step of
  100 / 255 = 0.392 px. Motion beyond +-50 px is clipped and zero motion is not representable (127 and
  128 decode to -0.196 and +0.196). JPEG storage adds compression loss on top; ``.png`` files hold the
  same 8-bit values losslessly. The writers pick the codec from the file extension.

Every writer writes to a temporary file in the destination folder and renames it into place, so an
interrupted program never leaves a partial file under the final name. The readers keep no state and are
safe to call from several threads.
"""

from __future__ import annotations

import math
import os
import tempfile

import cv2
import numba
import numpy as np

FLO_MAGIC = 202021.25
"""Float32 tag at the start of every ``.flo`` file (reads as the bytes ``PIEH``)."""

FLOW_IMAGE_RANGE = 50.0
"""Flow images cover [-FLOW_IMAGE_RANGE, FLOW_IMAGE_RANGE] pixels."""

_FLO_HEADER_BYTES = 12
_FLOW_STEP = 2 * FLOW_IMAGE_RANGE / 255.0
# Lookup table of the 256 decoded values: indexing is faster than arithmetic on every pixel.
_DECODE_LUT = (np.arange(256, dtype=np.float64) * _FLOW_STEP - FLOW_IMAGE_RANGE).astype(np.float32)
_IMREAD_GRAY = cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file and a rename.

    The temporary file lives in the destination folder (created if missing) with a hidden name ending
    in ``.tmp``; it is removed if writing fails. Readers and resumed runs therefore see either no file
    or the complete file.

    Args:
      path: destination file.
      data: the file contents.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def check_flow(flow: np.ndarray) -> np.ndarray:
    """Checks a flow field's shape; returns it as a C-contiguous float32 array (a copy only if needed).

    Args:
      flow: array-like (H, W, 2) of (dx, dy) in pixels, any real dtype.

    Returns:
      float32 (H, W, 2), C-contiguous (what the numba kernels and ``tobytes`` need).

    Raises:
      ValueError: the shape is not (H, W, 2) with H, W > 0.
    """
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2 or flow.shape[0] == 0 or flow.shape[1] == 0:
        raise ValueError(f"flow must have shape (H, W, 2) with H, W > 0, got {flow.shape}")
    return np.ascontiguousarray(flow, dtype=np.float32)


def check_flow_values(flow: np.ndarray, max_magnitude: float = math.inf) -> None:
    """Raises ValueError unless every flow component is finite and at most ``max_magnitude`` in size.

    The common case costs a max and a min over the array (NaN propagates through
    both); the offending values are counted and located only when there are some.

    Args:
      flow: float array (H, W, 2) of (dx, dy) in pixels.
      max_magnitude: largest accepted ``|dx|`` and ``|dy|``, pixels (``inf``: finite is enough).

    Raises:
      ValueError: the message (which does not name a file: callers prefix it) says how many values are
        NaN or infinite, or how many exceed the bound and the largest with its row, column and component.
    """
    high, low = float(flow.max()), float(flow.min())
    if math.isfinite(high) and math.isfinite(low) and high <= max_magnitude and low >= -max_magnitude:
        return
    finite = np.isfinite(flow)
    if not finite.all():
        raise ValueError(f"holds {finite.size - np.count_nonzero(finite)} NaN or infinite values")
    size = np.abs(flow)
    row, col, comp = np.unravel_index(int(np.argmax(size)), size.shape)
    count = np.count_nonzero(size > max_magnitude)
    raise ValueError(
        f"holds {count} value{'s' if count > 1 else ''} beyond +-{max_magnitude:g} px (max_flow_magnitude), "
        f"the largest {flow[row, col, comp]:g} px ({'dx' if comp == 0 else 'dy'} at row {row}, column {col})"
    )


def _check_flo_header(f, path: str) -> tuple[int, int]:
    """Reads and checks the header of the open ``.flo`` file ``f``; returns (height, width)."""
    header = f.read(_FLO_HEADER_BYTES)
    if len(header) < _FLO_HEADER_BYTES:
        raise ValueError(f"{path}: truncated .flo header ({len(header)} of {_FLO_HEADER_BYTES} bytes)")
    magic = float(np.frombuffer(header, "<f4", count=1)[0])
    if magic != FLO_MAGIC:
        raise ValueError(f"{path}: not a .flo file (magic number {magic!r}, expected {FLO_MAGIC})")
    width, height = (int(v) for v in np.frombuffer(header, "<i4", count=2, offset=4))
    if width <= 0 or height <= 0:
        raise ValueError(f"{path}: invalid .flo size {width}x{height} (width x height)")
    expected = _FLO_HEADER_BYTES + width * height * 2 * 4
    actual = os.fstat(f.fileno()).st_size
    if actual != expected:
        raise ValueError(
            f"{path}: .flo file is {actual} bytes, its header ({width}x{height}, width x height) "
            f"implies {expected}"
        )
    return height, width


def read_flo_header(path: str) -> tuple[int, int]:
    """Checks a ``.flo`` file's header and size without reading the flow.

    Args:
      path: the ``.flo`` file.

    Returns:
      (height, width) in pixels.

    Raises:
      FileNotFoundError: the file does not exist.
      ValueError: as ``read_flo``.
    """
    with open(path, "rb") as f:
        return _check_flo_header(f, path)


def read_flo(path: str) -> np.ndarray:
    """Reads a Middlebury ``.flo`` file.

    Args:
      path: the ``.flo`` file.

    Returns:
      float32 array (H, W, 2): (dx, dy) in pixels.

    Raises:
      FileNotFoundError: the file does not exist.
      ValueError: the magic number is wrong, the header is truncated or the file size does not match
        the width and height of the header. The message names the path and the problem.
    """
    with open(path, "rb") as f:
        height, width = _check_flo_header(f, path)
        flow = np.empty((height, width, 2), dtype="<f4")
        if f.readinto(memoryview(flow).cast("B")) != flow.nbytes:
            raise ValueError(f"{path}: .flo file shrank while being read")
    return flow.astype(np.float32, copy=False)


def write_flo(path: str, flow: np.ndarray) -> None:
    """Writes a Middlebury ``.flo`` file (atomically, see ``write_bytes_atomic``).

    Args:
      path: destination file.
      flow: array (H, W, 2) of (dx, dy) in pixels; stored as float32.

    Raises:
      ValueError: ``flow`` does not have shape (H, W, 2).
    """
    flow = check_flow(flow)
    height, width = flow.shape[:2]
    header = np.array([FLO_MAGIC], "<f4").tobytes() + np.array([width, height], "<i4").tobytes()
    write_bytes_atomic(path, header + np.ascontiguousarray(flow, dtype="<f4").tobytes())


def decode_flow_jpg(x_img: np.ndarray, y_img: np.ndarray) -> np.ndarray:
    """Decodes the original's 8-bit flow image pair: v -> v / 255 * 100 - 50 per channel.

    Args:
      x_img: uint8 array (H, W), the x (horizontal) component.
      y_img: uint8 array (H, W), the y (vertical) component.

    Returns:
      float32 array (H, W, 2): (dx, dy) in pixels, within [-50, 50].

    Raises:
      ValueError: the images are not 2-D uint8 arrays of the same shape.
    """
    for name, img in (("x", x_img), ("y", y_img)):
        if img.dtype != np.uint8 or img.ndim != 2:
            raise ValueError(f"flow {name} image must be uint8 (H, W), got {img.dtype} {img.shape}")
    if x_img.shape != y_img.shape:
        raise ValueError(f"flow x image is {x_img.shape} but flow y image is {y_img.shape} (H, W)")
    flow = np.empty(x_img.shape + (2,), np.float32)
    _decode_planes(x_img, y_img, _DECODE_LUT, flow)
    return flow


@numba.njit(cache=True, nogil=True)
def _decode_planes(x_img, y_img, lut, flow):
    """``flow[..., 0] = lut[x_img]``, ``flow[..., 1] = lut[y_img]`` in one pass over (H, W) uint8 planes.

    One pass instead of ``cv2.LUT`` per plane and two strided copies into the
    interleaved (H, W, 2) array; releases the GIL.
    """
    for i in range(x_img.shape[0]):
        xs, ys, out = x_img[i], y_img[i], flow[i]
        for j in range(x_img.shape[1]):
            out[j, 0] = lut[xs[j]]
            out[j, 1] = lut[ys[j]]


def encode_flow_jpg(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Encodes flow as the original's 8-bit image pair, the inverse of ``decode_flow_jpg``.

    Values are clipped to [-50, 50] px and rounded to the nearest of the 256 levels, so decoding gives
    the clipped flow back within 100 / 255 / 2 = 0.196 px per component (before any JPEG loss).

    Args:
      flow: array (H, W, 2) of (dx, dy) in pixels. Non-finite values are not allowed.

    Returns:
      (x, y): two uint8 arrays (H, W).

    Raises:
      ValueError: ``flow`` does not have shape (H, W, 2) or holds NaN or infinity.
    """
    flow = check_flow(flow)
    if not np.isfinite(flow).all():
        raise ValueError("flow holds NaN or infinite values, which 8-bit flow images cannot store")
    levels = np.rint((np.clip(flow, -FLOW_IMAGE_RANGE, FLOW_IMAGE_RANGE) + FLOW_IMAGE_RANGE) / _FLOW_STEP)
    levels = levels.astype(np.uint8)
    return np.ascontiguousarray(levels[..., 0]), np.ascontiguousarray(levels[..., 1])


def decode_image_file(path: str, flags: int) -> np.ndarray:
    """Reads and decodes an image file with OpenCV.

    Reading the bytes in Python and decoding with ``cv2.imdecode`` (rather than ``cv2.imread``) tells a
    missing file from an undecodable one.

    Args:
      path: the image file.
      flags: ``cv2.IMREAD_*`` flags.

    Returns:
      The decoded uint8 array as OpenCV returns it (BGR order for colour images).

    Raises:
      FileNotFoundError: the file does not exist.
      ValueError: OpenCV cannot decode the file (message names the path).
    """
    with open(path, "rb") as f:
        data = f.read()
    img = cv2.imdecode(np.frombuffer(data, np.uint8), flags) if data else None
    if img is None:
        raise ValueError(f"{path}: cannot decode image ({len(data)} bytes)")
    if img.dtype != np.uint8:
        raise ValueError(f"{path}: expected an 8-bit image, got {img.dtype}")
    return img


def read_flow_jpg(x_path: str, y_path: str) -> np.ndarray:
    """Reads a flow image pair (any 8-bit format OpenCV decodes, read as grayscale).

    Args:
      x_path: image of the x component.
      y_path: image of the y component.

    Returns:
      float32 array (H, W, 2): (dx, dy) in pixels, within [-50, 50].

    Raises:
      FileNotFoundError: a file does not exist.
      ValueError: a file cannot be decoded, or the two images differ in size (message names the paths).
    """
    x_img = decode_image_file(x_path, _IMREAD_GRAY)
    y_img = decode_image_file(y_path, _IMREAD_GRAY)
    if x_img.shape != y_img.shape:
        raise ValueError(
            f"flow x image {x_path} is {x_img.shape[1]}x{x_img.shape[0]} but flow y image {y_path} is "
            f"{y_img.shape[1]}x{y_img.shape[0]} (width x height)"
        )
    return decode_flow_jpg(x_img, y_img)


def encode_image(path: str, img: np.ndarray, jpeg_quality: int = 95) -> bytes:
    """Encodes an image in the format named by the extension of ``path``.

    Args:
      path: file name whose extension (``.jpg``, ``.jpeg``, ``.png``, ...) selects the codec.
      img: uint8 array (H, W) or (H, W, 3) in BGR order (OpenCV's convention).
      jpeg_quality: JPEG quality 0-100, used for ``.jpg``/``.jpeg`` only.

    Returns:
      The encoded file contents.

    Raises:
      ValueError: OpenCV does not know the extension or fails to encode.
    """
    ext = os.path.splitext(path)[1].lower()
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if ext in (".jpg", ".jpeg") else []
    try:
        ok, buf = cv2.imencode(ext, img, params)
    except cv2.error as e:
        raise ValueError(f"{path}: cannot encode image: {e}") from e
    if not ok:
        raise ValueError(f"{path}: cannot encode image as {ext!r}")
    return buf.tobytes()


def write_flow_jpg(x_path: str, y_path: str, flow: np.ndarray, jpeg_quality: int = 95) -> None:
    """Writes flow as an 8-bit image pair (each file atomically, x first).

    The extension of each path picks the codec: ``.jpg`` reproduces the original's lossy storage,
    ``.png`` stores the 8-bit levels exactly.

    Args:
      x_path: destination of the x component.
      y_path: destination of the y component.
      flow: array (H, W, 2) of (dx, dy) in pixels; clipped to [-50, 50].
      jpeg_quality: JPEG quality 0-100 for ``.jpg``/``.jpeg`` paths.

    Raises:
      ValueError: bad flow shape, non-finite flow, or an extension OpenCV cannot encode.
    """
    x_img, y_img = encode_flow_jpg(flow)
    x_data = encode_image(x_path, x_img, jpeg_quality)
    y_data = encode_image(y_path, y_img, jpeg_quality)
    write_bytes_atomic(x_path, x_data)
    write_bytes_atomic(y_path, y_data)
