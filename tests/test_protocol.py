import json

import pytest
import zstandard

from gateway import protocol
from gateway.errors import BadRequest, ClientTooOld, PayloadTooLarge


def z(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def z_streamed(data: bytes) -> bytes:
    """A frame without content size, as the Anki client sends it."""
    out = zstandard.ZstdCompressor().compressobj()
    return out.compress(data) + out.flush()


def test_an_empty_username_or_password_is_well_formed_for_the_provider_to_refuse():
    # The stock server answers 403 for these; a 400 would make Anki say "Check Database".
    for payload in ({"u": "a", "p": ""}, {"u": "   ", "p": "x"}, {"u": "", "p": ""}):
        username, password = protocol.decode_login(z_streamed(json.dumps(payload).encode()))
        assert (username, password) == (payload["u"].strip(), payload["p"])


def test_login_body_round_trips_and_username_is_stripped():
    body = z_streamed(json.dumps({"u": "  alice@example.com\n", "p": " pw "}).encode())
    assert protocol.decode_login(body) == ("alice@example.com", " pw ")


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[1, 2]",
        b'{"u": "a"}',
        b'{"u": 1, "p": "x"}',
        b'{"u": "a", "p": null}',
        b"\xff\xfe",
    ],
)
def test_malformed_login_bodies_are_bad_requests(payload):
    with pytest.raises(BadRequest):
        protocol.decode_login(z(payload))


def test_login_body_that_is_not_zstd_is_a_bad_request():
    with pytest.raises(BadRequest):
        protocol.decode_login(b'{"u": "a", "p": "b"}')


def test_zstd_bomb_is_refused_without_inflating_it():
    bomb = z_streamed(b"\0" * (50 * 1024 * 1024))
    assert len(bomb) < protocol.MAX_LOGIN_COMPRESSED
    with pytest.raises(PayloadTooLarge):
        protocol.decode_login(bomb)


def test_inflate_reads_at_most_one_byte_past_the_cap():
    # The decompressor must not produce the whole 50 MB: bounded output is the point.
    import tracemalloc

    bomb = z_streamed(b"a" * (50 * 1024 * 1024))
    tracemalloc.start()
    with pytest.raises(PayloadTooLarge):
        protocol.inflate(bomb, 4096)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 5 * 1024 * 1024


def test_oversized_compressed_login_body_is_refused():
    with pytest.raises(PayloadTooLarge):
        protocol.decode_login(b"x" * (protocol.MAX_LOGIN_COMPRESSED + 1))


def test_answer_carries_original_size_of_uncompressed_json():
    body, headers = protocol.encode_answer({"key": "abc"})
    raw = zstandard.ZstdDecompressor().decompress(body)
    assert json.loads(raw) == {"key": "abc"}
    assert headers[protocol.ORIGINAL_SIZE] == str(len(raw))


def test_sync_header_parses_all_four_fields():
    h = protocol.parse_sync_header('{"v":11,"k":"abc","c":"26.9","s":"xyz"}')
    assert (h.version, h.key, h.client, h.session) == (11, "abc", "26.9", "xyz")
    assert json.loads(h.for_upstream("")) == {"v": 11, "k": "", "c": "26.9", "s": "xyz"}


def test_missing_sync_header_means_a_legacy_client():
    with pytest.raises(ClientTooOld):
        protocol.parse_sync_header(None)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "nope",
        "[]",
        '{"v":11,"k":"a","c":"c"}',
        '{"v":"11","k":"a","c":"c","s":"s"}',
        '{"v":true,"k":"a","c":"c","s":"s"}',
        '{"v":11,"k":5,"c":"c","s":"s"}',
        '{"v":11,"k":"a\\u0000b","c":"c","s":"s"}',
        '{"v":11,"k":"é","c":"c","s":"s"}',
        '{"v":11,"k":"' + "a" * 2000 + '","c":"c","s":"s"}',
        # A session of 900 non-ASCII characters fits the header's 1024 characters but escaped
        # to a lease file past what the store read back: no lease, a second sync let in.
        '{"v":11,"k":"a","c":"c","s":"' + "é" * 900 + '"}',
        '{"v":11,"k":"a","c":"c","s":"a\\u0007b"}',
        '{"v":11,"k":"a","c":"c","s":"\\ud83d\\ude00"}',
    ],
)
def test_bad_sync_headers_are_bad_requests(raw):
    with pytest.raises(BadRequest):
        protocol.parse_sync_header(raw)


@pytest.mark.parametrize("version", [-1, 0, 7, 12, 999, 2**40])
def test_sync_versions_the_stock_server_refuses_are_bad_requests(version):
    # Measured on the stock server: 400 to hostKey and meta alike for these.
    with pytest.raises(BadRequest, match="unsupported sync version"):
        protocol.parse_sync_header(f'{{"v":{version},"k":"","c":"c","s":"s"}}')


@pytest.mark.parametrize("version", [8, 9, 10, 11])
def test_sync_versions_the_stock_server_accepts_parse(version):
    assert (
        protocol.parse_sync_header(f'{{"v":{version},"k":"","c":"c","s":"s"}}').version == version
    )


@pytest.mark.parametrize(
    ("method", "twice"),
    [
        ("sync/meta", True),
        ("msync/begin", True),
        ("msync/mediaChanges", True),
        ("msync/downloadFiles", True),
        ("msync/mediaSanity", True),
        ("sync/start", False),
        ("sync/applyGraves", False),
        ("sync/applyChanges", False),
        ("sync/chunk", False),  # hands out the next chunk: a replay would skip one
        ("sync/applyChunk", False),
        ("sync/sanityCheck2", False),
        ("sync/finish", False),
        ("sync/abort", False),
        ("sync/upload", False),
        ("sync/download", False),
        ("msync/uploadChanges", False),
        ("sync/somethingNew", False),
        ("msync/meta", False),
    ],
)
def test_only_read_only_methods_may_be_sent_twice(method, twice):
    assert protocol.may_send_twice(method) is twice


@pytest.mark.parametrize(
    ("keys", "admitted"),
    [([], "abc"), (["abc"], "abc"), (["abc", "abc"], "abc")],
)
def test_query_keys_equal_to_the_admitted_one_pass(keys, admitted):
    protocol.check_query_keys(keys, admitted)


@pytest.mark.parametrize(
    "keys", [["abd"], [""], ["abc", "abd"], ["abd", "abc"], ["abc\udcff"], ["ABC"], ["abc "]]
)
def test_a_query_key_other_than_the_admitted_one_is_a_bad_request(keys):
    with pytest.raises(BadRequest):
        protocol.check_query_keys(keys, "abc")
