"""Sans-I/O codecs for the two WebSocket protocols sagelab speaks.

:mod:`sagelab.protocol.convai` is the ElevenLabs Conversational AI protocol and
:mod:`sagelab.protocol.relay` the browser-facing relay protocol. Neither touches a socket, so the
server, the client and the tests share one definition of every frame.
"""

from sagelab.protocol.errors import ProtocolError

__all__ = ["ProtocolError"]
