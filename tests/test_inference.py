"""The Predictor: encode once / propagate many, arrows, padding, long arrows, loading a workdir."""

import jax
import numpy as np
import pytest

from cmp_jax import state
from cmp_jax.flow import FlowBins, logits_to_flow
from cmp_jax.inference import Predictor, arrows_to_guidance, guidance_to_arrows, normalize_images
from cmp_jax.models import CMP
from tests.helpers import constant_flow_variables, random_inputs, random_variables
from tests.train_subprocess import tiny_config

BINS = FlowBins(num_bins=9, fmax=10.0)


def tiny_model(**kw) -> CMP:
    kw = {"backbone": "resnet18", "output_stride": 32, "img_enc_dim": 16, "decoder_combo": (1,), **kw}
    return CMP(num_bins=BINS.num_bins, **kw)


@pytest.fixture(scope="module")
def predictor():
    model = tiny_model()
    return Predictor(model, random_variables(model, *random_inputs(1, 32, 32), seed=5), BINS)


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 256, (64, 96, 3)).astype(np.uint8)


def test_propagate_equals_the_full_forward(predictor, image):
    arrows = [(10, 20, 3.0, -2.0), (70, 40, 0.0, 0.0)]
    flow = predictor.predict(image, [arrows])

    sparse, mask = arrows_to_guidance(arrows, 64, 96)
    normalized = normalize_images(image)
    logits = predictor.model.apply(predictor.variables, normalized, sparse[None], mask[None])
    expected = np.asarray(logits_to_flow(logits, BINS, (64, 96)))
    assert flow.shape == (1, 64, 96, 2)
    np.testing.assert_allclose(flow, expected, atol=1e-5)
    assert np.abs(expected).max() > 0.1  # a non-trivial flow


def test_many_sets_over_one_encoding_equal_separate_predictions(predictor, image):
    sets = [[(10, 20, 3.0, -2.0)], [(50, 10, -4.0, 1.0), (5, 5, 0.0, 0.0)], []]
    features = predictor.encode(image)
    together = predictor.propagate(features, sets)
    separate = np.concatenate([predictor.predict(image, [s]) for s in sets])
    np.testing.assert_allclose(together, separate, atol=1e-5)
    assert np.abs(together[0] - together[1]).max() > 1e-3  # the guidance matters

    # The same guidance as sparse/mask arrays.
    pairs = [arrows_to_guidance(s, 64, 96) for s in sets]
    arrays = predictor.propagate(
        features, sparse=np.stack([p[0] for p in pairs]), mask=np.stack([p[1] for p in pairs])
    )
    np.testing.assert_array_equal(arrays, together)


def test_batched_images_take_one_set_each(predictor, image):
    images = np.stack([image, image[::-1]])
    sets = [[(10, 20, 3.0, -2.0)], [(30, 30, -1.0, 2.0)]]
    flow = predictor.propagate(predictor.encode(images), sets)
    np.testing.assert_allclose(flow[1], predictor.predict(images[1], [sets[1]])[0], atol=1e-5)
    with pytest.raises(ValueError, match="3 guidance sets for 2 images"):
        predictor.propagate(predictor.encode(images), sets + sets[:1])


def test_any_size_is_padded_to_the_stride_and_cropped_back(predictor, image):
    odd = image[:50, :70]
    arrows = [(12, 30, 5.0, 1.0)]
    flow = predictor.predict(odd, [arrows])
    assert flow.shape == (1, 50, 70, 2)
    # The same as a black-padded 64 x 96 image with the same arrows, cropped.
    padded = np.zeros_like(image)
    padded[:50, :70] = odd
    np.testing.assert_allclose(flow, predictor.predict(padded, [arrows])[:, :50, :70], atol=1e-5)


def test_mofa_input_norm_feeds_image_over_255_times_2_minus_1(predictor, image):
    mofa = Predictor(predictor.model, predictor.variables, BINS, input_norm="mofa")
    fed = image[None].astype(np.float32) / np.float32(255) * np.float32(2) - np.float32(1)
    np.testing.assert_array_equal(mofa.encode(image).image, fed)
    np.testing.assert_array_equal(normalize_images(image, "mofa"), fed)

    arrows = [(10, 20, 3.0, -2.0), (70, 40, 0.0, 0.0)]
    flow = mofa.predict(image, [arrows])
    sparse, mask = arrows_to_guidance(arrows, 64, 96)
    logits = predictor.model.apply(predictor.variables, fed, sparse[None], mask[None])
    np.testing.assert_allclose(flow, np.asarray(logits_to_flow(logits, BINS, (64, 96))), atol=1e-5)
    # The network sees other numbers than with the default (ImageNet) normalisation: other flow.
    assert np.abs(flow - predictor.predict(image, [arrows])).max() > 1e-2

    # Padding is black in either normalisation.
    odd = image[:50, :70]
    padded = np.zeros_like(image)
    padded[:50, :70] = odd
    np.testing.assert_allclose(
        mofa.predict(odd, [arrows[:1]]), mofa.predict(padded, [arrows[:1]])[:, :50, :70], atol=1e-5
    )
    with pytest.raises(ValueError, match=r"input_norm must be one of \('imagenet', 'mofa'\), got 'MOFA'"):
        Predictor(predictor.model, predictor.variables, BINS, input_norm="MOFA")


def test_bad_arrows_are_named(predictor, image):
    features = predictor.encode(image)
    with pytest.raises(ValueError, match=r"guidance set 1: arrow 1 starts at \(x=96, y=3\), outside"):
        predictor.propagate(features, [[(1, 1, 0, 0)], [(1, 1, 0, 0), (96, 3, 1, 1)]])
    with pytest.raises(ValueError, match="arrow 0 .* is not finite"):
        predictor.propagate(features, [[(1, 1, np.nan, 0)]])
    with pytest.raises(ValueError, match=r"\(x, y, dx, dy\)"):
        predictor.propagate(features, [[(1, 1, 0)]])
    with pytest.raises(ValueError, match="either arrows or sparse and mask"):
        predictor.propagate(features)


def test_arrow_rasterisation_round_trips():
    arrows = np.array([[3, 4, 1.5, -2.0], [0, 0, 0.0, 0.0], [9, 7, -3.0, 4.0]])
    sparse, mask = arrows_to_guidance(arrows, 8, 10)
    assert mask.sum() == 2 * 3 and sparse[4, 3].tolist() == [1.5, -2.0]
    back = guidance_to_arrows(sparse, mask)
    np.testing.assert_array_equal(back[np.lexsort((back[:, 0], back[:, 1]))], arrows[[1, 0, 2]])


def test_long_arrows_run_at_a_reduced_scale_and_scale_the_flow_back(image):
    model = tiny_model()
    kx, ky = 6, 4  # bin centres: x +4.44 px, y 0 px
    centres = BINS.centres()
    predictor = Predictor(model, constant_flow_variables(model, 32, kx, ky), BINS, max_arrow=8.0)
    features = predictor.encode(image)
    flow = predictor.propagate(features, [[(40, 30, 4.0, 0.0)], [(40, 30, 24.0, 0.0)]])
    # A short arrow runs at full scale: the model's constant flow.
    np.testing.assert_allclose(flow[0, ..., 0], centres[kx], atol=1e-4)
    np.testing.assert_allclose(flow[0, ..., 1], centres[ky], atol=1e-4)
    # 24 px > max_arrow 8: scale floor(8 / 24 * 64) / 64 = 21 / 64; the flow is divided by it.
    scale = 21 / 64
    assert sorted(features.encoded) == [scale, 1.0]
    assert features.encoded[scale]["features"].shape[1:3] == (1, 1)  # 21 x 32 image, padded to 32
    np.testing.assert_allclose(flow[1, ..., 0], centres[kx] / scale, rtol=1e-4)
    assert flow[1, ..., 0].min() > BINS.fmax  # beyond what the model alone can say


def test_skip_decoder_predictor_on_an_odd_size():
    model = CMP(backbone="resnet18", decoder="skip", num_bins=BINS.num_bins)
    predictor = Predictor(model, random_variables(model, *random_inputs(1, 64, 64)), BINS)
    img = np.random.default_rng(1).integers(0, 256, (60, 70, 3)).astype(np.uint8)
    flow = predictor.predict(img, [[(30, 30, 2.0, 2.0)]])
    assert flow.shape == (1, 60, 70, 2) and np.isfinite(flow).all()
    # Padded to 64 x 72 at least 64 on each side (the decoder's 8x branch at stride 8).
    assert predictor.encode(img).encoded[1.0]["features"].shape[1:3] == (8, 9)


def test_from_workdir_loads_the_saved_variables(tmp_path, image):
    config = tiny_config()
    model, bins = state.build_from_config(config)
    variables = random_variables(model.clone(bn_axis_name=None), *random_inputs(1, 32, 32), seed=2)
    state.save_variables(tmp_path, config, variables, step=12)
    loaded = Predictor.from_workdir(tmp_path)
    direct = Predictor(model, variables, bins)
    arrows = [[(20, 20, 3.0, 1.0)]]
    np.testing.assert_array_equal(loaded.predict(image, arrows), direct.predict(image, arrows))
    assert jax.tree.structure(loaded.variables) == jax.tree.structure(direct.variables)
    with pytest.raises(FileNotFoundError, match="no checkpoint of step 3"):
        Predictor.from_workdir(tmp_path, step=3)
    with pytest.raises(FileNotFoundError, match="config.json"):
        Predictor.from_workdir(tmp_path / "nothing")


def test_from_torch_reads_an_original_layout_checkpoint(tmp_path, image):
    import torch  # noqa: F401  (before TensorFlow, which the rest of the suite may import)

    from cmp_jax.convert import torch_io

    config = tiny_config()
    model, _ = state.build_from_config(config)
    variables = random_variables(model.clone(bn_axis_name=None), *random_inputs(1, 32, 32), seed=3)
    state.save_variables(tmp_path / "run", config, variables, step=7)
    (path,) = torch_io.export_workdir(tmp_path / "run", tmp_path / "ckpt_iter_7.pth.tar", "original")
    arrows = [[(20, 20, -3.0, 1.0)]]
    np.testing.assert_array_equal(
        Predictor.from_torch(path, config).predict(image, arrows),
        Predictor.from_workdir(tmp_path / "run").predict(image, arrows),
    )
