from multidict import CIMultiDict

from gateway.web.headers import end_to_end


def test_hop_by_hop_and_connection_named_headers_are_dropped():
    headers = CIMultiDict(
        [
            ("Connection", "keep-alive, X-Private"),
            ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"),
            ("Trailer", "X-Checksum"),
            ("TE", "trailers"),
            ("Upgrade", "h2c"),
            ("Proxy-Authorization", "Basic x"),
            ("X-Private", "1"),
            ("anki-sync", '{"v":11}'),
            ("anki-original-size", "42"),
            ("Content-Type", "application/octet-stream"),
            ("Host", "example.com"),
        ]
    )
    out = end_to_end(headers, {"Host"})
    assert sorted(out.keys()) == ["Content-Type", "anki-original-size", "anki-sync"]


def test_repeated_headers_are_kept():
    out = end_to_end(CIMultiDict([("X-A", "1"), ("X-A", "2")]))
    assert out.getall("X-A") == ["1", "2"]
