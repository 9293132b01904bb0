"""Rooms and peers: mediasoup-demo's Room semantics over ``workers``.

- ``manager``: RoomManager (rooms by id, WebRtcServer per worker, ``rooms_ctx``)
- ``room``: Room (peers, routers, consumers, worker-death rebuild, spreading)
- ``peer``: Peer and its ParticipantMetadata
- ``broadcasters``: the demo's broadcaster REST API (``/rooms/...``)
"""
