"""Scale-out: the tiles of one streamed image computed on Dask workers, written here in order.

Each task is a run of consecutive batches of the image's :class:`~unetkit.inference.stitch.TileGrid`
(about one tile row). A worker opens the image itself (it gets the path, never pixels), loads the model
once from the checkpoint bytes broadcast to it, and returns the tiles' logits. The client puts them
together in grid order with the same stitcher and writer as the local path. The batches are the same as
well, so the output file is byte for byte the one the local path writes.

``pip install 'unetkit[large]'`` installs Dask. Remote workers need unetkit installed and the input path
readable under the same name.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from unetkit.engine.checkpoint import save_checkpoint
from unetkit.errors import UnetkitError
from unetkit.extras import optional
from unetkit.inference.options import InferenceOptions
from unetkit.inference.predictor import Segmenter
from unetkit.inference.sources import load_batch, open_source
from unetkit.inference.stitch import TileGrid, TileResult, forward_batch

_worker_cache: dict = {}  # per worker process: the last model and the last opened image


def checkpoint_bytes(seg: Segmenter) -> bytes:
    """The segmenter as the bytes of a checkpoint written by ``save_checkpoint``, to send to workers."""
    if "ensemble" in seg.meta:
        raise UnetkitError(f"--dask runs one PyTorch checkpoint; this ensemble of {len(seg.meta['ensemble'])} models runs here: drop --dask and --dask-workers")
    if seg.model is None:
        raise UnetkitError("--dask runs PyTorch checkpoints; pass the .pt checkpoint instead of an exported model")
    state = {name: tensor.contiguous() for name, tensor in seg.model.state_dict().items()}
    with tempfile.TemporaryDirectory(prefix="unetkit-") as tmp:
        path = Path(tmp) / "model.pt"
        save_checkpoint(path, state, seg.meta)
        return path.read_bytes()


def _worker_segmenter(blob: bytes, device: str, precision: str, tta: bool) -> Segmenter:
    key = (hashlib.blake2b(blob, digest_size=16).hexdigest(), device, precision, tta)
    if _worker_cache.get("model_key") != key:
        from distributed import get_worker

        threads = getattr(get_worker().state, "nthreads", None) or 1
        torch.set_num_threads(max(1, int(threads)))  # a worker's share of the cores, not all of them
        with tempfile.TemporaryDirectory(prefix="unetkit-") as tmp:
            path = Path(tmp) / "model.pt"
            path.write_bytes(blob)
            _worker_cache["model"] = Segmenter.from_checkpoint(path, InferenceOptions(device=device, precision=precision, tta=tta))
        _worker_cache["model_key"] = key
    return _worker_cache["model"]


def _worker_source(path: str):
    key = (path, os.stat(path).st_mtime_ns)
    if _worker_cache.get("source_key") != key:
        if "source" in _worker_cache:
            _worker_cache.pop("source").close()
        _worker_cache["source"], _worker_cache["source_key"] = open_source(path), key
    return _worker_cache["source"]


def run_task(path: str, blob: bytes, device: str, precision: str, tta: bool, grid: TileGrid, batches: list) -> list[TileResult]:
    """On a worker: the results of ``batches`` of ``grid`` for the image at ``path`` (with test-time augmentation if ``tta``)."""
    seg, source = _worker_segmenter(blob, device, precision, tta), _worker_source(path)
    mean = np.asarray(seg.meta["normalization"]["mean"], np.float32)
    std = np.asarray(seg.meta["normalization"]["std"], np.float32)
    results: list[TileResult] = []
    for batch in batches:
        x, valid = load_batch(source, grid, batch, mean, std)
        results += forward_batch(seg.forward, grid, batch, x, valid, name=path)
    return results


def connect(address: str | None, workers: int):
    """A Dask client of the scheduler at ``address``, or of a new local cluster of ``workers`` processes.

    Returns:
        ``(client, cluster)``; ``cluster`` is None for a remote scheduler. Close both when done.
    """
    distributed = optional("distributed", "--dask needs Dask", "large")
    if address:
        try:
            return distributed.Client(address, timeout="20s"), None
        except OSError as error:
            raise UnetkitError(f"--dask {address}: cannot reach the scheduler ({error}); check the address and that it is running") from None
    if workers < 1:
        raise UnetkitError(f"--dask-workers {workers}: expected 1 or more worker processes")
    cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                                       silence_logs=logging.ERROR)  # fmt: skip
    return distributed.Client(cluster), cluster


def dask_results(path: Path, seg: Segmenter, grid: TileGrid, address: str | None = None, workers: int = 0) -> Iterator[TileResult]:
    """Tile results in grid order, computed on Dask workers; at most a few tasks per worker are in flight."""
    client, cluster = connect(address, workers)
    try:
        blob = client.scatter(checkpoint_bytes(seg), broadcast=True)
        device = getattr(seg.forward, "device", torch.device("cpu")).type  # what the model runs on here, not "auto"
        precision = getattr(seg.forward, "precision", "fp32")
        per_task = max(1, -(-len(grid.cols.starts) // grid.batch_size))  # about one tile row per task
        batches = grid.batches
        tasks = [batches[k : k + per_task] for k in range(0, len(batches), per_task)]
        window = 2 * max(1, len(client.scheduler_info().get("workers", {}))) + 1
        pending: deque = deque()
        for number, task in enumerate(tasks):
            pending.append(client.submit(run_task, str(path.resolve()), blob, device, precision, seg.options.tta, grid, task,
                                         key=f"unetkit-tiles-{path.name}-{number}-{os.getpid()}-{id(grid)}"))  # fmt: skip
            while len(pending) >= window or (number == len(tasks) - 1 and pending):
                yield from pending.popleft().result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
