"""Message conversions: image encodings, sizes and compressed frames."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image as PILImage
from ript_ros.convert import InputError, compressed_to_rgb, image_to_rgb, rgb_to_image
from sensor_msgs.msg import CompressedImage, Image

RNG = np.random.default_rng(0)
PICTURE = RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)


def raw(encoding: str, pixels: np.ndarray, pad: int = 0) -> Image:
    rows = np.concatenate([pixels.reshape(pixels.shape[0], -1), np.zeros((pixels.shape[0], pad), np.uint8)], axis=1)
    h, w = pixels.shape[:2]
    return Image(height=h, width=w, encoding=encoding, step=rows.shape[1], data=rows.tobytes())


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_raw_encodings_become_rgb_even_with_padded_rows(encoding):
    pixels = PICTURE[..., ::-1] if encoding.startswith("bgr") else PICTURE
    if encoding.endswith("a8"):
        pixels = np.concatenate([pixels, np.full((6, 5, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(image_to_rgb("top", raw(encoding, pixels, pad=7), (6, 5)), PICTURE)


def test_round_trip_through_a_published_image():
    msg = rgb_to_image(PICTURE, stamp=Image().header.stamp, frame_id="top")
    np.testing.assert_array_equal(image_to_rgb("top", msg, (6, 5)), PICTURE)


def test_wrong_encoding_size_or_truncated_data_name_the_fix():
    with pytest.raises(InputError, match=r"camera 'wrist' sends encoding '16UC1'.*rgb8"):
        image_to_rgb("wrist", Image(height=6, width=5, encoding="16UC1", step=10, data=bytes(60)), (6, 5))
    with pytest.raises(InputError, match=r"sends 5x6 images but the policy takes 8x8.*resize_images"):
        image_to_rgb("top", raw("rgb8", PICTURE), (8, 8))
    with pytest.raises(InputError, match="needs step"):
        image_to_rgb("top", Image(height=6, width=5, encoding="rgb8", step=15, data=bytes(20)), (6, 5))


def test_resize_averages_each_pixels_footprint_when_asked():
    image = image_to_rgb("top", raw("rgb8", np.repeat(np.repeat(PICTURE, 2, 0), 2, 1)), (6, 5), resize=True)
    np.testing.assert_array_equal(image, PICTURE)
    stripes = np.zeros((12, 10, 3), np.uint8)
    stripes[::2] = 255  # one-pixel stripes: nearest-pixel sampling would keep only one colour
    np.testing.assert_array_equal(image_to_rgb("top", raw("rgb8", stripes), (6, 5), resize=True), 128)


def test_compressed_png_decodes_and_garbage_is_refused():
    buffer = io.BytesIO()
    PILImage.fromarray(PICTURE).save(buffer, format="PNG")
    msg = CompressedImage(format="png", data=buffer.getvalue())
    np.testing.assert_array_equal(compressed_to_rgb("top", msg, (6, 5)), PICTURE)
    with pytest.raises(InputError, match="cannot decode"):
        compressed_to_rgb("top", CompressedImage(format="jpeg", data=b"not an image"), (6, 5))
