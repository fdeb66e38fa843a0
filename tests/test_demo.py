"""The demo's folder: it takes a new or empty folder, replaces an earlier demo's products, and refuses anything else."""

import pytest

from unetkit.demo import MARK, claim_folder
from unetkit.errors import UnetkitError


def test_a_new_folder_is_claimed(tmp_path):
    claim_folder(tmp_path / "demo")
    assert [p.name for p in (tmp_path / "demo").iterdir()] == [MARK]


def test_an_earlier_demo_is_replaced_but_not_what_lies_outside_its_products(tmp_path):
    out = tmp_path / "demo"
    claim_folder(out)
    (out / "run").mkdir()
    (out / "run" / "best.pt").write_bytes(b"old")
    (out / "metrics.json").write_text("{}")
    outside = tmp_path / "mine"
    outside.mkdir()
    (outside / "keep.png").write_bytes(b"user")
    (out / "predictions").symlink_to(outside)  # a link is removed, never followed
    claim_folder(out)
    assert sorted(p.name for p in out.iterdir()) == [MARK]
    assert (outside / "keep.png").read_bytes() == b"user"


@pytest.mark.parametrize("held", [["a.png"], ["images", "masks"], ["data", "x", "y", "z"]])
def test_a_folder_with_other_files_is_refused_untouched(tmp_path, held):
    out = tmp_path / "mine"
    out.mkdir()
    for name in held:
        (out / name).write_bytes(b"user")
    with pytest.raises(UnetkitError, match=f"^--out: {out} already holds .*which no demo made; choose a new or empty folder"):
        claim_folder(out)
    assert sorted(p.name for p in out.iterdir()) == sorted(held)
    assert all((out / n).read_bytes() == b"user" for n in held)


def test_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UnetkitError, match="is a file; choose a folder for the demo"):
        claim_folder(tmp_path / "f")
