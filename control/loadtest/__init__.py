"""``parley load-test``: real WebRTC peers against a Parley server (like ``lk load-test``).

- :mod:`control.loadtest.clip`: VP8/Opus encoded once per run;
- :mod:`control.loadtest.replay`: tracks that replay those packets (no encoder per peer);
- :mod:`control.loadtest.peer`: a publisher or subscriber (pymediasoup + aiortc), the
  subscriber counting packets instead of decoding;
- :mod:`control.loadtest.stats`: sequence gaps, bitrate, key frames, percentiles;
- :mod:`control.loadtest.runner`: the run, the loopback guard, the report.

It needs the WebRTC client stack (``pymediasoup``, ``aiortc``: the ``test`` extra).

Import :mod:`control.loadtest.runner` for the API; this package's ``__init__`` and
:mod:`control.loadtest.command` (the CLI's arguments) import nothing heavy, so ``parley``
starts without the WebRTC stack.
"""
