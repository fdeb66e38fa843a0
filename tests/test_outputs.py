"""The output rule on its own: exact refusals for each way an output could harm what the user has."""

import pytest

from unetkit.errors import UnetkitError
from unetkit.outputs import refuse_unsafe_folder, refuse_unsafe_outputs


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"image")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "a.png").write_bytes(b"earlier output")
    return tmp_path


def test_new_files_in_a_new_folder_pass(tree):
    refuse_unsafe_outputs([(tree / "out" / "a.png", tree / "images" / "a.png")], [tree / "images" / "a.png"], "--out")


@pytest.mark.parametrize("overwrite", [False, True])
def test_an_input_is_never_replaced(tree, overwrite):
    a = tree / "images" / "a.png"
    with pytest.raises(UnetkitError, match=f"^--out: {a} would overwrite the input {a}; choose a --out that holds no inputs$"):
        refuse_unsafe_outputs([(tree / "new" / "x.png", a), (a, a)], [a], "--out", overwrite=overwrite)


def test_an_existing_file_needs_overwrite(tree):
    target = tree / "old" / "a.png"
    with pytest.raises(UnetkitError, match=f"^--out: {target} already exists; pass --overwrite to replace it, or choose another --out$"):
        refuse_unsafe_outputs([(target, tree / "images" / "a.png")], [tree / "images" / "a.png"], "--out")
    refuse_unsafe_outputs([(target, tree / "images" / "a.png")], [tree / "images" / "a.png"], "--out", overwrite=True)


def test_writing_beside_an_input_needs_overwrite(tree):
    a, target = tree / "images" / "a.png", tree / "images" / "a_mask.png"
    with pytest.raises(UnetkitError, match=f"^--out: {target} would be written beside the input {a}; "):
        refuse_unsafe_outputs([(target, a)], [a], "--out")
    refuse_unsafe_outputs([(target, a)], [a], "--out", overwrite=True)
    refuse_unsafe_outputs([(target, a)], [a], "--out", named=True)  # a name the user chose may sit there


def test_a_model_is_never_replaced_but_outputs_may_sit_beside_it(tree):
    model = tree / "old" / "a.png"
    with pytest.raises(UnetkitError, match="would overwrite the input"):
        refuse_unsafe_outputs([(model, model)], [], "--out", overwrite=True, models=[model])
    refuse_unsafe_outputs([(tree / "old" / "b.png", model)], [], "--out", models=[model])


@pytest.mark.parametrize("overwrite", [False, True])
def test_two_sources_for_one_output_and_a_folder_in_the_way(tree, overwrite):
    x, y = tree / "x" / "a.png", tree / "y" / "a.png"
    with pytest.raises(UnetkitError, match=f"^{x} and {y} would both write {tree / 'out' / 'a.png'}; rename one"):
        refuse_unsafe_outputs([(tree / "out" / "a.png", x), (tree / "out" / "a.png", y)], [x, y], "--out", overwrite)
    with pytest.raises(UnetkitError, match=f"^--out: {tree / 'old'} is a folder where a file would be written"):
        refuse_unsafe_outputs([(tree / "old", x)], [x], "--out", overwrite)


def test_a_folder_to_fill(tree):
    a = tree / "images" / "a.png"
    refuse_unsafe_folder(tree / "new", [a], "--report-dir")
    (tree / "empty").mkdir()
    refuse_unsafe_folder(tree / "empty", [a], "--report-dir")
    with pytest.raises(UnetkitError, match=f"^--report-dir: {tree} holds the input {a}; choose a --report-dir that holds no inputs$"):
        refuse_unsafe_folder(tree, [a], "--report-dir", overwrite=True)
    with pytest.raises(UnetkitError, match=f"^--report-dir: {tree / 'old'} already holds a.png; pass --overwrite"):
        refuse_unsafe_folder(tree / "old", [a], "--report-dir")
    refuse_unsafe_folder(tree / "old", [a], "--report-dir", overwrite=True)
    with pytest.raises(UnetkitError, match="is a file, not a folder"):
        refuse_unsafe_folder(a, [], "--report-dir")


def test_an_earlier_zarr_store_is_an_output_like_a_file(tree):
    store = tree / "old" / "mask.zarr"
    store.mkdir()
    with pytest.raises(UnetkitError, match="mask.zarr already exists; pass --overwrite"):
        refuse_unsafe_outputs([(store, tree / "images" / "a.png")], [tree / "images" / "a.png"], "--out")
    refuse_unsafe_outputs([(store, tree / "images" / "a.png")], [tree / "images" / "a.png"], "--out", overwrite=True)
