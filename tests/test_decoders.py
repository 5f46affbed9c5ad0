"""The pool of idle zstd decoders (decoders.py): reuse, and what it refuses to keep."""

from __future__ import annotations

import zstandard

from gateway.uploads.decoders import MIB, DecoderPool


def streamed(data: bytes, window_log: int | None = None) -> bytes:
    """One frame without content size (as the Anki client sends it), optionally with a window
    of 2**window_log bytes."""
    if window_log is None:
        compressor = zstandard.ZstdCompressor(level=3, write_content_size=False)
    else:
        params = zstandard.ZstdCompressionParameters.from_level(
            3, window_log=window_log, write_content_size=False
        )
        compressor = zstandard.ZstdCompressor(compression_params=params)
    out = compressor.compressobj()
    return out.compress(data) + out.flush()


def inflate(decoder: zstandard.ZstdDecompressor, body: bytes) -> bytes:
    out: list[bytes] = []

    class Sink:
        def write(self, data: bytes) -> int:
            out.append(bytes(data))
            return len(data)

    decoder.stream_writer(Sink(), write_return_read=True).write(body)
    return b"".join(out)


def test_a_decoder_given_back_after_a_small_body_serves_the_next_one_correctly():
    pool = DecoderPool()
    decoder = pool.take()
    # Given back mid-frame (a client went away): the next body still inflates right.
    assert inflate(decoder, streamed(b"first " * 100)[:20]) == b""
    assert pool.give(decoder, 100) and len(pool) == 1
    again = pool.take()
    assert again is decoder and len(pool) == 0
    assert inflate(again, streamed(b"second " * 100)) == b"second " * 100


def test_a_decoder_that_met_a_large_window_is_not_kept():
    pool = DecoderPool()
    decoder = pool.take()
    inflate(decoder, streamed(b"\0" * 1024, window_log=27))  # declares 128 MiB, inflates 1 KiB
    assert decoder.memory_size() > 100 * MIB
    assert not pool.give(decoder, 1024) and len(pool) == 0


def test_an_honest_streamed_frame_keeps_its_decoder():
    pool = DecoderPool()
    decoder = pool.take()
    inflate(decoder, streamed(b'{"v":11}' * 100))  # level 3 without a size: 2 MiB window
    assert pool.give(decoder, 800)


def test_a_decoder_whose_body_inflated_much_is_not_kept():
    pool = DecoderPool(max_inflated=1000)
    assert not pool.give(pool.take(), 1001)
    assert pool.give(pool.take(), 1000)


def test_at_most_keep_decoders_wait_idle():
    pool = DecoderPool(keep=2)
    decoders = [pool.take() for _ in range(3)]
    assert [pool.give(d, 0) for d in decoders] == [True, True, False]
    assert len({id(pool.take()), id(pool.take()), id(pool.take())}) == 3
