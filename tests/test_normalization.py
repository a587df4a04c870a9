"""cmp_jax.normalization: ImageNet and MOFA-Video normalisation of the network input, and the inverse."""

import numpy as np
import pytest

from cmp_jax import normalization


def _image():
    return np.random.default_rng(5).integers(0, 256, (9, 11, 3), dtype=np.uint8)


def test_imagenet_is_mean_std_on_0_255_in_any_container():
    image = _image()
    out = normalization.normalize(image)
    assert out.dtype == np.float32 and out.shape == image.shape
    want = (image.astype(np.float64) - [123.675, 116.28, 103.53]) / [58.395, 57.12, 57.375]
    np.testing.assert_allclose(out, want, atol=1e-5)
    # A uint8 value gives the same float32 as the same value held in a float array.
    np.testing.assert_array_equal(normalization.normalize(image.astype(np.float32)), out)


def test_mofa_is_image_over_255_times_2_minus_1_as_torch_computes_it():
    torch = pytest.importorskip("torch")
    levels = np.arange(256, dtype=np.uint8)
    out = normalization.normalize(np.repeat(levels[:, None], 3, axis=1), "mofa")
    assert out.dtype == np.float32
    # MOFA-Video: frames in [0, 1] from torchvision's to_tensor (uint8 / 255 in float32), then x * 2 - 1.
    frames = torch.from_numpy(np.repeat(levels[:, None], 3, axis=1)).float().div(255)
    np.testing.assert_array_equal(out, (frames * 2 - 1).numpy())
    assert (out[0, 0], out[255, 0]) == (-1.0, 1.0)
    np.testing.assert_array_equal(out[:, 0], out[:, 2])  # the same for every channel


@pytest.mark.parametrize("input_norm", normalization.INPUT_NORMS)
def test_denormalize_inverts_normalize(input_norm):
    image = _image()
    back = normalization.denormalize(normalization.normalize(image, input_norm), input_norm)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, image)


def test_unknown_input_norm_is_named():
    with pytest.raises(ValueError, match=r"input_norm must be one of \('imagenet', 'mofa'\), got 'torch'"):
        normalization.normalize(_image(), "torch")
    with pytest.raises(ValueError, match="got 'torch'"):
        normalization.denormalize(np.zeros((2, 2, 3), np.float32), "torch")
