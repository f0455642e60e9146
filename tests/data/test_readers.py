import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImage

from medssl.data.readers import LoadItemd, SimpleITKReader, image_readers, pick_reader, read_header

SPACING = (0.5, 0.8, 2.0)


def load(path) -> MetaTensor:
    return LoadItemd("image")({"image": str(path)})["image"]


def check_volume(image: MetaTensor, expected: np.ndarray, spacing=SPACING) -> None:
    assert isinstance(image, MetaTensor) and image.dtype == torch.float32
    assert tuple(image.shape) == (1, *expected.shape)
    np.testing.assert_array_equal(image[0].numpy(), expected)
    np.testing.assert_allclose(image.pixdim.numpy(), spacing[: expected.ndim])


def test_nifti_3d_keeps_affine_and_spacing(make, volume):
    image = load(make.nifti("a.nii.gz", volume))
    check_volume(image, volume)
    np.testing.assert_allclose(image.affine[:3, 3].numpy(), (10.0, -4.0, 3.0))


def test_nifti_2d(make):
    array = np.arange(30, dtype=np.float32).reshape(6, 5)
    check_volume(load(make.nifti("a.nii", array, spacing=(0.5, 0.8))), array)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".mhd"])
def test_simpleitk_files_match_nifti(make, volume, suffix):
    from_sitk, from_nifti = load(make.sitk(f"a{suffix}", volume)), load(make.nifti("a.nii.gz", volume))
    check_volume(from_sitk, volume)
    assert from_sitk.shape == from_nifti.shape
    # same voxel grid; SimpleITK's LPS affine is converted to RAS as MONAI's ITKReader does
    np.testing.assert_allclose(from_sitk.affine.numpy(), np.diag([-1, -1, 1, 1]) @ from_nifti.affine.numpy())


def test_simpleitk_2d_rgb(make):
    import SimpleITK as sitk

    rgb = np.random.default_rng(0).integers(0, 255, (6, 5, 3), dtype=np.uint8)
    image = sitk.GetImageFromArray(np.swapaxes(rgb, 0, 1), isVector=True)  # (y, x, c)
    path = make.root / "rgb.mha"
    sitk.WriteImage(image, str(path))
    loaded = load(path)
    assert tuple(loaded.shape) == (3, 6, 5)
    np.testing.assert_array_equal(loaded.numpy(), np.moveaxis(rgb, -1, 0))
    assert read_header(path).channels == 3


@pytest.mark.parametrize("suffix", [".dcm", ""])
def test_dicom_series_is_one_volume(make, volume, suffix):
    folder = make.dicom("series", volume, suffix=suffix)
    check_volume(load(folder), volume)
    header = read_header(folder)
    assert header.spatial_shape == volume.shape
    np.testing.assert_allclose(header.spacing, SPACING)


def test_single_slice_dicom_is_2d(make):
    array = np.arange(30, dtype=np.int16).reshape(6, 5, 1)
    folder = make.dicom("xray", array)
    assert tuple(load(folder).shape) == (1, 6, 5)
    assert read_header(folder).spatial_shape == (6, 5)
    assert tuple(load(folder / "slice000.dcm").shape) == (1, 6, 5)


def test_dicom_folder_with_two_series_is_an_error(make, volume):
    make.dicom("mixed", volume, series_uid="1.2.3.1")
    make.dicom("mixed", volume[..., :2] + 1, series_uid="1.2.3.2", suffix=".other.dcm")
    with pytest.raises(
        ValueError, match=r"mixed: expected a folder holding one DICOM series, found 2 series"
    ):
        SimpleITKReader().read(make.root / "mixed")


@pytest.mark.parametrize("suffix", [".png", ".tif", ".gif", ".bmp", ".jpg"])
def test_2d_greyscale(make, suffix):
    array = (np.arange(30).reshape(6, 5) * 8).astype(np.uint8)
    image = load(make.pil(f"a{suffix}", array))
    assert tuple(image.shape) == (1, 6, 5)
    if suffix != ".jpg":  # lossy
        np.testing.assert_array_equal(image[0].numpy(), array)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_2d_rgb_is_channel_first(make, suffix):
    rgb = np.random.default_rng(0).integers(0, 255, (6, 5, 3), dtype=np.uint8)
    image = load(make.pil(f"a{suffix}", rgb))
    assert tuple(image.shape) == (3, 6, 5)
    np.testing.assert_array_equal(image.numpy(), np.moveaxis(rgb, -1, 0))


def test_colour_gif_and_rgba_png(make):
    rgb = np.zeros((6, 5, 3), dtype=np.uint8)
    rgb[:3, :, 0] = 255
    rgb[3:, :, 2] = 255
    assert tuple(load(make.pil("mask.gif", rgb)).shape) == (1, 6, 5)  # palette indices: a label map
    rgba = np.full((6, 5, 4), 200, dtype=np.uint8)
    assert tuple(load(make.pil("a.png", rgba)).shape) == (3, 6, 5)


def test_arrays_become_float_metatensors():
    loader = LoadItemd(("image", "mask"), allow_missing_keys=True)
    out = loader({"image": np.ones((1, 4, 5), dtype=np.uint8), "label": 1})
    image = out["image"]
    assert isinstance(image, MetaTensor) and image.dtype == torch.float32
    assert tuple(image.shape) == (1, 4, 5)
    assert torch.equal(image.affine, torch.eye(3, dtype=torch.float64))
    assert loader({"image": torch.zeros(1, 2, 3, 4)})["image"].affine.shape == (4, 4)


def test_headers_match_loaded_images(make, volume):
    rgb = np.zeros((6, 5, 3), dtype=np.uint8)
    paths = [
        make.nifti("a.nii.gz", volume),
        make.nifti("b.nii", volume[..., None]),  # trailing singleton 4th dim
        make.sitk("a.nrrd", volume),
        make.dicom("series", volume),
        make.pil("a.png", rgb),
        make.pil("a.gif", volume[..., 0].astype(np.uint8)),
    ]
    for path in paths:
        header, image = read_header(path), load(path)
        assert header.spatial_shape == tuple(image.shape[1:]), path
        assert header.channels == image.shape[0], path
    assert read_header(paths[0]).dtype == "int16"
    assert read_header(paths[4]).spacing == (1.0, 1.0)


@pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader")
def test_image_readers_work_with_monai_loadimage(make, volume):
    loader = LoadImage(reader=image_readers(), image_only=True, ensure_channel_first=True)
    for path in (make.nifti("a.nii.gz", volume), make.sitk("a.mha", volume), make.dicom("s", volume)):
        assert tuple(loader(str(path)).shape) == (1, *volume.shape)
    assert tuple(loader(str(make.pil("a.tif", np.zeros((6, 5, 3), np.uint8)))).shape) == (3, 6, 5)


def test_bad_files_name_the_file(make):
    with pytest.raises(ValueError, match=r"notes\.txt: unsupported image format"):
        pick_reader(make.text("notes.txt", "hi"), image_readers())
    bad = make.text("broken.mha", "not an image")
    with pytest.raises(RuntimeError, match=r"broken\.mha: could not load image"):
        load(bad)
    with pytest.raises(ValueError, match="not a readable image"):
        read_header(bad)


@pytest.mark.realdata
def test_drive_loads_channel_first(real_data):
    folder = real_data / "DRIVE" / "training"
    image = load(folder / "images" / "21_training.tif")
    vessels = load(folder / "1st_manual" / "21_manual1.gif")
    assert tuple(image.shape) == (3, 565, 584)  # (C, width, height): MONAI's PIL convention
    assert tuple(vessels.shape) == (1, 565, 584)
    assert set(vessels.unique().tolist()) == {0.0, 255.0}
