"""WebSocket signaling: protoo framing (``protoo``), request payloads (``messages``)
and the aiohttp endpoint (``server``). Rooms and peers live in ``control.rooms``."""
