"""Dominant speaker detection over the router's audio (mediasoup's ``ActiveSpeakerObserver``).

The worker runs the Dominant Speaker Identification algorithm on the
ssrc-audio-level header extension of the producers' packets and notifies
each change of dominant speaker. With a single producer observed, that
producer is dominant at once (no audio needed); among several, a speaker
has to out-talk the current one over the algorithm's short, medium and long
windows.

Events: ``dominantspeaker`` (``{"producer": Producer}``), ``routerclose``.
Observer: the base's plus ``dominantspeaker``.
"""

from __future__ import annotations

from typing import Any

from loguru import logger

from workers.fbs import FBS  # noqa: F401  (puts the generated bindings on sys.path)
from workers.fbs_utils import body_as
from workers.rtp_observer import RtpObserver

import FBS.ActiveSpeakerObserver.DominantSpeakerNotification as FbsDominantSpeaker
import FBS.Notification.Event as FbsEvent


class ActiveSpeakerObserver(RtpObserver):
    type = "activespeaker"

    def _on_notification(self, event: int, notification: Any) -> None:
        if event != FbsEvent.Event.ACTIVESPEAKEROBSERVER_DOMINANT_SPEAKER:
            logger.error("ignoring unknown ActiveSpeakerObserver event {}", event)
            return
        body = body_as(notification, FbsDominantSpeaker.DominantSpeakerNotification)
        producer = self.get_producer(body.ProducerId().decode())
        if producer is None:
            return
        dominant_speaker = {"producer": producer}
        self.safe_emit("dominantspeaker", dominant_speaker)
        self.observer.safe_emit("dominantspeaker", dominant_speaker)
