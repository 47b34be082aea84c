"""Close codes the bundled server uses, and when (the table is in docs/protocols.md).

They follow the ElevenLabs contract (1000/1002/1008/1011) and RFC 6455 where the contract is
silent (1001 going away, 1009 too big, 1013 try again later); the relay keeps its own 4000/4001,
and 4002 refuses a resume (``sagelab.server.resume``).
Before any error close, a ConvAI session gets an ``error`` event saying what went wrong.
"""

NORMAL = 1000  # the conversation ended: client or agent hung up, or max duration reached
GOING_AWAY = 1001  # the server is shutting down
OPERATIONAL = 1002  # idle timeout (transport_receive_timeout), pipeline error, tool failure loop
# Malformed frame, missing/mistyped field, bad initiation, unknown agent, auth; also policy:
# audio or message floods (audio_rate_exceeded, message_rate_exceeded) and slow readers.
INVALID_INPUT = 1008
TOO_BIG = 1009  # a frame larger than max_frame_bytes
INTERNAL = 1011  # a bug in sagelab: the session ends, the server keeps serving
TRY_AGAIN_LATER = 1013  # over capacity (max_sessions, or the API key's own limit)

RELAY_MISSING_DETAIL_ID = 4000
RELAY_SESSION_FAILED = 4001
# Both protocols (a sagelab extension): a resume token that is unknown, expired, already used,
# or presented for another agent, key or conversationDetailId. Start a new conversation.
RESUME_REFUSED = 4002
