"""Tests of input_pipeline.davis without a download: the TFDS builder's names and a fake prepared copy."""

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds
from etils import epath

from input_pipeline import davis


def test_tfds_builder_has_the_configs_and_features_we_read(tmp_path):
    """A TFDS upgrade that renames the builder, its configs or its feature keys fails here."""
    configs = [config.name for config in tfds.builder_cls(davis.DATASET).BUILDER_CONFIGS]
    assert set(davis.RESOLUTIONS) <= set(configs)
    features = tfds.builder(f"{davis.DATASET}/480p", data_dir=tmp_path).info.features
    assert features["video"]["frames"].shape == (None, None, 3)
    assert features["video"]["segmentations"].shape == (None, None, 1)
    assert features["video"]["segmentations"].dtype == np.uint8
    assert set(features["metadata"].keys()) >= {"video_name", "num_frames"}
    assert {str(tfds.Split.TRAIN), str(tfds.Split.VALIDATION)} == set(davis.SPLITS)


def test_unprepared_dataset_raises_with_the_way_to_prepare_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"davis/480p is not prepared.*tfds build davis/480p"):
        davis.load_sequences(data_dir=str(tmp_path))


@pytest.mark.parametrize(("split", "resolution"), [("val", "480p"), ("validation", "1080p")])
def test_unknown_split_or_resolution_raises(tmp_path, split, resolution):
    with pytest.raises(ValueError, match="DAVIS"):
        davis.load_sequences(split, resolution, data_dir=str(tmp_path))


def _fake_davis(root, sequences: dict[str, list[str]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Writes a tiny DAVIS-2017 480p tree (JPEG frames, palette PNG annotations) as the zip extracts.

    Args:
      root: folder that plays the extracted DAVIS-2017-trainval-480p.zip.
      sequences: split file name ("train", "val") -> sequence names.

    Returns:
      Sequence name -> ((T, H, W, 3) uint8 RGB frames as written, (T, H, W) uint8 annotations).
    """
    (root / "DAVIS/ImageSets/2017").mkdir(parents=True)
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, 768).astype(np.uint8).tolist()
    written = {}
    for split, names in sequences.items():
        (root / f"DAVIS/ImageSets/2017/{split}.txt").write_text("\n".join(names) + "\n")
        for k, name in enumerate(names):
            h, w, t = 24 + 8 * k, 40, 3
            (root / f"DAVIS/JPEGImages/480p/{name}").mkdir(parents=True)
            (root / f"DAVIS/Annotations/480p/{name}").mkdir(parents=True)
            frames = np.zeros((t, h, w, 3), np.uint8)
            masks = np.zeros((t, h, w), np.uint8)
            for i in range(t):
                frames[i] = rng.integers(0, 256, 3)  # flat colours survive JPEG almost exactly
                masks[i, 4 + i : 12 + i, 5:15] = 1
                masks[i, 14:20, 20 + i : 30 + i] = 2 + k
                masks[i, 0, :] = davis.VOID
                cv2.imwrite(str(root / f"DAVIS/JPEGImages/480p/{name}/{i:05d}.jpg"), frames[i][..., ::-1])
                image = tfds.core.lazy_imports.PIL_Image.fromarray(masks[i], mode="P")
                image.putpalette(palette)
                image.save(root / f"DAVIS/Annotations/480p/{name}/{i:05d}.png")
            written[name] = frames, masks
    return written


def test_reads_a_prepared_copy(tmp_path, monkeypatch):
    """Prepares the real builder from a fake extracted archive and reads it back through load_sequences."""
    written = _fake_davis(tmp_path / "extracted", {"train": ["cows"], "val": ["bike", "dogs"]})
    monkeypatch.setattr(
        tfds.download.DownloadManager,
        "download_and_extract",
        lambda self, url: epath.Path(tmp_path / "extracted"),
    )
    data_dir = str(tmp_path / "data")
    tfds.builder("davis/480p", data_dir=data_dir).download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )
    read = {name: (frames, masks, k) for name, frames, masks, k in davis.load_sequences(data_dir=data_dir)}
    assert sorted(read) == ["bike", "dogs"]
    for name, (frames, masks, num_objects) in read.items():
        expected_frames, expected_masks = written[name]
        assert frames.dtype == np.uint8 and masks.dtype == np.uint8
        assert frames.shape == expected_frames.shape and masks.shape == expected_masks.shape
        np.testing.assert_allclose(frames, expected_frames, atol=3)
        np.testing.assert_array_equal(masks, np.where(expected_masks == davis.VOID, 0, expected_masks))
        assert num_objects == expected_masks[0][expected_masks[0] != davis.VOID].max()
    (name, _, _, _), *rest = davis.load_sequences("train", data_dir=data_dir, names=["cows"])
    assert name == "cows" and not rest
    assert not list(davis.load_sequences(data_dir=data_dir, names=["cows"]))
