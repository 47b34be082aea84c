"""Load tests with locust: many concurrent voice sessions streaming real-time speech.

The locust users live in ``loadtests/locustfile.py`` (locust loads them by path, in its own
processes, because it gevent-patches the standard library); everything that needs neither
locust nor gevent lives here, so it is unit-tested and reused:

* :mod:`~sagelab.loadtest.mic`: what users say, encoded once (PCM16 chunks, or one WebM/Opus
  stream per relay session);
* :mod:`~sagelab.loadtest.wire`: endpoints, signed URLs, reading frames without decoding audio;
* :mod:`~sagelab.loadtest.measure`: the metrics, per turn and per frame, and the raw log;
* :mod:`~sagelab.loadtest.summary`: raw logs → percentiles, error rate, stutter; the budget;
* :mod:`~sagelab.loadtest.steps`: the capacity search's staircase and per-step verdicts;
* :mod:`~sagelab.loadtest.plots`: latency, stutter, errors and server load over time;
* :mod:`~sagelab.loadtest.locustproc`: locust as child processes (standalone or distributed);
* :mod:`~sagelab.loadtest.serverconf`: an agents file with auth on, for ``--signed-url``;
* :mod:`~sagelab.loadtest.runner`: ``sagelab loadtest`` end to end.
"""
