"""Procedural "moving sprites": frame pairs with exact optical flow, no download.

Generative model. Coordinates are pixels of the output image with pixel centres
at integer (x, y) = (column, row), the convention of ``cv2.warpAffine`` and
``cv2.remap``. Every example is drawn from ``np.random.default_rng((seed, index))``.

* Background: a low-saturation procedural texture on a canvas a little larger
  than the image, moved by a camera motion C, a similarity about the image
  centre (translation in a disc of radius ``max_camera_shift``, small rotation
  and zoom).
* Objects 1..N, N uniform in [min_objects, max_objects], stacked in that depth
  order (object N on top). An object is a textured shape (ellipse, rotated
  rectangle or star-shaped polygon) with its own saturated colour palette, its
  hue away from the background's and from the other objects', and its own
  affine motion A_i: anisotropic scaling and rotation about the object's
  centre, then a translation in a disc of radius ``max_object_shift``.
* With probability ``articulated_prob`` an object is articulated: a second part
  (a limb of a related colour) hinged at a joint J inside the body rotates about
  J by an angle theta and then follows the body, so it moves by
  A_i o R_J(theta). The limb is drawn just below or just above the body.

Each object or part is a *layer*: a texture defined on a box around it, a
binary mask (its support) and an affine motion M from frame-1 to frame-2 pixel
coordinates. Frame 1 composites the layers at rest in depth order. Frame 2
composites them in the same order warped by their motions: every frame-2 pixel
q shows the top-most layer whose warped mask covers q, sampled bilinearly at
M^-1(q) (a mask covers q where its bilinear sample at M^-1(q) is >= 0.5). The
flow of a frame-1 pixel p is M(p) - p for the top-most layer at p (C(p) - p on
the background), exact for every pixel, including pixels that become occluded
or leave the image. Brightness is constant: wherever p stays visible, frame 2
at p + flow(p) equals frame 1 at p up to interpolation error, and all motion is
piecewise affine, so a few flow vectors per object or part determine its flow.

Clips (``generate_clip``) repeat the same motions: frame t is frame 1 moved t
times (camera C^t, body A^t, limb A^t o R_J(t theta)), rendered like frame 2,
with per-frame object masks of the visible region of every object.

Motion parameters are in pixels and do not scale with the image size; shapes
and textures do (they are fractions of min(height, width)), except that
texture periods are at least 12 pixels. With the default motion ranges the
flow magnitude has median ~7 and 99th percentile ~31 pixels at 416 x 416
(objects: median ~21); about 1 pixel in 10^4 has a component beyond +-50 pixels
(the model's range), mostly at the tips of limbs.

OpenCV may use several threads inside one call; a pipeline that calls
``generate_example`` from many threads may want ``cv2.setNumThreads(1)``.
"""

import colorsys
import dataclasses
import math

import cv2
import numpy as np

# Keys of ``generate_example``'s result.
EXAMPLE_KEYS = ("frame1", "frame2", "flow", "segmentation", "num_objects")

# Shortest period of texture patterns in pixels: smooth enough for bilinear
# interpolation to be accurate (frame 2 is resampled), sharp enough to track.
_MIN_PERIOD = 12.0

# The identity as a (2, 3) affine map.
_IDENTITY = np.eye(2, 3)

# (256, 3) weights of the three colour stops of a palette at t = 0, 0.5, 1 for
# t = i / 255: piecewise-linear hat functions.
_GRADIENT = np.maximum(0.0, 1.0 - np.abs(np.linspace(0.0, 2.0, 256)[:, None] - np.arange(3.0)[None, :]))


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the generator.

    Attributes:
      height: image height in pixels (>= 16).
      width: image width in pixels (>= 16).
      min_objects: fewest objects per example (>= 0).
      max_objects: most objects per example (>= min_objects).
      articulated_prob: chance that an object is articulated (two parts rotating
        about a joint), in [0, 1].
      max_camera_shift: radius in pixels of the disc of background translations.
      max_camera_rotation_deg: largest background rotation in degrees (< 45).
      max_camera_zoom: largest relative background zoom, in [0, 0.5).
      max_object_shift: radius in pixels of the disc of object translations.
      max_rotation_deg: largest object rotation in degrees (< 90).
      max_scale_change: largest relative object scale change per axis, in [0, 0.5).
      max_articulation_deg: largest rotation of a limb about its joint in degrees
        (< 90); its magnitude is drawn from [1/3, 1] of this so that articulation
        is visible.
      min_object_radius: smallest object radius as a fraction of min(height, width).
      max_object_radius: largest object radius as a fraction of min(height, width),
        in [min_object_radius, 0.5]. Limbs reach 0.9 to 1.5 radii beyond the joint.
    """

    height: int = 416
    width: int = 416
    min_objects: int = 1
    max_objects: int = 5
    articulated_prob: float = 0.3
    max_camera_shift: float = 8.0
    max_camera_rotation_deg: float = 2.0
    max_camera_zoom: float = 0.03
    max_object_shift: float = 30.0
    max_rotation_deg: float = 15.0
    max_scale_change: float = 0.1
    max_articulation_deg: float = 25.0
    min_object_radius: float = 0.07
    max_object_radius: float = 0.2

    def __post_init__(self):
        def check(ok: bool, message: str):
            if not ok:
                raise ValueError(f"SyntheticConfig: {message}")

        for name in ("height", "width", "min_objects", "max_objects"):
            value = getattr(self, name)
            check(isinstance(value, int | np.integer), f"{name} must be an int, got {value!r}")
        check(
            self.height >= 16 and self.width >= 16,
            f"height and width must be >= 16 pixels, got {self.height} x {self.width}",
        )
        check(self.min_objects >= 0, f"min_objects must be >= 0, got {self.min_objects}")
        check(
            self.max_objects >= self.min_objects,
            f"max_objects ({self.max_objects}) must be >= min_objects ({self.min_objects})",
        )
        check(
            0.0 <= self.articulated_prob <= 1.0,
            f"articulated_prob must be in [0, 1], got {self.articulated_prob}",
        )
        for name in ("max_camera_shift", "max_object_shift"):
            value = getattr(self, name)
            check(0.0 <= value < math.inf, f"{name} must be finite and >= 0 pixels, got {value}")
        for name, bound in (
            ("max_camera_rotation_deg", 45.0),
            ("max_rotation_deg", 90.0),
            ("max_articulation_deg", 90.0),
            ("max_camera_zoom", 0.5),
            ("max_scale_change", 0.5),
        ):
            value = getattr(self, name)
            check(0.0 <= value < bound, f"{name} must be in [0, {bound}), got {value}")
        check(
            0.0 < self.min_object_radius <= self.max_object_radius <= 0.5,
            "need 0 < min_object_radius <= max_object_radius <= 0.5 (fractions of min(height, width)), "
            f"got {self.min_object_radius} and {self.max_object_radius}",
        )


@dataclasses.dataclass(frozen=True)
class Layer:
    """One rigidly moving textured layer: an object or one part of an articulated object.

    Attributes:
      texture: (h, w, 3) uint8 RGB appearance in frame 1, defined on the whole box
        (also around the mask, so bilinear sampling at the mask edge is exact).
      mask: (h, w) bool support of the layer.
      origin: (x0, y0), the frame-1 pixel of ``texture[0, 0]`` (may lie outside the image).
      motion: (2, 3) float64 affine map from frame-1 to frame-2 pixel coordinates.
      label: the object (1..N) the layer belongs to.
      hinge: (2, 3) float64 rotation of a limb about its joint, the identity for
        a body: ``motion`` is the body's motion composed with ``hinge``
        (``generate_clip`` repeats the two separately so limbs stay attached).
    """

    texture: np.ndarray
    mask: np.ndarray
    origin: tuple[int, int]
    motion: np.ndarray
    label: int
    hinge: np.ndarray


@dataclasses.dataclass(frozen=True)
class Scene:
    """Everything that ``render_scene`` turns into an example.

    Attributes:
      height: image height in pixels.
      width: image width in pixels.
      background: (height + 2 * margin, width + 2 * margin, 3) uint8 RGB canvas;
        canvas pixel (x, y) is frame-1 pixel (x - margin, y - margin).
      margin: canvas border in pixels, enough for the camera motion.
      camera: (2, 3) float64 affine map of the background, frame 1 to frame 2.
      layers: the layers from bottom to top.
      num_objects: N, the number of objects (some may be hidden in frame 1).
    """

    height: int
    width: int
    background: np.ndarray
    margin: int
    camera: np.ndarray
    layers: tuple[Layer, ...]
    num_objects: int


def _motion(
    center: np.ndarray, angle_deg: float, scale: tuple[float, float], shift: np.ndarray
) -> np.ndarray:
    """Affine map p -> center + shift + R(angle) diag(scale) (p - center), as a (2, 3) matrix."""
    a = math.radians(angle_deg)
    rotation = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    linear = rotation * np.asarray(scale)[None, :]
    return np.concatenate([linear, (center + shift - linear @ center)[:, None]], axis=1)


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """(2, 3) affine map ``outer o inner`` (apply ``inner`` first)."""
    return np.concatenate(
        [outer[:, :2] @ inner[:, :2], (outer[:, :2] @ inner[:, 2] + outer[:, 2])[:, None]], 1
    )


def _translation(dx: float, dy: float) -> np.ndarray:
    """(2, 3) affine map p -> p + (dx, dy)."""
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])


def _apply(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Maps (K, 2) points (x, y) by the (2, 3) affine ``m``."""
    return points @ m[:, :2].T + m[:, 2]


def _affine_flow(m: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Flow m(p) - p on the grid ``xs`` x ``ys``.

    Args:
      m: (2, 3) affine map.
      xs: (w,) column coordinates in pixels.
      ys: (h,) row coordinates in pixels.

    Returns:
      (h, w, 2) float32 flow (dx, dy) in pixels.
    """
    flow = np.empty((len(ys), len(xs), 2), np.float32)
    for c in range(2):
        along_x = ((m[c, 0] - (c == 0)) * xs).astype(np.float32)
        along_y = ((m[c, 1] - (c == 1)) * ys + m[c, 2]).astype(np.float32)
        np.add(along_y[:, None], along_x[None, :], out=flow[..., c])
    return flow


def _palette(rng: np.random.Generator, hue: float, saturated: bool) -> np.ndarray:
    """Colour lookup table: a gradient through three colours around ``hue``.

    Objects get saturated, high-contrast palettes (dark, mid, bright), the
    background a greyish, lower-contrast one.

    Returns:
      (1, 256, 3) uint8 RGB table for ``cv2.LUT``.
    """
    if saturated:
        sat = rng.uniform(0.55, 1.0, 3)
        val = np.array([rng.uniform(0.2, 0.4), rng.uniform(0.5, 0.7), rng.uniform(0.85, 1.0)])
    else:
        sat = rng.uniform(0.08, 0.3, 3)
        val = np.sort(rng.uniform(0.3, 0.75, 3))
    hues = hue + rng.uniform(-0.04, 0.04, 3)
    stops = np.array([colorsys.hsv_to_rgb(h % 1.0, s, v) for h, s, v in zip(hues, sat, val, strict=True)])
    return np.round(_GRADIENT @ (stops * 255.0)).astype(np.uint8)[None]


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """(h, w) float32 smooth random field of roughly unit amplitude, blobs ``cell`` pixels apart."""
    grid = rng.standard_normal((max(2, round(h / cell) + 1), max(2, round(w / cell) + 1))).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _wave(rng: np.random.Generator, h: int, w: int, period: float) -> np.ndarray:
    """(h, w) float32 plane wave sin(2 pi <d, p> / period + phase), random direction d."""
    a = rng.uniform(0.0, math.pi)
    k = 2.0 * math.pi / period
    along_x = (k * math.cos(a) * np.arange(w)).astype(np.float32)
    along_y = (k * math.sin(a) * np.arange(h) + rng.uniform(0.0, 2.0 * math.pi)).astype(np.float32)
    return np.sin(along_y[:, None] + along_x[None, :])


def _pattern(rng: np.random.Generator, h: int, w: int, length: float) -> np.ndarray:
    """Procedural grey pattern: smooth noise plus stripes, checkers, rings or spots.

    Periods are at least ``_MIN_PERIOD`` pixels so that bilinear interpolation
    is accurate, and scale with ``length``.

    Args:
      rng: random generator.
      h: height in pixels.
      w: width in pixels.
      length: characteristic length in pixels (object radius, a quarter of the image).

    Returns:
      (h, w) float32 values in [0, 1].
    """
    period = max(_MIN_PERIOD, length * rng.uniform(0.3, 0.8))
    kind = rng.integers(4)
    if kind == 0:  # stripes
        structure = _wave(rng, h, w, period)
    elif kind == 1:  # checkers (two crossing waves)
        structure = _wave(rng, h, w, period) * _wave(rng, h, w, period) * 1.5
    elif kind == 2:  # rings around a random point
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        dx2 = np.square(np.arange(w, dtype=np.float32) - cx)
        dy2 = np.square(np.arange(h, dtype=np.float32) - cy)
        structure = np.sin(np.sqrt(dy2[:, None] + dx2[None, :]) * (2.0 * math.pi / period))
    else:  # spots
        structure = _smooth_noise(rng, h, w, period * 0.75)
    sharpness = rng.uniform(1.0, 2.5)
    structure = np.tanh(sharpness * structure) * (0.35 / math.tanh(sharpness))
    noise = _smooth_noise(rng, h, w, max(_MIN_PERIOD, 1.5 * length)) * np.float32(rng.uniform(0.1, 0.25))
    return np.clip(0.5 + structure + noise, 0.0, 1.0)


def _texture(
    rng: np.random.Generator, h: int, w: int, length: float, lut: np.ndarray, step: int = 1
) -> np.ndarray:
    """Procedural RGB texture: a ``_pattern`` coloured through a lookup table.

    Args:
      rng: random generator.
      h: height in pixels.
      w: width in pixels.
      length: characteristic length of the pattern in pixels.
      lut: (1, 256, 3) uint8 RGB table from ``_palette``.
      step: the pattern is drawn on a grid ``step`` times coarser and upsampled
        bilinearly (for large, smooth textures: saves most of the time).

    Returns:
      (h, w, 3) uint8 RGB texture.
    """
    gh, gw = -(-h // step), -(-w // step)
    grey = (_pattern(rng, gh, gw, length / step) * 255.0 + 0.5).astype(np.uint8)
    texture = cv2.LUT(cv2.merge([grey, grey, grey]), lut)
    return texture if step == 1 else cv2.resize(texture, (w, h), interpolation=cv2.INTER_LINEAR)


def _shape(rng: np.random.Generator, center: np.ndarray, radius: float) -> tuple[np.ndarray, float]:
    """Random body outline: ellipse, rotated rectangle or star-shaped polygon.

    Args:
      rng: random generator.
      center: (2,) centre (x, y) in pixels.
      radius: largest distance from the centre in pixels.

    Returns:
      ((K, 2) polygon vertices (x, y) in pixels, inner radius: the distance from
      the centre to the nearest edge, so the disc of that radius lies inside).
    """
    kind = rng.integers(3)
    if kind == 0:  # ellipse
        t = np.linspace(0.0, 2.0 * math.pi, 48, endpoint=False)
        local = np.stack([radius * np.cos(t), radius * rng.uniform(0.5, 1.0) * np.sin(t)], -1)
    elif kind == 1:  # rectangle with half-diagonal ``radius``
        ratio = rng.uniform(0.5, 1.0)
        hx = radius / math.hypot(1.0, ratio)
        local = np.array([[-hx, -hx * ratio], [hx, -hx * ratio], [hx, hx * ratio], [-hx, hx * ratio]])
    else:  # star-shaped polygon
        n = int(rng.integers(5, 10))
        t = 2.0 * math.pi * (np.arange(n) + rng.uniform(-0.3, 0.3, n)) / n
        r = radius * rng.uniform(0.6, 1.0, n)
        local = np.stack([r * np.cos(t), r * np.sin(t)], -1)
    # Distance from the centre (origin) to each edge segment a -> b.
    a, b = local, np.roll(local, -1, axis=0)
    along = np.clip(np.sum(-a * (b - a), -1) / np.sum(np.square(b - a), -1), 0.0, 1.0)
    inner = float(np.hypot(*(a + along[:, None] * (b - a)).T).min())
    rotation = rng.uniform(0.0, 2.0 * math.pi)
    c, s = math.cos(rotation), math.sin(rotation)
    return local @ np.array([[c, s], [-s, c]]) + center, inner


def _limb(rng: np.random.Generator, joint: np.ndarray, direction: float, radius: float) -> np.ndarray:
    """Outline of a limb (ellipse or rectangle) from just behind ``joint`` outwards.

    Args:
      rng: random generator.
      joint: (2,) joint (x, y) in pixels.
      direction: angle of the limb's axis in radians.
      radius: the body's radius in pixels; the limb reaches 0.9 to 1.5 of it beyond the joint.

    Returns:
      (K, 2) polygon vertices (x, y) in pixels.
    """
    length = radius * rng.uniform(0.9, 1.5)
    half_width = radius * rng.uniform(0.15, 0.25)
    half_length = (length + half_width) / 2.0
    if rng.random() < 0.5:
        t = np.linspace(0.0, 2.0 * math.pi, 40, endpoint=False)
        local = np.stack([half_length * np.cos(t), half_width * np.sin(t)], -1)
    else:
        local = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]) * [half_length, half_width]
    u = np.array([math.cos(direction), math.sin(direction)])
    center = joint + u * (half_length - half_width)
    return local @ np.array([[u[0], u[1]], [-u[1], u[0]]]) + center


def _layer(
    rng: np.random.Generator,
    polygon: np.ndarray,
    length: float,
    lut: np.ndarray,
    motion: np.ndarray,
    label: int,
    hinge: np.ndarray = _IDENTITY,
) -> Layer:
    """Rasterises ``polygon`` (K, 2) into a mask on its bounding box (plus 2 pixels) and textures the box."""
    x0, y0 = np.floor(polygon.min(0)).astype(int) - 2
    x1, y1 = np.ceil(polygon.max(0)).astype(int) + 3
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    # 4 fractional bits of sub-pixel precision.
    vertices = np.round((polygon - [x0, y0]) * 16.0).astype(np.int32)
    cv2.fillPoly(mask, [vertices], 1, lineType=cv2.LINE_8, shift=4)
    texture = _texture(rng, y1 - y0, x1 - x0, length, lut)
    return Layer(texture, mask.astype(bool), (int(x0), int(y0)), motion, label, hinge)


def sample_scene(index: int, config: SyntheticConfig = SyntheticConfig(), seed: int = 0) -> Scene:
    """Draws the scene of example ``index``: background, camera motion and layers.

    Args:
      index: example index (>= 0).
      config: generator parameters.
      seed: dataset seed (>= 0); (index, seed) determines the scene.

    Returns:
      The scene, deterministic in (index, seed, config).
    """
    rng = np.random.default_rng((seed, index))
    h, w = config.height, config.width
    size = min(h, w)
    image_center = np.array([(w - 1) / 2.0, (h - 1) / 2.0])

    def disc(radius: float) -> np.ndarray:
        """Uniform sample of the disc of ``radius`` pixels."""
        r, a = radius * math.sqrt(rng.random()), rng.uniform(0.0, 2.0 * math.pi)
        return np.array([r * math.cos(a), r * math.sin(a)])

    def symmetric(bound: float) -> float:
        return rng.uniform(-bound, bound)

    zoom = 1.0 + symmetric(config.max_camera_zoom)
    camera = _motion(
        image_center, symmetric(config.max_camera_rotation_deg), (zoom, zoom), disc(config.max_camera_shift)
    )
    # Frame-2 pixels (bilinear footprint included) pulled back into frame 1 must land on the canvas.
    corners = np.array([[-1.0, -1.0], [w, -1.0], [-1.0, h], [w, h]])
    pulled = _apply(cv2.invertAffineTransform(camera), corners)
    margin = int(math.ceil(np.abs(pulled - corners).max())) + 2
    bg_hue = rng.random()
    # Large and smooth: drawn on a grid ``step`` times coarser (periods >= 12 grid pixels) and upsampled.
    background = _texture(
        rng,
        h + 2 * margin,
        w + 2 * margin,
        size / 4.0,
        _palette(rng, bg_hue, saturated=False),
        step=max(1, size // 128),
    )

    num_objects = int(rng.integers(config.min_objects, config.max_objects + 1))
    # Object hues spread over the part of the hue circle away from the background's.
    slots = rng.permutation(num_objects)
    spacing = 0.7 / max(num_objects, 1)
    layers = []
    for i in range(num_objects):
        label = i + 1
        hue = bg_hue + 0.15 + spacing * (slots[i] + rng.uniform(0.2, 0.8))
        radius = size * rng.uniform(config.min_object_radius, config.max_object_radius)
        center = np.array([rng.uniform(0.1, 0.9) * (w - 1), rng.uniform(0.1, 0.9) * (h - 1)])
        scale = (1.0 + symmetric(config.max_scale_change), 1.0 + symmetric(config.max_scale_change))
        motion = _motion(center, symmetric(config.max_rotation_deg), scale, disc(config.max_object_shift))
        outline, inner = _shape(rng, center, radius)
        body = _layer(rng, outline, radius, _palette(rng, hue, saturated=True), motion, label)
        if rng.random() >= config.articulated_prob:
            layers.append(body)
            continue
        direction = rng.uniform(0.0, 2.0 * math.pi)
        joint = center + 0.8 * inner * np.array([math.cos(direction), math.sin(direction)])
        theta = rng.choice([-1.0, 1.0]) * rng.uniform(1.0 / 3.0, 1.0) * config.max_articulation_deg
        hinge = _motion(joint, theta, (1.0, 1.0), np.zeros(2))
        limb_hue = hue + rng.choice([-1.0, 1.0]) * 0.3 * spacing
        limb = _layer(
            rng,
            _limb(rng, joint, direction, radius),
            radius / 2.0,
            _palette(rng, limb_hue, saturated=True),
            _compose(motion, hinge),
            label,
            hinge,
        )
        layers.extend([body, limb] if rng.random() < 0.5 else [limb, body])
    return Scene(h, w, background, margin, camera, tuple(layers), num_objects)


def _clip_box(x0: int, y0: int, x1: int, y1: int, w: int, h: int) -> tuple[int, int, int, int] | None:
    """Intersection of [x0, x1) x [y0, y1) with the image, or None if empty."""
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    return (x0, y0, x1, y1) if x0 < x1 and y0 < y1 else None


def render_scene(scene: Scene, with_layers: bool = False, frame2: bool = True) -> dict[str, np.ndarray]:
    """Renders both frames, the flow and the segmentation of a scene.

    Args:
      scene: from ``sample_scene``.
      with_layers: also return, for checks, ``layers1`` and ``layers2``: (H, W)
        int32 maps of the top-most layer at every pixel of frame 1 and frame 2,
        0 for the background and k for ``scene.layers[k - 1]``.
      frame2: render frame 2. Training needs only frame 1 and the flow, and
        frame 2's warps are about half the rendering time.

    Returns:
      Dict with ``generate_example``'s keys (plus the layer maps if asked; no
      ``frame2`` when it is not rendered).
    """
    if with_layers and not frame2:
        raise ValueError("with_layers needs frame 2 (layers2 is a frame-2 map)")
    h, w, m = scene.height, scene.width, scene.margin
    frame1 = scene.background[m : m + h, m : m + w].copy()
    if frame2:
        image2 = cv2.warpAffine(
            scene.background,
            _compose(scene.camera, _translation(-m, -m)),
            (w, h),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT_101,
        )
    flow = _affine_flow(scene.camera, np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    segmentation = np.zeros((h, w), np.int32)
    layers1 = np.zeros((h, w), np.int32)
    layers2 = np.zeros((h, w), np.int32)
    for k, layer in enumerate(scene.layers, start=1):
        lh, lw = layer.mask.shape
        ox, oy = layer.origin
        # Frame 1: paste at rest; the flow there is the layer's affine flow.
        box = _clip_box(ox, oy, ox + lw, oy + lh, w, h)
        if box is not None:
            x0, y0, x1, y1 = box
            mask = layer.mask[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
            # cv2.copyTo writes into the views (row slices of contiguous arrays).
            cv2.copyTo(
                layer.texture[y0 - oy : y1 - oy, x0 - ox : x1 - ox], mask.view(np.uint8), frame1[y0:y1, x0:x1]
            )
            layer_flow = _affine_flow(
                layer.motion, np.arange(x0, x1, dtype=np.float64), np.arange(y0, y1, dtype=np.float64)
            )
            cv2.copyTo(layer_flow, mask.view(np.uint8), flow[y0:y1, x0:x1])
            np.copyto(segmentation[y0:y1, x0:x1], layer.label, where=mask)
            if with_layers:
                np.copyto(layers1[y0:y1, x0:x1], k, where=mask)
        if not frame2:
            continue
        # Frame 2: warp texture and mask (local box -> frame 2) into the bounding box of their image.
        to_frame2 = _compose(layer.motion, _translation(ox, oy))
        corners = _apply(
            to_frame2, np.array([[-0.5, -0.5], [lw - 0.5, -0.5], [-0.5, lh - 0.5], [lw - 0.5, lh - 0.5]])
        )
        lo, hi = np.floor(corners.min(0)).astype(int), np.ceil(corners.max(0)).astype(int) + 1
        box = _clip_box(int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1]), w, h)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        to_box = _compose(_translation(-x0, -y0), to_frame2)
        texture = cv2.warpAffine(
            layer.texture, to_box, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        coverage = cv2.warpAffine(
            layer.mask.view(np.uint8) * np.uint8(255),
            to_box,
            (x1 - x0, y1 - y0),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        mask = coverage >= 128
        cv2.copyTo(texture, mask.view(np.uint8), image2[y0:y1, x0:x1])
        if with_layers:
            np.copyto(layers2[y0:y1, x0:x1], k, where=mask)
    example = {"frame1": frame1, "frame2": image2} if frame2 else {"frame1": frame1}
    example.update(flow=flow, segmentation=segmentation, num_objects=np.asarray(scene.num_objects, np.int32))
    if with_layers:
        example.update(layers1=layers1, layers2=layers2)
    return example


def generate_example(
    index: int, config: SyntheticConfig = SyntheticConfig(), seed: int = 0, frame2: bool = True
) -> dict[str, np.ndarray]:
    """Generates example ``index`` of the synthetic dataset.

    Deterministic in (index, seed, config) whatever the call order, and
    thread-safe (no shared state; the heavy work is OpenCV and NumPy).

    Args:
      index: example index (>= 0).
      config: generator parameters (image size, object count, motion ranges).
      seed: dataset seed (>= 0).
      frame2: render frame 2 (False skips about half the work; no ``frame2`` key).

    Returns:
      Dict with
      ``frame1``: (H, W, 3) uint8 RGB (HWC) first frame;
      ``frame2``: (H, W, 3) uint8 RGB second frame (if rendered);
      ``flow``: (H, W, 2) float32 flow (dx, dy) in pixels from each frame-1 pixel
      to its position in frame 2 (exact, also where it is occluded in frame 2 or
      leaves the image);
      ``segmentation``: (H, W) int32 frame-1 labels, 0 for the background and i
      for object i (its top-most part where objects overlap);
      ``num_objects``: int32 scalar, the number of objects N (labels 1..N; an
      object may be hidden by others in frame 1).
    """
    return render_scene(sample_scene(index, config, seed), frame2=frame2)


def _moved(scene: Scene, steps: int) -> Scene:
    """The scene whose frame 2 is its frame 1 moved ``steps`` times (``steps`` >= 1).

    The camera and every body repeat their motion: C^steps and A^steps. A limb
    with motion A o R_J (A its body's motion, R_J its hinge) moves by
    A^steps o R_J^steps, so it stays hinged at the moved joint and its
    articulation angle grows by the same amount every frame.
    """
    camera, layers = scene.camera, []
    for _ in range(steps - 1):
        camera = _compose(scene.camera, camera)
    for layer in scene.layers:
        body = _compose(layer.motion, cv2.invertAffineTransform(layer.hinge))
        body_total, hinge_total = body, layer.hinge
        for _ in range(steps - 1):
            body_total, hinge_total = _compose(body, body_total), _compose(layer.hinge, hinge_total)
        layers.append(dataclasses.replace(layer, motion=_compose(body_total, hinge_total)))
    return dataclasses.replace(scene, camera=camera, layers=tuple(layers))


def render_clip(scene: Scene, num_frames: int) -> dict[str, np.ndarray]:
    """Renders ``num_frames`` frames of a scene moving by its frame-pair motions.

    Frame 0 is ``render_scene``'s frame 1; frame t is the scene moved t times
    (``_moved``), rendered as ``render_scene`` renders frame 2.

    Args:
      scene: from ``sample_scene`` (at most 255 objects).
      num_frames: T, the number of frames (>= 1).

    Returns:
      Dict with ``generate_clip``'s keys.
    """
    if num_frames < 1:
        raise ValueError(f"render_clip: num_frames must be >= 1, got {num_frames}")
    if scene.num_objects > 255:
        raise ValueError(f"render_clip: masks are uint8, so at most 255 objects, got {scene.num_objects}")
    first = render_scene(scene, frame2=False)
    frames = np.empty((num_frames, scene.height, scene.width, 3), np.uint8)
    masks = np.empty((num_frames, scene.height, scene.width), np.uint8)
    frames[0], masks[0] = first["frame1"], first["segmentation"]
    # Object label of each entry of a ``layers2`` map (0: the background).
    labels = np.array([0] + [layer.label for layer in scene.layers], np.uint8)
    for t in range(1, num_frames):
        rendered = render_scene(_moved(scene, t), with_layers=True)
        frames[t], masks[t] = rendered["frame2"], labels[rendered["layers2"]]
    return {"frames": frames, "masks": masks, "num_objects": np.asarray(scene.num_objects, np.int32)}


def generate_clip(
    index: int, config: SyntheticConfig, num_frames: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """Generates clip ``index``: the scene of example ``index`` moving for ``num_frames`` frames.

    Frame 0 is ``generate_example``'s frame 1 and frame 1 its frame 2; frame t
    is the scene moved t times by the same motions (``render_clip``). The
    motion ranges of ``config`` are therefore per frame: a clip of T frames
    moves objects by up to T * ``max_object_shift`` pixels and scales them by
    up to (1 + ``max_scale_change``)^T, so clips want smaller ranges than frame
    pairs. Objects occlude each other in their fixed depth order, may leave
    the image and may appear from behind others; the background is mirrored at
    its canvas edges once the camera has moved farther than its margin.

    Args:
      index: clip index (>= 0); the scene is ``sample_scene(index, config, seed)``.
      config: generator parameters (image size, object count, per-frame motion
        ranges); at most 255 objects.
      num_frames: T, the number of frames (>= 1).
      seed: dataset seed (>= 0).

    Returns:
      Dict with
      ``frames``: (T, H, W, 3) uint8 RGB frames;
      ``masks``: (T, H, W) uint8 label maps of the visible part of every
      object, 0 for the background and i for object i (labels 1..K in the
      scene's fixed order; an object may be hidden in some frames, frame 0
      included);
      ``num_objects``: int32 scalar, K.
      Deterministic in (index, seed, config, num_frames).
    """
    return render_clip(sample_scene(index, config, seed), num_frames)
