"""Load tests with locust: many concurrent ConvAI sessions streaming real-time speech.

The locust ``User`` lives in ``loadtests/locustfile.py`` (locust loads it by path); the parts
that need no locust or gevent live here so they can be unit-tested and reused:
:mod:`sagelab.loadtest.measure` (microphone loop, per-turn measurements, raw log) and
:mod:`sagelab.loadtest.runner` (``sagelab loadtest``: server, locust subprocess, summary).
"""
