"""Reading the answers of outbound HTTP calls (the coordinator, the results API) within a size limit."""

from __future__ import annotations

import aiohttp


class BodyTooLarge(ValueError):
    """The answer's body is larger than the caller accepts."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"response body over {limit} bytes")
        self.limit = limit


async def read_body(resp: aiohttp.ClientResponse, limit: int, *, truncate: bool = False) -> bytes:
    """The whole body of ``resp``, or BodyTooLarge as soon as it is known to be over ``limit`` bytes (the
    rest is not read); with ``truncate``, its first ``limit`` bytes instead. One ``content.read(n)`` is
    not the body: it returns what happens to be buffered (64 KiB, say) and leaves the rest unread."""
    if not truncate and resp.content_length is not None and resp.content_length > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_any():
        if size + len(chunk) > limit:
            if not truncate:
                raise BodyTooLarge(limit)
            chunks.append(chunk[: limit - size])
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
