"""The cuda-python layer on a real GPU: buffers, copies, events, graphs, device facts.

Marked ``gpu``; skipped with the reason on machines without cuda-python or an NVIDIA GPU.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator

import numpy as np
import pytest

from medseg.errors import BackendError
from medseg.runtime import cuda


def _skip_reason() -> str | None:
    if importlib.util.find_spec("cuda") is None:
        return "cuda-python is not installed"
    if not cuda.gpu_available():
        return "no NVIDIA GPU"
    return None


SKIP_REASON = _skip_reason()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or ""),
]


@pytest.fixture
def stream() -> Iterator[cuda.Stream]:
    with cuda.Stream() as s:
        yield s


def test_gpu_info_and_device_key_of_this_gpu() -> None:
    info = cuda.gpu_info()
    assert info.name and info.total_memory_bytes > 1 << 30
    assert info.compute_capability >= (5, 0)
    assert re.fullmatch(r"\d+\.\d+", info.driver_version)
    assert re.fullmatch(r"\d+\.\d+", info.runtime_version)
    key = cuda.device_key(info)
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*-sm\d{2,3}", key), key
    assert key.endswith(info.sm)


def test_pinned_and_device_buffers_round_trip(stream: cuda.Stream) -> None:
    src = cuda.PinnedHostBuffer((8, 3, 64, 96), np.float32)
    dst = cuda.PinnedHostBuffer((8, 3, 64, 96), np.float32)
    device = cuda.DeviceBuffer(src.nbytes)
    try:
        src.array[...] = np.random.default_rng(0).normal(size=src.shape).astype(np.float32)
        dst.array[...] = 0
        device.copy_from_host_async(src.array, stream)
        device.copy_to_host_async(dst.array, stream)
        stream.synchronize()
        np.testing.assert_array_equal(dst.array, src.array)
        part = dst.view((2, 3, 64, 96))  # a smaller shape views the same memory
        assert part.base is not None and np.shares_memory(part, dst.array)
    finally:
        for buffer in (src, dst, device):
            buffer.close()


def test_buffers_grow_only_when_asked_for_more(stream: cuda.Stream) -> None:
    device = cuda.DeviceBuffer(1 << 20)
    pinned = cuda.PinnedHostBuffer((1 << 18,), np.float32)
    try:
        ptr = device.ptr
        assert not device.ensure(1000) and device.ptr == ptr and device.nbytes == 1 << 20
        assert device.ensure(4 << 20) and device.nbytes == 4 << 20
        assert not pinned.ensure(16) and pinned.ensure(8 << 20)
        with pytest.raises(BackendError, match="does not fit"):
            device.copy_from_host_async(np.zeros(5 << 20, np.uint8), stream)
    finally:
        device.close()
        pinned.close()
    device.close()  # idempotent


def test_events_time_real_work(stream: cuda.Stream) -> None:
    host = cuda.PinnedHostBuffer((64 << 20,), np.uint8)
    device = cuda.DeviceBuffer(host.nbytes)
    start, end = cuda.CudaEvent(), cuda.CudaEvent()
    try:
        start.record(stream)
        for _ in range(4):
            device.copy_from_host_async(host.array, stream)
        end.record(stream)
        ms = cuda.elapsed_ms(start, end)
        assert 0 < ms < 10_000
    finally:
        for resource in (host, device, start, end):
            resource.close()


def test_cuda_graph_replays_captured_copies(stream: cuda.Stream) -> None:
    src = cuda.PinnedHostBuffer((1024,), np.float32)
    dst = cuda.PinnedHostBuffer((1024,), np.float32)
    device = cuda.DeviceBuffer(src.nbytes)
    graph = cuda.CudaGraph(stream)
    try:
        src.array[...] = 1.0
        with graph.capture():  # recorded, not run
            device.copy_from_host_async(src.array, stream)
            device.copy_to_host_async(dst.array, stream)
        stream.synchronize()
        for value in (2.0, 3.0):
            src.array[...] = value
            dst.array[...] = 0
            graph.launch()
            stream.synchronize()
            assert np.all(dst.array == value)
    finally:
        graph.close()
        for buffer in (src, dst, device):
            buffer.close()


def test_cuda_errors_are_one_line_medseg_errors() -> None:
    with pytest.raises(BackendError, match=r"cudaErrorMemoryAllocation"):
        cuda.DeviceBuffer(1 << 60)
    with pytest.raises(BackendError, match="does not exist"):
        cuda.gpu_info(device=999)
