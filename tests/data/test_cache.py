"""Tests of unetkit.data.cache and of training from it: rebuilt when a source changes or an entry is cut short,
shared by processes, checked during a run."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from unetkit.data.cache import CachedArrays, DiskCache, MemoryCache, check_unchanged
from unetkit.errors import UnetkitError


def _source(tmp_path, name="a.png", content=b"one"):
    path = tmp_path / name
    path.write_bytes(content)
    return path


def _cache(tmp_path, built):
    return DiskCache(tmp_path / "cache", on_build=lambda key, why: built.append((key, why)))


def _builder(value=1):
    return lambda: ({"image": np.full((4, 5, 1), value, np.uint8)}, {"sum": [20 * value]})


def test_an_entry_is_built_once_then_read_memory_mapped(tmp_path):
    source, built = _source(tmp_path), []
    first = _cache(tmp_path, built).get("k", [source], _builder())
    again = _cache(tmp_path, built).get("k", [source], _builder(7))  # a new cache object on the same folder: no rebuild
    assert built == [("k", "new")]
    assert isinstance(again.load("image"), np.memmap) and again.load("image").sum() == 20 and again.stats == {"sum": [20]}
    assert again.shape("image") == (4, 5, 1) and first.nbytes() == 20


def test_a_changed_source_rebuilds_its_entry(tmp_path):
    source, built = _source(tmp_path), []
    _cache(tmp_path, built).get("k", [source], _builder())
    source.write_bytes(b"longer content")
    entry = _cache(tmp_path, built).get("k", [source], _builder(3))
    assert built[-1] == ("k", f"{source} changed") and entry.load("image").max() == 3
    os.utime(source, ns=(0, 0))  # same size, another time
    _cache(tmp_path, built).get("k", [source], _builder(5))
    assert len(built) == 3


def test_a_truncated_or_missing_array_is_rebuilt_not_read(tmp_path):
    source, built = _source(tmp_path), []
    entry = _cache(tmp_path, built).get("k", [source], _builder(2))
    path = entry.files["image"]
    path.write_bytes(path.read_bytes()[:-7])  # a run killed while writing, or a full disk
    cut = path.stat().st_size
    rebuilt = _cache(tmp_path, built).get("k", [source], _builder(2))
    assert built[-1] == ("k", f"{path.name} is cut short ({cut} of {entry.arrays['image']['bytes']} bytes)")
    assert rebuilt.load("image").sum() == 40 and path.stat().st_size == entry.arrays["image"]["bytes"]
    path.unlink()
    _cache(tmp_path, built).get("k", [source], _builder(2))
    assert "missing" in built[-1][1]


def test_an_unreadable_record_is_rebuilt(tmp_path):
    source, built = _source(tmp_path), []
    _cache(tmp_path, built).get("k", [source], _builder())
    (record,) = (tmp_path / "cache").glob("*.json")
    record.write_text("{not json")
    _cache(tmp_path, built).get("k", [source], _builder())
    assert built[-1] == ("k", "its record is unreadable") and json.loads(record.read_text())["key"] == "k"


def test_a_folder_source_changes_when_a_file_in_it_does(tmp_path):
    folder = tmp_path / "objects"
    folder.mkdir()
    (folder / "1.png").write_bytes(b"a")
    built = []
    _cache(tmp_path, built).get("k", [folder], _builder())
    (folder / "2.png").write_bytes(b"b")
    _cache(tmp_path, built).get("k", [folder], _builder())
    assert len(built) == 2


def test_check_unchanged_names_the_changed_file(tmp_path):
    source = _source(tmp_path)
    entry = _cache(tmp_path, []).get("k", [source], _builder())
    check_unchanged([entry])
    source.write_bytes(b"edited while training")
    with pytest.raises(UnetkitError, match=f"{source} changed .*while training"):
        check_unchanged([entry])
    source.unlink()
    with pytest.raises(UnetkitError, match="changed \\(or went\\)"):
        check_unchanged([entry])


def test_memory_cache_writes_nothing(tmp_path):
    source = _source(tmp_path)
    entry = MemoryCache().get("k", [source], _builder(4))
    assert entry.files is None and not isinstance(entry.load("image"), np.memmap) and entry.load("image").max() == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_cached_arrays_are_lazy_and_sliceable(tmp_path):
    sources = [_source(tmp_path, f"{n}.png") for n in range(3)]
    cache = _cache(tmp_path, [])
    entries = [cache.get(str(n), [sources[n]], _builder(n)) for n in range(3)]
    arrays = CachedArrays(entries, "image", transform=lambda a: a.astype(np.int64) * 2)
    assert len(arrays) == 3 and arrays.shape(1) == (4, 5, 1)
    assert [int(a.max()) for a in arrays[::2]] == [0, 4] and arrays[1].dtype == np.int64


def test_an_unwritable_cache_folder_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UnetkitError, match="--cache memory"):
        DiskCache(blocker / "cache")


_SHARED = """
import sys, time
import numpy as np
from pathlib import Path
from unetkit.data.cache import DiskCache
cache = DiskCache(sys.argv[1])
def build():
    time.sleep(0.3)  # slow enough that both processes ask for the same entries at once
    print("built", flush=True)
    return {"image": np.zeros((2, 2, 1), np.uint8)}, {}
for n in range(4):
    cache.get(str(n), [Path(sys.argv[2])], build)
"""


def test_two_processes_fill_one_cache_without_decoding_twice(tmp_path):
    source = _source(tmp_path)
    script = tmp_path / "fill.py"
    script.write_text(_SHARED)
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "cache"), str(source)], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(o.count("built") for o in outputs) == 4  # each entry decoded by exactly one of them
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 4 and not list((tmp_path / "cache").glob(".*tmp*"))


def test_training_reuses_the_cache_and_stops_when_the_data_changes(tiny_data, tmp_path, monkeypatch):
    import shutil

    import unetkit
    from tests.conftest import TINY_MODEL

    tiny_data = shutil.copytree(tiny_data, tmp_path / "data")  # edited below
    cache = tmp_path / "cache"
    options = {**TINY_MODEL, "epochs": 1, "steps_per_epoch": 2, "cache": str(cache), "report": False}
    first = unetkit.train(data=str(tiny_data), out=str(tmp_path / "a"), **options)
    (folder,) = cache.iterdir()
    files = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.npy")}
    assert files and folder.name.startswith(tiny_data.name)
    second = unetkit.train(data=str(tiny_data), out=str(tmp_path / "b"), **options)
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.npy")} == files  # read, not rebuilt
    assert first.history[0]["train_loss"] == second.history[0]["train_loss"]  # the same batches from the same cache
    memory = unetkit.train(data=str(tiny_data), out=str(tmp_path / "c"), **{**options, "cache": "memory"})
    assert memory.history[0]["train_loss"] == first.history[0]["train_loss"]  # in memory: the same run
    image = next((tiny_data / "images").iterdir())

    from unetkit.engine import trainer as trainer_module

    original = trainer_module.Trainer._end_epoch

    def edit_then_end(self, time_up):  # the data set is edited while the run trains
        time.sleep(0.01)
        image.write_bytes(image.read_bytes())
        os.utime(image, ns=(1, 1))
        return original(self, time_up)

    monkeypatch.setattr(trainer_module.Trainer, "_end_epoch", edit_then_end)
    with pytest.raises(UnetkitError, match=f"{image.name} changed .*stale"):
        unetkit.train(data=str(tiny_data), out=str(tmp_path / "d"), **options)
