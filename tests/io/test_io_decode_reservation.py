"""The decoders' RAM is reserved within the process: a file decoded while others are (--jobs) counts what they hold,
and waits for them where it would fit only once they are done, instead of both decoding at once; none is refused
because of another file in flight."""

from __future__ import annotations

import io
import sys
import threading

import numpy as np
import pytest
from PIL import Image, ImageFile

from oldphoto.errors import ImageError, NoMemory
from oldphoto.io import buffers, reader

_RGB = np.random.default_rng(11).integers(0, 250, (40, 50, 3), dtype=np.uint8)
_WAIT_S = 5.0  # how long a test waits for what must happen at once (only reached when it fails)


def _availability(monkeypatch, *answers: int) -> list[str]:
    """available_memory() gives `answers` in turn, the last one for good; -> the names of the threads that asked."""
    asked: list[str] = []

    def available(meminfo=None):
        asked.append(threading.current_thread().name)
        return answers[min(len(asked), len(answers)) - 1]

    monkeypatch.setattr(buffers, "available_memory", available)
    return asked


def _asked_once(monkeypatch, n: int) -> None:
    """available_memory() gives `n` once; a second question (a need that waits, re-reading it) fails the test."""
    calls = []

    def available(meminfo=None):
        calls.append(1)
        if len(calls) > 1:
            raise AssertionError("the need waited")
        return n

    monkeypatch.setattr(buffers, "available_memory", available)


class _Reserving(threading.Thread):
    """reserve(need) in a thread of its own: `entered` is set once it holds it, `leave` lets it give it back."""

    def __init__(self, ledger: buffers.DecoderMemory, need: int) -> None:
        super().__init__(name=f"reserving-{need}", daemon=True)  # a failing test must not keep pytest from ending
        self.ledger, self.need = ledger, need
        self.entered, self.leave = threading.Event(), threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.ledger.reserve(self.need):
                self.entered.set()
                self.leave.wait(_WAIT_S)
        except BaseException as e:  # noqa: BLE001 - handed to the test, which asserts on it
            self.error = e

    def finish(self) -> None:
        self.leave.set()
        self.join(_WAIT_S)
        assert not self.is_alive()


def test_a_need_that_fits_beside_those_held_goes_in_at_once(monkeypatch):
    ledger = buffers.DecoderMemory(poll_s=0.01)
    _asked_once(monkeypatch, 10)
    with ledger.reserve(4):
        _asked_once(monkeypatch, 10)
        with ledger.reserve(6):  # 10 - 4 left: it fits exactly
            assert ledger.held() == 10
        assert ledger.held() == 4
    assert ledger.held() == 0


def test_a_need_that_fits_only_once_another_is_done_waits_for_its_release(monkeypatch):
    ledger = buffers.DecoderMemory(poll_s=60)  # woken by the release itself, not by a re-read of the memory
    asked = _availability(monkeypatch, 10)
    with ledger.reserve(6):
        second = _Reserving(ledger, 6)
        second.start()
        try:
            # it reads what is available under the ledger's lock, and holds it until it waits or goes in: held()
            # answers once it has done either
            while second.name not in asked:
                assert second.is_alive()
                second.entered.wait(0.01)
            assert ledger.held() == 6
            assert not second.entered.is_set()
        except BaseException:
            second.finish()
            raise
    assert second.entered.wait(_WAIT_S)  # 6 fits in 10 once the first has given its 6 back
    assert ledger.held() == 6
    second.finish()
    assert second.error is None
    assert ledger.held() == 0


def test_a_waiting_need_goes_in_when_other_programs_free_memory(monkeypatch):
    ledger = buffers.DecoderMemory(poll_s=0.01)
    _availability(monkeypatch, 10, 10, 20)
    with ledger.reserve(6):
        second = _Reserving(ledger, 6)
        second.start()
        assert second.entered.wait(_WAIT_S)  # re-read: 20 - 6 fits it, the first still held
        assert ledger.held() == 12
        second.finish()
    assert second.error is None
    assert ledger.held() == 0


def test_a_need_too_big_even_alone_is_refused_without_waiting(monkeypatch):
    ledger = buffers.DecoderMemory(poll_s=0.01)
    _asked_once(monkeypatch, 10)
    with ledger.reserve(6):
        _asked_once(monkeypatch, 10)
        with pytest.raises(buffers.MemoryShort) as e:
            with ledger.reserve(17):  # more than 10 + the 6 held: the first's release cannot make room for it
                pass
        assert e.value.available == 10
        assert ledger.held() == 6
    _asked_once(monkeypatch, 10)
    with pytest.raises(buffers.MemoryShort):
        with ledger.reserve(11):  # nothing held: the plain check
            pass
    assert ledger.held() == 0


def test_a_waiting_need_is_checked_afresh_alone_and_refused_only_then(monkeypatch):
    ledger = buffers.DecoderMemory(poll_s=60)
    asked = _availability(monkeypatch, 10)
    with ledger.reserve(6):
        second = _Reserving(ledger, 8)  # 8 > 10 - 6: waits; 8 <= 10 + 6: might fit once the first is done
        second.start()
        while second.name not in asked:
            assert second.is_alive()
            second.entered.wait(0.01)
        assert ledger.held() == 6 and second.error is None
        _availability(monkeypatch, 7)  # the first's release gave back less than it held
    second.join(_WAIT_S)
    assert not second.is_alive() and not second.entered.is_set()
    assert isinstance(second.error, buffers.MemoryShort) and second.error.available == 7
    assert ledger.held() == 0


def test_a_waiter_holds_nothing_when_it_is_interrupted(monkeypatch):
    ledger = buffers.DecoderMemory(poll_s=0.01)

    def interrupted(meminfo=None):
        raise KeyboardInterrupt  # a Ctrl-C in the main thread as it waits

    _availability(monkeypatch, 10)
    with ledger.reserve(6):
        answers = iter([10])
        monkeypatch.setattr(buffers, "available_memory",
                            lambda meminfo=None: next(answers, None) or interrupted())
        with pytest.raises(KeyboardInterrupt):
            with ledger.reserve(6):
                pass
        assert ledger.held() == 6
    assert ledger.held() == 0


def test_a_reservation_is_given_back_when_its_block_raises(monkeypatch):
    ledger = buffers.DecoderMemory()
    _availability(monkeypatch, 10)
    with pytest.raises(ValueError):
        with ledger.reserve(6):
            raise ValueError("a damaged file")
    assert ledger.held() == 0
    with ledger.reserve(10):  # all of it again
        assert ledger.held() == 10


# read(): the same through the decoders


def _jpeg(path) -> None:
    buf = io.BytesIO()
    Image.fromarray(_RGB).save(buf, "JPEG", quality=90)
    path.write_bytes(buf.getvalue())


def _need(path) -> int:
    with reader._opened(path) as (fh, fmt):
        return reader._plan(fh, fmt, path, None).decoder_memory()[0]


def test_a_second_read_waits_while_the_first_decodes_and_reads_once_it_is_done(tmp_path, monkeypatch):
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    _jpeg(a)
    _jpeg(b)
    need = _need(a)
    asked = _availability(monkeypatch, need + need // 2)  # room for one decode, not two
    real_load, decoding, go, loaded = ImageFile.ImageFile.load, threading.Event(), threading.Event(), []

    def load(image):
        loaded.append(threading.current_thread().name)
        if threading.current_thread().name == "read-a":
            decoding.set()
            go.wait(_WAIT_S)
        return real_load(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    results: dict[str, object] = {}

    def read(path, name: str) -> threading.Thread:
        def run() -> None:
            try:
                results[name] = reader.read(path, 400_000_000).pixels
            except BaseException as e:  # noqa: BLE001 - handed to the test
                results[name] = e
        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        return thread

    first = read(a, "read-a")
    try:
        assert decoding.wait(_WAIT_S)
        assert buffers.DECODERS.held() == need
        second = read(b, "read-b")
        while "read-b" not in asked:
            assert second.is_alive()
            decoding.wait(0.01)
        assert buffers.DECODERS.held() == need  # answered once read-b waits: it holds nothing, decodes nothing
        assert "read-b" not in loaded
    finally:
        go.set()
    first.join(_WAIT_S)
    second.join(_WAIT_S)
    assert not first.is_alive() and not second.is_alive()
    for name in ("read-a", "read-b"):
        assert isinstance(results[name], np.ndarray) and results[name].shape == (40, 50, 3), results[name]
    assert loaded.index("read-b") > loaded.index("read-a")
    assert buffers.DECODERS.held() == 0


def test_a_read_too_big_even_alone_is_refused_while_another_decodes(tmp_path, monkeypatch):
    path = tmp_path / "a.jpg"
    _jpeg(path)
    need = _need(path)
    _availability(monkeypatch, need)
    with buffers.DECODERS.reserve(1000):  # as a decode in another thread holds it
        _asked_once(monkeypatch, need - 1001)
        with pytest.raises(NoMemory) as e:
            reader.read(path, 400_000_000)  # need > available + 1000: nothing to wait for
        assert e.value.reason.endswith(f"; {reader._bytes(need - 1001)} available now: not read")
        assert buffers.DECODERS.held() == 1000
    assert buffers.DECODERS.held() == 0


@pytest.mark.parametrize("error, reason", [(OSError("broken data stream"), "cannot read JPEG: broken data stream"),
                                           (MemoryError(), "not enough memory to decode this JPEG")])
def test_a_decode_that_raises_gives_its_reservation_back(tmp_path, monkeypatch, error, reason):
    path = tmp_path / "a.jpg"
    _jpeg(path)
    need = _need(path)
    _availability(monkeypatch, need)

    def load(image):
        assert buffers.DECODERS.held() == need
        raise error

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    with pytest.raises(ImageError) as e:
        reader.read(path, 400_000_000)
    assert e.value.reason == reason
    assert buffers.DECODERS.held() == 0
    monkeypatch.undo()
    _availability(monkeypatch, need)
    assert reader.read(path, 400_000_000).pixels.shape == (40, 50, 3)  # all of it free again: read



# one landing in a generator's close is printed, not raised, as Python does; the decode then goes on
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_ctrl_c_before_the_decode_starts_leaves_no_reservation_held(tmp_path, monkeypatch):
    """A Ctrl-C in the main thread raises KeyboardInterrupt where its handler runs: as a Python function is entered
    (its first instruction, where CPython runs signal handlers). Wherever it lands in read() before the decode starts
    (threading's own functions aside: a lock's Python-level bookkeeping is no more safe there than anywhere), nothing
    stays reserved: a reservation left held for good would make every later need in the process wait for a release
    that never comes, or be refused."""
    path = tmp_path / "a.jpg"
    _jpeg(path)
    _availability(monkeypatch, 1 << 40)
    ledger = buffers.DecoderMemory(poll_s=0.01)
    monkeypatch.setattr(buffers, "DECODERS", ledger)  # a failure here must not leave the process's ledger held
    real_load, decoding = ImageFile.ImageFile.load, []

    def load(image):
        decoding.append(1)
        return real_load(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    landed, calls = 0, 0
    while calls >= landed:  # the Ctrl-C on entering the first function, then the second, ... until the decode starts
        landed, calls = landed + 1, 0
        decoding.clear()

        def interrupt(frame, event, arg):
            nonlocal calls
            if event == "call" and not decoding and frame.f_code.co_filename != threading.__file__:
                calls += 1
                if calls == landed:
                    raise KeyboardInterrupt
            return None

        sys.settrace(interrupt)
        try:
            reader.read(path, 400_000_000)
        except KeyboardInterrupt:
            pass
        finally:
            sys.settrace(None)
        other = threading.Thread(target=ledger.held, daemon=True)  # its lock free, not only its count
        other.start()
        other.join(_WAIT_S)
        assert not other.is_alive() and ledger.held() == 0, f"held after a Ctrl-C on entering call {landed}"
    assert landed > 30  # the calls before the decode were all tried
