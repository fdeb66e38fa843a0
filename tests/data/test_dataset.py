"""Tests of unetkit.data.dataset on tiny data sets made in tmp_path."""

from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from PIL import Image

from unetkit.data.dataset import (
    IGNORE,
    Pair,
    decode_mask,
    load_spec,
    read_instances,
    read_pair,
    split_pairs,
)
from unetkit.errors import UnetkitError

I = IGNORE  # noqa: E741  short name for expected arrays
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def _png(path: Path, array, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode=mode).save(path)
    return path


def _palette_png(path: Path, indices, colors) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.asarray(indices, dtype=np.uint8), mode="P")
    image.putpalette([v for color in colors for v in color])
    image.save(path)
    return path


def _yaml(root: Path, **config) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root / "dataset.yaml"


def _dataset(root: Path, masks: dict[str, np.ndarray], ext: str = ".png") -> Path:
    """One 3-row 3-column gray image per mask, images/<key>.png and masks/<key><ext>."""
    for key, mask in masks.items():
        _png(root / "images" / f"{key}.png", np.zeros((3, 3)))
        if ext == ".tif":
            (root / "masks" / key).parent.mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(root / "masks" / f"{key}.tif", mask)
        else:
            _png(root / "masks" / f"{key}{ext}", mask)
    return root


def _rgb(rows: list[list[tuple[int, int, int]]]) -> np.ndarray:
    return np.array(rows, dtype=np.uint8)  # (H, W, 3)


# pairing


def test_pairs_nested_folders_and_differing_extensions(tmp_path):
    _png(tmp_path / "images" / "Tile 1" / "part_1.png", np.zeros((2, 2)))
    _png(tmp_path / "images" / "Tile 2" / "part_1.bmp", np.zeros((2, 2)))
    _png(tmp_path / "masks" / "Tile 1" / "part_1.png", np.zeros((2, 2)))
    (tmp_path / "masks" / "Tile 2").mkdir()
    tifffile.imwrite(tmp_path / "masks" / "Tile 2" / "part_1.tif", np.zeros((2, 2), np.uint8))
    spec = load_spec(tmp_path)
    assert [p.key for p in spec.pairs] == ["Tile 1/part_1", "Tile 2/part_1"]
    assert spec.pairs[1].image.name == "part_1.bmp" and spec.pairs[1].mask.name == "part_1.tif"


def test_keys_sort_naturally_and_hidden_and_other_files_are_skipped(tmp_path):
    _dataset(tmp_path, {str(i): np.zeros((3, 3)) for i in (10, 2, 1)})
    (tmp_path / "images" / "notes.txt").write_text("x")
    _png(tmp_path / "images" / ".hidden.png", np.zeros((3, 3)))
    _png(tmp_path / "masks" / ".cache" / "9.png", np.zeros((3, 3)))
    assert [p.key for p in load_spec(tmp_path).pairs] == ["1", "2", "10"]


def test_image_without_mask_names_first_and_count(tmp_path):
    _dataset(tmp_path, {"a": np.zeros((3, 3))})
    _png(tmp_path / "images" / "b.png", np.zeros((3, 3)))
    _png(tmp_path / "images" / "c.jpg", np.zeros((3, 3)))
    with pytest.raises(UnetkitError, match=r"^2 images have no mask, e\.g\. images/b\.png; expected masks/b\.png"):
        load_spec(tmp_path)
    spec = load_spec(tmp_path, require_masks=False)
    assert [(p.key, p.mask) for p in spec.pairs][1:] == [("b", None), ("c", None)]


def test_mask_without_image_is_an_error(tmp_path):
    _dataset(tmp_path, {"a": np.zeros((3, 3))})
    _png(tmp_path / "masks" / "z.png", np.zeros((3, 3)))
    with pytest.raises(UnetkitError, match=r"^1 masks have no image, e\.g\. masks/z\.png; expected images/z"):
        load_spec(tmp_path)


def test_duplicate_names_are_an_error(tmp_path):
    _dataset(tmp_path, {"a": np.zeros((3, 3))})
    tifffile.imwrite(tmp_path / "images" / "a.tif", np.zeros((3, 3), np.uint8))
    with pytest.raises(UnetkitError, match=r"images/a\.png and images/a\.tif have the same name"):
        load_spec(tmp_path)


def test_empty_or_missing_folders_are_errors(tmp_path):
    with pytest.raises(UnetkitError, match=r"nothing: not found"):
        load_spec(tmp_path / "nothing")
    with pytest.raises(UnetkitError, match=r"images: images folder not found"):
        load_spec(tmp_path)
    (tmp_path / "images").mkdir()
    with pytest.raises(UnetkitError, match=r"images: no image files"):
        load_spec(tmp_path)


def test_names_equal_up_to_role_words_pair(tmp_path):
    _png(tmp_path / "images" / "img2d.png", np.zeros((3, 3)))
    _png(tmp_path / "masks" / "mask2d.png", np.zeros((3, 3)))
    spec = load_spec(tmp_path)
    assert [(p.key, p.mask.name) for p in spec.pairs] == [("img2d", "mask2d.png")]


# yaml


def test_yaml_unknown_key_suggests_close_match(tmp_path):
    _dataset(tmp_path, {"a": np.zeros((3, 3))})
    _yaml(tmp_path, clases=["bg", "fg"])
    with pytest.raises(UnetkitError, match=r"dataset\.yaml: unknown key 'clases'; did you mean 'classes'\?"):
        load_spec(tmp_path)


def test_yaml_path_and_absolute_folders(tmp_path):
    data = _dataset(tmp_path / "data", {"a": np.array([[0, 255, 0]] * 3)})
    config = _yaml(tmp_path / "elsewhere", images=str(data / "images"), masks=str(data / "masks"))
    spec = load_spec(config)
    assert spec.root == config.parent and spec.mask_mode == "binary"
    assert [p.key for p in spec.pairs] == ["a"]


def test_bad_mask_mode_is_an_error(tmp_path):
    _dataset(tmp_path, {"a": np.zeros((3, 3))})
    with pytest.raises(UnetkitError, match=r"mask_mode 'colour' is not one of auto, index"):
        load_spec(tmp_path, mask_mode="colour")


def test_splits_select_pairs_by_key_patterns(tmp_path):
    _dataset(tmp_path, {str(i): np.zeros((3, 3)) for i in range(12)})
    _yaml(tmp_path, splits={"train": ["[0-9]"], "val": ["1[0-9]"], "none": ["x*"]})
    assert [p.key for p in load_spec(tmp_path, split="val").pairs] == ["10", "11"]
    assert len(load_spec(tmp_path, split="train").pairs) == 10
    with pytest.raises(UnetkitError, match=r"split 'test' is not defined \(defined: train, val, none\)"):
        load_spec(tmp_path, split="test")
    with pytest.raises(UnetkitError, match=r"split 'none' patterns \['x\*'\] match no pair key"):
        load_spec(tmp_path, split="none")


# binary


@pytest.mark.parametrize("high", [1, 255])
def test_binary_masks_decode_to_0_1(tmp_path, high):
    raw = np.array([[0, high, 0], [high, high, 0], [0, 0, 0]])
    spec = load_spec(_dataset(tmp_path, {"a": raw}))
    assert (spec.mask_mode, spec.classes, spec.colors) == (
        "binary",
        ["background", "foreground"],
        [(0, 0, 0), (255, 255, 255)],
    )
    np.testing.assert_array_equal(decode_mask(spec.pairs[0], spec), raw // high)


def test_binary_mask_with_other_values_names_file_and_fix(tmp_path):
    _dataset(tmp_path, {"a": np.zeros((3, 3)), "b": [[0, 128, 255]] * 3})
    spec = load_spec(tmp_path, mask_mode="binary")
    with pytest.raises(UnetkitError, match=r"^masks/b\.png has values \{0, 128, 255\}; expected .*set mask_mode"):
        decode_mask(spec.pairs[1], spec)


def test_binary_ignores_ignore_value(tmp_path):
    raw = [[0, 1, 7], [7, 1, 0], [0, 0, 0]]
    spec = load_spec(_dataset(tmp_path, {"a": raw}), ignore_value=7)
    assert spec.mask_mode == "binary"
    np.testing.assert_array_equal(decode_mask(spec.pairs[0], spec), [[0, 1, I], [I, 1, 0], [0, 0, 0]])


# index


def test_index_masks_with_classes_and_ignore(tmp_path):
    raw = [[0, 1, 2], [2, 11, 1], [0, 0, 11]]
    _dataset(tmp_path, {"a": raw})
    _yaml(tmp_path, classes=["sky", "road", "car"], ignore_value=11)
    spec = load_spec(tmp_path)
    assert spec.mask_mode == "index" and spec.num_classes == 3 and len(spec.colors) == 3
    np.testing.assert_array_equal(decode_mask(spec.pairs[0], spec), [[0, 1, 2], [2, I, 1], [0, 0, I]])


def test_zero_one_masks_with_three_classes_are_index(tmp_path):
    _dataset(tmp_path, {"a": [[0, 1, 1]] * 3})
    _yaml(tmp_path, classes=["a", "b", "c"])
    spec = load_spec(tmp_path)
    assert spec.mask_mode == "index"
    assert load_spec(tmp_path, mask_mode="binary", classes=["a", "b"]).mask_mode == "binary"


def test_index_class_count_is_inferred_over_all_masks(tmp_path):
    _dataset(tmp_path, {"a": [[0, 1, 2]] * 3, "b": [[0, 4, 9]] * 3})
    spec = load_spec(tmp_path, ignore_value=9)
    assert spec.mask_mode == "index"
    assert spec.classes == ["class_0", "class_1", "class_2", "class_3", "class_4"]
    np.testing.assert_array_equal(decode_mask(spec.pairs[1], spec), [[0, 4, I]] * 3)


def test_index_value_out_of_range_names_file_values_and_fix(tmp_path):
    _dataset(tmp_path, {"a": [[0, 1, 2], [5, 7, 1], [0, 0, 0]]})
    spec = load_spec(tmp_path, classes=["a", "b", "c"])
    with pytest.raises(UnetkitError, match=r"^masks/a\.png has values \{5, 7\} outside class indices 0\.\.2; "):
        decode_mask(spec.pairs[0], spec)


def test_palette_png_without_colour_table_is_index_of_palette_indices(tmp_path):
    _png(tmp_path / "images" / "a.png", np.zeros((2, 3)))
    _palette_png(tmp_path / "masks" / "a.png", [[0, 1, 2], [2, 1, 0]], [(0, 0, 0), RED, GREEN])
    spec = load_spec(tmp_path)
    assert spec.mask_mode == "index" and spec.colors == [(0, 0, 0), RED, GREEN]
    np.testing.assert_array_equal(decode_mask(spec.pairs[0], spec), [[0, 1, 2], [2, 1, 0]])


def test_zero_255_masks_with_anti_aliased_edges_are_binary_thresholded_at_128(tmp_path):
    raw = np.zeros((8, 8), np.uint8)
    raw[:, 4:] = 255
    raw[0, 3], raw[1, 3] = 64, 200  # anti-aliased edge pixels
    spec = load_spec(_dataset(tmp_path, {"a": raw}))
    assert spec.mask_mode == "binary" and spec.classes == ["background", "foreground"]
    expected = (np.arange(8) >= 4).astype(int)[None].repeat(8, 0)
    expected[1, 3] = 1  # 200 >= 128
    np.testing.assert_array_equal(decode_mask(spec.pairs[0], spec), expected)


def test_one_value_in_between_is_not_read_as_anti_aliasing(tmp_path):
    raw = np.zeros((16, 16), np.uint8)
    raw[:, 8:] = 255
    raw[:, 7] = 128  # a boundary class, not anti-aliasing: 3 classes 0/128/255
    _dataset(tmp_path, {"a": raw})
    with pytest.raises(UnetkitError, match=r"^masks/a\.png has value 255, so as class indices the masks would make 256 classes, "
                                           r"but they hold only 3 distinct values \(0, 128, 255\); set ignore_value for a void value, map values to classes"):
        load_spec(tmp_path)
    spec = load_spec(tmp_path, mask_mode="binary")  # told it is binary: the edge is thresholded
    np.testing.assert_array_equal(decode_mask(spec.pairs[0], spec)[0], [0] * 7 + [1] * 9)
    _yaml(tmp_path, classes={"background": 0, "edge": 128, "cell": 255})  # or map it as a class
    spec = load_spec(tmp_path)
    assert spec.mask_mode == "index" and spec.classes == ["background", "edge", "cell"]
    np.testing.assert_array_equal(decode_mask(spec.pairs[0], spec)[0], [0] * 7 + [1] + [2] * 8)


# index with a map of values


def test_classes_map_one_or_several_values_per_class(tmp_path):
    raw = [[0, 32, 64], [255, 255, 0], [11, 0, 32]]
    _dataset(tmp_path, {"a": raw})
    _yaml(tmp_path, classes={"background": 0, "road": [32, 64], "building": 255}, ignore_value=11)
    spec = load_spec(tmp_path)
    assert (spec.mask_mode, spec.classes, spec.values) == ("index", ["background", "road", "building"], {0: 0, 32: 1, 64: 1, 255: 2})
    np.testing.assert_array_equal(decode_mask(spec.pairs[0], spec), [[0, 1, 1], [2, 2, 0], [I, 0, 1]])


def test_values_no_class_maps_are_named_with_the_file(tmp_path):
    _dataset(tmp_path, {"a": [[0, 32, 64], [255, 17, 0], [200, 0, 32]]})
    _yaml(tmp_path, classes={"background": 0, "road": [32, 64], "building": 255})
    spec = load_spec(tmp_path)
    with pytest.raises(UnetkitError, match=r"^masks/a\.png has values \{17, 200\} that no class lists; add them to a class"):
        decode_mask(spec.pairs[0], spec)


def test_three_values_per_class_need_mask_mode_index(tmp_path):
    _dataset(tmp_path, {"a": [[1, 2, 3], [4, 5, 6], [1, 1, 1]]})
    _yaml(tmp_path, classes={"low": [1, 2, 3], "high": [4, 5, 6]}, mask_mode="index")
    spec = load_spec(tmp_path)
    np.testing.assert_array_equal(decode_mask(spec.pairs[0], spec), [[0, 0, 0], [1, 1, 1], [0, 0, 0]])
    _yaml(tmp_path, classes={"low": [1, 2, 3], "high": [4, 5, 6]})  # without it: two colours
    assert load_spec(tmp_path).colors == [(1, 2, 3), (4, 5, 6)]
    _yaml(tmp_path, classes={"low": [1, 2], "high": [4, 5, 6]})  # lists only: colours, one malformed
    with pytest.raises(UnetkitError, match=r"classes\.low: colour \[1, 2\] is not \[r, g, b\] .*to map mask values to classes, set mask_mode: index"):
        load_spec(tmp_path)


@pytest.mark.parametrize("config,fragment", [
    ({"classes": {"a": 0, "b": [1, 0]}}, r"classes: value 0 is listed for both 'a' and 'b'; give each value one class"),
    ({"classes": {"a": 0, "b": "x"}}, r"classes\.b: 'x' is not a mask value or a list of them"),
    ({"classes": {"a": 0, "b": [-1]}}, r"classes\.b: \[-1\] is not a mask value"),
    ({"classes": {"a": 0, "b": []}}, r"classes\.b: \[\] is not a mask value"),
    ({"classes": {"a": 0, "b": 1}, "mask_mode": "binary"}, r"classes maps mask values to classes, which needs mask_mode index, not binary"),
    ({"classes": {"a": 0, "b": 1}, "ignore_value": 1}, r"ignore_value 1 is also a value of class 'b'"),
])  # fmt: skip
def test_malformed_value_maps_name_the_yaml(tmp_path, config, fragment):
    _dataset(tmp_path, {"a": np.zeros((3, 3))})
    _yaml(tmp_path, **config)
    with pytest.raises(UnetkitError, match=r"dataset\.yaml: " + fragment):
        load_spec(tmp_path)


# colour


def test_colour_masks_map_through_the_class_table(tmp_path):
    _png(tmp_path / "images" / "a.jpg", np.zeros((2, 3)))
    _png(tmp_path / "masks" / "a.png", _rgb([[RED, GREEN, BLUE], [(0, 0, 0), BLUE, RED]]))
    _yaml(tmp_path, classes={"r": list(RED), "g": list(GREEN), "b": list(BLUE)}, ignore_colors=[[0, 0, 0]])
    spec = load_spec(tmp_path)
    assert (spec.mask_mode, spec.classes, spec.colors) == ("color", ["r", "g", "b"], [RED, GREEN, BLUE])
    np.testing.assert_array_equal(decode_mask(spec.pairs[0], spec), [[0, 1, 2], [I, 2, 0]])


def test_palette_colour_masks_map_through_the_class_table(tmp_path):
    _png(tmp_path / "images" / "a.png", np.zeros((2, 2)))
    _palette_png(tmp_path / "masks" / "a.png", [[0, 1], [2, 2]], [BLUE, (9, 9, 9), RED])
    _yaml(tmp_path, classes={"r": list(RED), "b": list(BLUE)}, ignore_colors=[[9, 9, 9]])
    spec = load_spec(tmp_path)
    assert spec.mask_mode == "color"
    np.testing.assert_array_equal(decode_mask(spec.pairs[0], spec), [[1, I], [0, 0]])


def test_gray_colours_decode_in_colour_mode(tmp_path):
    _png(tmp_path / "images" / "a.png", np.zeros((1, 2)))
    _png(tmp_path / "masks" / "a.png", _rgb([[(155, 155, 155), (0, 0, 0)]]))
    _yaml(tmp_path, classes={"unlabeled": [155, 155, 155], "black": [0, 0, 0]}, mask_mode="color")
    spec = load_spec(tmp_path)
    np.testing.assert_array_equal(decode_mask(spec.pairs[0], spec), [[0, 1]])


def test_unknown_colours_are_listed_with_counts(tmp_path):
    _png(tmp_path / "images" / "a.png", np.zeros((2, 3)))
    _png(tmp_path / "masks" / "a.png", _rgb([[RED, (1, 2, 3), (1, 2, 3)], [(7, 7, 8), RED, RED]]))
    _yaml(tmp_path, classes={"r": list(RED)})
    spec = load_spec(tmp_path)
    with pytest.raises(
        UnetkitError,
        match=r"^masks/a\.png has 2 colour\(s\) not in the class table, e\.g\. \(1, 2, 3\): 2 px, "
        r"\(7, 7, 8\): 1 px; add them to 'classes' or 'ignore_colors' in dataset\.yaml$",
    ):
        decode_mask(spec.pairs[0], spec)


def test_colour_mask_without_colour_table_lists_colours(tmp_path):
    _png(tmp_path / "images" / "a.png", np.zeros((1, 2)))
    _png(tmp_path / "masks" / "a.png", _rgb([[RED, BLUE]]))
    with pytest.raises(UnetkitError, match=r"masks/a\.png is a colour mask with colours \[\[0, 0, 255\], \[255, 0, 0\]\]"):
        load_spec(tmp_path)


# instances


def test_instance_folders_union_and_labels(tmp_path):
    _png(tmp_path / "images" / "n1.png", np.zeros((3, 3, 4)) + 255, mode="RGBA")
    _png(tmp_path / "masks" / "n1" / "a.png", [[255, 255, 0], [0, 0, 0], [0, 0, 0]])
    _png(tmp_path / "masks" / "n1" / "b.png", [[0, 0, 0], [0, 0, 0], [0, 255, 255]])
    spec = load_spec(tmp_path)
    assert (spec.mask_mode, spec.classes) == ("instances", ["background", "foreground"])
    image, mask = read_pair(spec.pairs[0], spec)
    assert image.shape == (3, 3, 3)
    np.testing.assert_array_equal(mask, [[1, 1, 0], [0, 0, 0], [0, 1, 1]])
    labels = read_instances(spec.pairs[0], spec)
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, [[1, 1, 0], [0, 0, 0], [0, 2, 2]])


def test_16bit_label_image_is_instances_and_renumbered(tmp_path):
    raw = np.zeros((8, 8), np.uint16)
    raw.flat[::2] = np.arange(1000, 1032)  # 32 ids + background: more than 32 distinct values
    _dataset(tmp_path, {"a": raw}, ext=".tif")
    spec = load_spec(tmp_path)
    assert spec.mask_mode == "instances"
    np.testing.assert_array_equal(decode_mask(spec.pairs[0], spec), raw > 0)
    labels = read_instances(spec.pairs[0], spec)
    np.testing.assert_array_equal(labels.flat[::2], np.arange(1, 33))


def test_label_image_with_more_ids_than_classes_is_instances(tmp_path):
    raw = np.array([[0, 300, 300], [0, 0, 0], [7, 0, 5]], np.uint16)
    _dataset(tmp_path, {"a": raw}, ext=".tif")
    spec = load_spec(tmp_path, classes=["background", "nucleus"])
    assert spec.mask_mode == "instances"
    np.testing.assert_array_equal(read_instances(spec.pairs[0], spec), [[0, 3, 3], [0, 0, 0], [2, 0, 1]])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_few_object_label_images_are_instances(tmp_path, dtype):
    raw = np.zeros((6, 9), dtype)
    raw[1, 1:3], raw[4, 0], raw[3:5, 5], raw[0, 8] = 1, 2, 3, 4  # 4 objects, each one region
    spec = load_spec(_dataset(tmp_path, {"a": raw}, ext=".tif"))
    assert spec.mask_mode == "instances"
    np.testing.assert_array_equal(read_instances(spec.pairs[0], spec), raw)
    np.testing.assert_array_equal(decode_mask(spec.pairs[0], spec), raw > 0)


def test_masks_whose_values_are_one_region_each_stay_index_below_three_or_with_classes(tmp_path):
    _dataset(tmp_path, {"a": [[0, 1, 1], [0, 0, 2], [0, 0, 0]]})
    assert load_spec(tmp_path).mask_mode == "index"  # two ids: too few to be objects
    _dataset(tmp_path, {"a": [[0, 1, 1], [0, 0, 0], [2, 0, 3]]})
    assert load_spec(tmp_path).mask_mode == "instances"
    assert load_spec(tmp_path, classes=["bg", "a", "b", "c"]).mask_mode == "index"  # named classes: semantic


def test_forcing_instances_on_a_binary_mask_is_refused(tmp_path):
    _dataset(tmp_path, {"a": [[255, 0, 255], [0, 0, 0], [255, 0, 255]]})
    spec = load_spec(tmp_path, mask_mode="instances")
    with pytest.raises(UnetkitError, match=r"^masks/a\.png is not an instance label image: value 255 covers 4 separate regions "
                                           r"\(1 id\(s\), 4 regions in all\); mask_mode instances needs one id per object: set mask_mode binary"):
        read_instances(spec.pairs[0], spec)
    with pytest.raises(UnetkitError, match=r"is not an instance label image"):
        decode_mask(spec.pairs[0], spec)


def test_forcing_binary_on_a_label_image_names_the_values(tmp_path):
    _dataset(tmp_path, {"a": [[0, 1, 0], [0, 0, 2], [3, 0, 0]]})
    spec = load_spec(tmp_path, mask_mode="binary")
    with pytest.raises(UnetkitError, match=r"^masks/a\.png has values \{0, 1, 2, 3\}; expected a binary 0/255 or 0/1 mask \(anti-aliased edges allowed\)"):
        decode_mask(spec.pairs[0], spec)


def test_binary_instances_are_connected_components(tmp_path):
    spec = load_spec(_dataset(tmp_path, {"a": [[255, 0, 255], [255, 0, 0], [0, 0, 255]]}))
    np.testing.assert_array_equal(read_instances(spec.pairs[0], spec), [[1, 0, 2], [1, 0, 0], [0, 0, 3]])


# reading pairs and splitting


def test_read_pair_size_mismatch_names_both_files(tmp_path):
    _png(tmp_path / "images" / "a.png", np.zeros((3, 4)))
    _png(tmp_path / "masks" / "a.png", np.zeros((3, 3)))
    spec = load_spec(tmp_path)
    with pytest.raises(UnetkitError, match=r"^images/a\.png is 3x4 .* masks/a\.png is 3x3; re-export"):
        read_pair(spec.pairs[0], spec)


def _pairs(n: int) -> list[Pair]:
    return [Pair(str(i), Path(f"{i}.png"), Path(f"m{i}.png")) for i in range(n)]


def test_split_pairs_is_deterministic_and_disjoint():
    train, val = split_pairs(_pairs(10), 0.2, seed=3)
    assert len(train) == 8 and len(val) == 2
    assert {p.key for p in train} | {p.key for p in val} == {str(i) for i in range(10)}
    assert split_pairs(_pairs(10), 0.2, seed=3) == (train, val)
    assert split_pairs(_pairs(10)[::-1], 0.2, seed=3)[1] == val[::-1]  # independent of input order
    assert [p.key for p in train] == sorted((p.key for p in train), key=int)  # input order kept


def test_split_pairs_keeps_one_in_each():
    assert [len(x) for x in split_pairs(_pairs(2), 0.01, seed=0)] == [1, 1]
    assert [len(x) for x in split_pairs(_pairs(3), 0.99, seed=0)] == [1, 2]


def test_split_pairs_refuses_fewer_than_two():
    with pytest.raises(UnetkitError, match=r"cannot split 1 pair\(s\)"):
        split_pairs(_pairs(1), 0.2, seed=0)
    with pytest.raises(UnetkitError, match=r"val_fraction 1\.5 must be between 0 and 1"):
        split_pairs(_pairs(4), 1.5, seed=0)
