"""Figure building blocks: upright planes from either axis order, windowing, overlays, grids, PNG files."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from medssl.evaluation.figures import MASKED_COLOUR, PALETTE, display_plane, grid, overlay, save_png, to_rgb
from medssl.evaluation.views import views_figure


def test_file_axes_are_transposed_so_rows_run_along_y() -> None:
    image = np.arange(6, dtype=np.float32).reshape(1, 3, 2)  # (C, x, y)
    plane = display_plane(image, file_axes=True)
    assert plane.shape == (2, 3)
    assert all(plane[r, c] == image[0, c, r] for r in range(2) for c in range(3))


def test_3d_file_volumes_show_the_middle_axial_slice_anterior_up() -> None:
    volume = np.arange(24, dtype=np.float32).reshape(1, 4, 3, 2)  # (C, x, y, z) in RAS
    plane = display_plane(torch.from_numpy(volume), file_axes=True)
    assert plane.shape == (3, 4)
    np.testing.assert_array_equal(plane, volume[0, :, :, 1].T[::-1])  # top row = largest y (anterior)
    np.testing.assert_array_equal(display_plane(volume, file_axes=True, index=0), volume[0, :, :, 0].T[::-1])


def test_array_axes_keep_numpy_order_and_slice_across_depth() -> None:
    image = np.random.default_rng(0).random((1, 5, 3, 2)).astype(np.float32)  # MedMNIST (C, D, H, W)
    np.testing.assert_array_equal(display_plane(image, file_axes=False), image[0, 2])
    rgb = np.random.default_rng(0).random((3, 4, 5)).astype(np.float32)  # (C, x, y) colour file
    assert display_plane(rgb, file_axes=True).shape == (5, 4, 3)


def test_to_rgb_windows_and_paints_nan_pixels() -> None:
    plane = np.array([[0.0, 1.0], [np.nan, 0.5]], dtype=np.float32)
    rgb = to_rgb(plane, 0.0, 1.0)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert tuple(rgb[0, 0]) == (0, 0, 0) and tuple(rgb[0, 1]) == (255, 255, 255)
    assert tuple(rgb[1, 0]) == MASKED_COLOUR and tuple(rgb[1, 1]) == (128, 128, 128)


def test_overlay_colours_only_labelled_pixels() -> None:
    rgb = np.zeros((2, 2, 3), np.uint8)
    labels = np.array([[0, 1], [2, 0]])
    out = overlay(rgb, labels, alpha=1.0)
    assert tuple(out[0, 0]) == (0, 0, 0) and tuple(out[1, 1]) == (0, 0, 0)
    assert tuple(out[0, 1]) == tuple(PALETTE[0]) and tuple(out[1, 0]) == tuple(PALETTE[1])


def test_grid_lays_out_cells_and_save_png_leaves_no_partial_file(tmp_path) -> None:
    tile = np.full((8, 4, 3), 200, np.uint8)
    rgb = grid([[tile, None, tile], [tile]], col_labels=["a", "b", "c"], tile=16)
    assert rgb.shape[1] >= 3 * 16 and rgb.shape[0] >= 2 * 16
    path = save_png(rgb, tmp_path / "sub" / "grid.png")
    with Image.open(path) as png:
        assert png.size == (rgb.shape[1], rgb.shape[0])
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]


def test_views_figure_has_one_row_per_image_and_a_column_per_view() -> None:
    rng = np.random.default_rng(0)
    samples = [{"view_0": rng.random((1, 8, 8)), "view_1": rng.random((1, 4, 4)), "position": 0.5}] * 3
    rgb = views_figure(samples, inputs=[rng.random((1, 16, 16))] * 3, tile=20)
    assert rgb.shape[0] >= 3 * 20 and 3 * 20 <= rgb.shape[1] < 4 * 20  # input + 2 views; position is no image
