"""Benchmarks behind ``sagelab bench`` (and ``sagelab soak``): each module runs one kind.

``transport`` (sessions streaming to the scripted agent), ``network`` (emulated networks),
``pipeline`` (the offline agent's voice-to-voice and capacity), ``accuracy`` (WER of the
bundled speech set), ``scenarios`` (``sagelab bench run``: scenario files and a report) and
``soak`` (hours of sessions: memory and descriptors). ``serverproc`` starts the server in its
own process so its CPU is measured alone; ``stats`` holds the shared percentiles.

Micro-benchmarks of single functions (decoders, dispatch) live in the repository's
``benchmarks/`` folder and are not part of the package.
"""
