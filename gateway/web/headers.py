"""Which headers pass a proxy, as Go's httputil.ReverseProxy decides (RFC 9110 §7.6.1). Pure.

end_to_end(headers, also_drop=()) -> CIMultiDict   all but the hop-by-hop headers, every
                                                   header `Connection` names, and `also_drop`
HOP_BY_HOP                                         the hop-by-hop names (the header is
                                                   `Trailer`, not `Trailers`)
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from multidict import CIMultiDict, MultiMapping

HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Proxy-Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
    )
)
#: Not hop-by-hop, but owned by each side's own HTTP stack (dropped when forwarding).
REQUEST_OWNED = frozenset({"host", "expect"})
RESPONSE_OWNED = frozenset({"date", "server"})


def end_to_end(headers: MultiMapping[str], also_drop: Iterable[str] = ()) -> CIMultiDict[str]:
    """The headers a proxy forwards: all but hop-by-hop ones and those `Connection` names."""
    drop = _dropped(frozenset(also_drop))
    if "Connection" in headers:
        named = {
            token.strip().lower()
            for value in headers.getall("Connection", ())
            for token in value.split(",")
        }
        drop = drop | named
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in drop:
            out.add(name, value)
    return out


@functools.lru_cache(maxsize=16)
def _dropped(also_drop: frozenset[str]) -> frozenset[str]:
    """`HOP_BY_HOP` and `also_drop`, lower-cased, made once per set of names (every request
    passes here twice: issue 18)."""
    return HOP_BY_HOP | {h.lower() for h in also_drop}
