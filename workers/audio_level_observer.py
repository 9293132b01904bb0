"""Loudest producers of the router, every interval (mediasoup's ``AudioLevelObserver``).

The worker averages the ssrc-audio-level header extension of each observed
producer over ``interval`` ms (a producer needs at least 10 packets in it)
and notifies the ``max_entries`` loudest whose average is at or above
``threshold`` dBov; when none is, it notifies silence once.

Events: ``volumes`` (list of ``{"producer": Producer, "volume": int}``,
loudest first, volume in dBov from -127 to 0), ``silence``, ``routerclose``.
Observer: the base's plus ``volumes`` and ``silence``.
"""

from __future__ import annotations

from typing import Any

from loguru import logger

from workers.fbs import FBS  # noqa: F401  (puts the generated bindings on sys.path)
from workers.fbs_utils import body_as
from workers.rtp_observer import RtpObserver

import FBS.AudioLevelObserver.VolumesNotification as FbsVolumesNotification
import FBS.Notification.Event as FbsEvent


class AudioLevelObserver(RtpObserver):
    type = "audiolevel"

    def _on_notification(self, event: int, notification: Any) -> None:
        Event = FbsEvent.Event
        if event == Event.AUDIOLEVELOBSERVER_VOLUMES:
            volumes = self._parse_volumes(body_as(notification, FbsVolumesNotification.VolumesNotification))
            if volumes:
                self.safe_emit("volumes", volumes)
                self.observer.safe_emit("volumes", volumes)
        elif event == Event.AUDIOLEVELOBSERVER_SILENCE:
            self.safe_emit("silence")
            self.observer.safe_emit("silence")
        else:
            logger.error("ignoring unknown AudioLevelObserver event {}", event)

    def _parse_volumes(self, body: Any) -> list[dict[str, Any]]:
        """Entries whose producer still exists (it may have closed meanwhile)."""
        volumes = []
        for index in range(body.VolumesLength()):
            entry = body.Volumes(index)
            producer = self.get_producer(entry.ProducerId().decode())
            if producer is not None:
                volumes.append({"producer": producer, "volume": entry.Volume()})
        return volumes
