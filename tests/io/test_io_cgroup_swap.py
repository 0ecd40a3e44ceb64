"""A cgroup v1 limit on memory + swap (memory.memsw.*, where swap is accounted) bounds the memory available as its
limit on memory does: with much of the cgroup swapped out, it is the nearer of the two."""

from __future__ import annotations

from oldphoto.io import buffers

_OWN = "4:memory:/docker/abc\n0::/\n"
_STAT = "cache 800\ninactive_file 100\ntotal_inactive_file 700\n"


def _root(tmp_path, files: dict[str, str]):
    """(a meminfo with 32 GB available, a root whose process is in the cgroup v1 memory hierarchy's root, with
    `files` there)."""
    info = tmp_path / "meminfo"
    info.write_text("MemTotal: 64000000 kB\nMemAvailable: 32000000 kB\nSwapFree: 0 kB\n")
    root = tmp_path / "root"
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text(_OWN)
    folder = root / "sys/fs/cgroup/memory"
    folder.mkdir(parents=True)
    for name, text in {"memory.stat": _STAT, **files}.items():
        (folder / name).write_text(text)
    return info, root


def test_a_memory_and_swap_limit_nearly_reached_bounds_the_memory_available(tmp_path):
    # 3000 in RAM of a limit of 8000, 6000 more in swap, 10000 for both: 1000 left, not 5000
    info, root = _root(tmp_path, {"memory.limit_in_bytes": "8000\n", "memory.usage_in_bytes": "3000\n",
                                  "memory.memsw.limit_in_bytes": "10000\n", "memory.memsw.usage_in_bytes": "9000\n"})
    assert buffers.available_memory(info, root) == 10000 - 9000 + 700  # page cache is reclaimed first, as for RAM
    folder = root / "sys/fs/cgroup/memory"
    (folder / "memory.memsw.usage_in_bytes").write_text("3500\n")  # little swapped: the RAM limit is the nearer
    assert buffers.available_memory(info, root) == 8000 - 3000 + 700


def test_a_memory_and_swap_limit_missing_unlimited_or_unparsable_gives_no_bound(tmp_path):
    ram = {"memory.limit_in_bytes": "8000\n", "memory.usage_in_bytes": "3000\n"}
    info, root = _root(tmp_path, ram)  # swap not accounted (swapaccount=0): no memory.memsw.* files
    assert buffers.available_memory(info, root) == 5700
    folder = root / "sys/fs/cgroup/memory"
    for limit, usage in ((f"{2**63 - 4096}\n", "9000\n"), ("oops\n", "9000\n"), ("10000\n", "")):
        (folder / "memory.memsw.limit_in_bytes").write_text(limit)
        (folder / "memory.memsw.usage_in_bytes").write_text(usage)
        assert buffers.available_memory(info, root) == 5700
    (folder / "memory.memsw.usage_in_bytes").write_text("9000\n")
    (folder / "memory.limit_in_bytes").write_text(f"{2**63 - 4096}\n")  # only memory + swap limited (not as v1
    assert buffers.available_memory(info, root) == 1700  # allows, but each limit counts on its own)
