"""The conversation core, sans I/O: plain objects that take inputs with an explicit time and
return actions. Sockets, tasks, threads and clocks live in the adapters (``sagelab.server``,
``sagelab.agents``); these objects decide."""
