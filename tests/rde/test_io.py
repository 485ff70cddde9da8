"""Image loading (every PIL mode to 8-bit RGB, bad files named) and deterministic preprocessing."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from rde.io import ImageLoadError, load_image, load_images, preprocess


def pixels(img: Image.Image) -> np.ndarray:
    assert img.mode == "RGB"
    arr = np.asarray(img)
    assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3
    return arr


def test_greyscale_is_replicated(tmp_path):
    path = tmp_path / "grey.png"
    Image.fromarray(np.array([[0, 100], [200, 255]], dtype=np.uint8), mode="L").save(path)
    arr = pixels(load_image(path))
    assert arr.shape == (2, 2, 3)
    np.testing.assert_array_equal(arr, np.repeat(np.array([[0, 100], [200, 255]])[..., None], 3, axis=2))


def test_rgba_is_composited_on_white(tmp_path):
    path = tmp_path / "rgba.png"
    rgba = np.array([[[255, 0, 0, 255], [255, 0, 0, 0], [0, 0, 255, 128]]], dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(path)
    arr = pixels(load_image(path)).astype(int)
    np.testing.assert_array_equal(arr[0, 0], [255, 0, 0])  # opaque
    np.testing.assert_array_equal(arr[0, 1], [255, 255, 255])  # transparent -> white
    np.testing.assert_allclose(arr[0, 2], [127, 127, 255], atol=1)  # half blue over white


def test_cmyk_is_converted(tmp_path):
    path = tmp_path / "cmyk.tiff"
    img = Image.new("CMYK", (3, 1))
    for x, value in enumerate([(0, 0, 0, 0), (255, 0, 0, 0), (0, 0, 0, 255)]):
        img.putpixel((x, 0), value)
    img.save(path)
    arr = pixels(load_image(path))
    np.testing.assert_array_equal(arr[0], [[255, 255, 255], [0, 255, 255], [0, 0, 0]])  # white, cyan, black


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path)  # magenta + yellow = red
    arr = pixels(load_image(path)).astype(int)
    assert arr.shape == (16, 16, 3)
    np.testing.assert_allclose(arr.reshape(-1, 3).mean(0), [255, 0, 0], atol=6)


def test_16_bit_png_is_rescaled_by_its_range(tmp_path):
    path = tmp_path / "deep.png"
    values = np.array([[0, 257 * 100, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    arr = pixels(load_image(path)).astype(int)
    np.testing.assert_allclose(arr[0, :, 0], values[0] / 257, atol=1)
    assert np.all(arr[..., 0] == arr[..., 1]) and np.all(arr[..., 1] == arr[..., 2])


def test_palette_images(tmp_path):
    path = tmp_path / "palette.png"
    img = Image.new("P", (2, 1))
    img.putpalette([10, 20, 30, 200, 100, 0] + [0] * 762)
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 1)
    img.save(path)
    np.testing.assert_array_equal(pixels(load_image(path))[0], [[10, 20, 30], [200, 100, 0]])
    transparent = tmp_path / "palette-transparent.png"
    img.save(transparent, transparency=0)  # palette entry 0 is transparent -> white
    np.testing.assert_array_equal(pixels(load_image(transparent))[0], [[255, 255, 255], [200, 100, 0]])


def test_jpeg_rgb_round_trip(tmp_path):
    path = tmp_path / "photo.JPEG"
    Image.new("RGB", (20, 10), (30, 140, 220)).save(path, quality=95)
    arr = pixels(load_image(path)).astype(int)
    assert arr.shape == (10, 20, 3)
    np.testing.assert_allclose(arr.reshape(-1, 3).mean(0), [30, 140, 220], atol=3)


def _truncated_jpeg(path):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _text(path):
    path.write_text("this is not an image\n")


def _empty(path):
    path.write_bytes(b"")


@pytest.mark.parametrize(
    "make, message",
    [(_truncated_jpeg, "truncated"), (_text, "not an image file"), (_empty, "not an image file")],
    ids=["truncated-jpeg", "text-as-jpg", "empty"],
)
def test_bad_files_raise_image_load_error_naming_the_file(tmp_path, make, message):
    path = tmp_path / "bad file.jpg"
    make(path)
    with pytest.raises(ImageLoadError, match=message) as info:
        load_image(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageLoadError, match="no such file") as info:
        load_image(tmp_path / "missing.jpg")
    assert str(tmp_path / "missing.jpg") in str(info.value)
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    with pytest.raises(ImageLoadError, match="is a directory") as info:
        load_image(folder)
    assert str(folder) in str(info.value)


def test_preprocess_shape_range_and_determinism():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (90, 130, 3), dtype=np.uint8))
    out = preprocess(img, 48)
    assert out.shape == (3, 48, 48) and out.dtype == torch.float32
    assert 0 <= out.min() and out.max() <= 1 and out.max() > 0.5
    assert torch.equal(out, preprocess(img, 48))
    flat = preprocess(Image.new("RGB", (70, 50), (51, 102, 255)), 32)
    torch.testing.assert_close(flat, torch.tensor([0.2, 0.4, 1.0]).view(3, 1, 1).expand(3, 32, 32), atol=1 / 255, rtol=0)


def test_preprocess_resizes_the_shorter_side_and_crops_the_center():
    arr = np.zeros((100, 300, 3), dtype=np.uint8)
    arr[:, :100, 0] = 255  # red | green | blue thirds
    arr[:, 100:200, 1] = 255
    arr[:, 200:, 2] = 255
    out = preprocess(Image.fromarray(arr), 32)  # 100x300 -> 32x96 -> center 32 columns = the green third
    assert out.shape == (3, 32, 32)
    torch.testing.assert_close(out[:, :, 2:30], torch.tensor([0.0, 1.0, 0.0]).view(3, 1, 1).expand(3, 32, 28))
    tall = preprocess(Image.fromarray(arr.transpose(1, 0, 2).copy()), 32)  # same along the other axis
    torch.testing.assert_close(tall, out.transpose(1, 2))


def test_load_images_stacks_and_names_the_bad_file(tmp_path):
    paths = []
    for i, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (40, 30), colour).save(paths[-1])
    batch = load_images(paths, 24)
    assert batch.shape == (2, 3, 24, 24)
    assert batch[0, 0].min() == 1 and batch[1, 2].min() == 1 and batch[0, 2].max() == 0
    (tmp_path / "broken.png").write_text("nope")
    with pytest.raises(ImageLoadError, match="broken.png"):
        load_images(paths + [tmp_path / "broken.png"], 24)


def bomb_png(width: int = 19000, height: int = 19000) -> bytes:
    """A 60-byte PNG whose header declares ``width x height`` 1-bit pixels: a decompression bomb's shape."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [10000, 19000])  # above PIL's bound (it only warns) and above twice it (it raises)
def test_a_decompression_bomb_is_one_line_naming_file_and_bound(tmp_path, side):
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(side, side))
    with pytest.raises(ImageLoadError) as err:
        load_image(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: {side * side:,} pixels exceed the bound of")
    assert f"{Image.MAX_IMAGE_PIXELS:,} pixels" in message and "CARTOONX_MAX_PIXELS" in message


def test_the_pixel_bound_is_set_by_the_environment(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after the test
    path = tmp_path / "small.png"
    Image.new("RGB", (40, 30)).save(path)
    monkeypatch.setenv("CARTOONX_MAX_PIXELS", "1199")
    with pytest.raises(ImageLoadError, match=r"1,200 pixels exceed the bound of 1,199 pixels"):
        load_image(path)
    monkeypatch.setenv("CARTOONX_MAX_PIXELS", "1200")
    assert load_image(path).size == (40, 30)
    monkeypatch.setenv("CARTOONX_MAX_PIXELS", "1")
    with pytest.raises(ImageLoadError):
        load_image(path)
    monkeypatch.setenv("CARTOONX_MAX_PIXELS", "0")  # no bound
    assert load_image(path).size == (40, 30) and Image.MAX_IMAGE_PIXELS is None
    monkeypatch.setenv("CARTOONX_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="CARTOONX_MAX_PIXELS='lots'"):
        load_image(path)


def _sideways_photo(path):
    """A left-right asymmetric photo stored rotated, as a phone does, with EXIF Orientation=6; returns the upright pixels."""
    upright = np.zeros((40, 24, 3), dtype=np.uint8)  # portrait: 24 wide, 40 high
    upright[:10, :, 0] = 255  # red band at the top
    upright[:, :6, 2] = 255  # blue band on the left
    stored = Image.fromarray(upright).rotate(90, expand=True)  # the sensor's landscape frame
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to view
    stored.save(path, quality=100, exif=exif)
    return upright


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "phone.jpg"
    upright = _sideways_photo(path)
    loaded = pixels(load_image(path)).astype(int)
    assert loaded.shape == upright.shape
    assert np.abs(loaded - upright).mean() < 3  # JPEG error only; sideways it would differ by ~100
    batch = load_images([path], size=24)  # what explain, compare and generate see
    assert (batch[0] - preprocess(Image.fromarray(upright), 24)).abs().mean() < 0.02


@pytest.mark.parametrize("size, warned", [((1, 1), "upscaled 64x"), ((5, 3000), "upscaled 12.8x to 64 px (the classifier sees interpolation) and center-cropped to a square that keeps 0.17%"),
                                          ((64, 40), None), ((96, 48), None), ((97, 48), "keeps 49%")])
def test_tiny_or_elongated_images_warn_naming_the_file(tmp_path, size, warned):
    from rde.io import ImageGeometryWarning

    path = tmp_path / "odd.png"
    Image.new("RGB", size, (10, 20, 30)).save(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images = load_images([path], size=64)
    assert images.shape == (1, 3, 64, 64)
    messages = [str(w.message) for w in caught if issubclass(w.category, ImageGeometryWarning)]
    if warned is None:
        assert messages == []
    else:
        assert len(messages) == 1 and messages[0].startswith(str(path)) and warned in messages[0]
