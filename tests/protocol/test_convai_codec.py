"""ConvAI codec: round trips, robustness against garbage, and conformance with the official SDK.

The frames in the "reference examples" tests are copied verbatim from the ConvAI protocol
reference; the conformance tests feed frames produced by (and to) the
installed elevenlabs 2.78.0 SDK code, so a drift in either direction shows up here.
"""

import json
from typing import Any, get_args

import pytest
from elevenlabs.conversational_ai.conversation import (
    BaseConversation,
    ContextualUpdateClientToOrchestratorEvent,
    ConversationInitiationData,
    MultimodalMessageClientToOrchestratorEvent,
    UserActivityClientToOrchestratorEvent,
    UserMessageClientToOrchestratorEvent,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from sagelab.protocol import ProtocolError
from sagelab.protocol import convai as c

ERROR_TYPES = {"invalid_message", "missing_fields", "value_error", "unknown_message_type"}

# ------------------------------------------------------------------------------------------------
# Strategies

text = st.text(max_size=20)
ints = st.integers(min_value=-(2**63), max_value=2**63)
floats = st.floats(allow_nan=False, allow_infinity=False)
json_scalars = st.none() | st.booleans() | ints | floats | text
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(text, children, max_size=3),
    max_leaves=8,
)
json_objects = st.dictionaries(text, json_values, max_size=3)
numbers = ints | floats
audio_formats = st.sampled_from(get_args(c.AudioFormatName))
part_types = st.sampled_from(["start", "delta", "stop"])


def opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


overrides = st.builds(
    c.ConversationConfigOverride,
    agent=opt(
        st.builds(
            c.AgentOverride,
            first_message=opt(text),
            language=opt(text),
            max_conversation_duration_message=opt(text),
            prompt=opt(
                st.builds(
                    c.PromptOverride,
                    prompt=opt(text),
                    llm=opt(text),
                    reasoning_effort=opt(text),
                    tool_ids=opt(st.lists(text, max_size=3)),
                    tool_ids_strict=opt(st.booleans()),
                    native_mcp_server_ids=opt(st.lists(text, max_size=3)),
                    knowledge_base=opt(st.lists(json_objects, max_size=2)),
                )
            ),
        )
    ),
    tts=opt(
        st.builds(
            c.TtsOverride,
            voice_id=opt(text),
            model_id=opt(text),
            stability=opt(floats),
            speed=opt(floats),
            similarity_boost=opt(floats),
            clone_strength=opt(floats),
            supported_voices=opt(st.lists(json_objects, max_size=2)),
            pronunciation_dictionary_locators=opt(st.lists(json_objects, max_size=2)),
        )
    ),
    asr=opt(st.builds(c.AsrOverride, keywords=opt(st.lists(text, max_size=3)))),
    turn=opt(
        st.builds(
            c.TurnOverride,
            soft_timeout_config=opt(json_objects),
            noisy_environment_message=opt(text),
        )
    ),
    conversation=opt(
        st.builds(
            c.ConversationOverride,
            text_only=opt(st.booleans()),
            max_duration_seconds=opt(ints),
            client_events=opt(st.lists(text, max_size=3)),
        )
    ),
    text_only=opt(st.booleans()),
)

CLIENT_STRATEGIES: dict[type[Any], st.SearchStrategy[Any]] = {
    c.UserAudioChunk: st.builds(c.UserAudioChunk, audio=st.binary(max_size=64)),
    c.ConversationInitiationClientData: st.builds(
        c.ConversationInitiationClientData,
        custom_llm_extra_body=json_objects,
        conversation_config_override=overrides,
        dynamic_variables=st.dictionaries(text, text | ints | floats | st.booleans(), max_size=3),
        source_info=opt(st.builds(c.SourceInfo, source=opt(text), version=opt(text))),
        user_id=opt(text),
        tool_mock_config=opt(json_objects),
        branch_id=opt(text),
        environment=opt(text),
        starting_workflow_node_id=opt(text),
        procedure_ids=opt(st.lists(text, max_size=3)),
        start_procedure_ids=opt(st.lists(text, max_size=3)),
    ),
    c.Pong: st.builds(c.Pong, event_id=ints),
    c.ClientToolResult: st.builds(
        c.ClientToolResult, tool_call_id=text, result=json_values, is_error=st.booleans()
    ),
    c.UserMessage: st.builds(c.UserMessage, text=opt(text), rich_content_id=opt(text)),
    c.ContextualUpdate: st.builds(c.ContextualUpdate, text=text, context_id=opt(text)),
    c.UserActivity: st.builds(c.UserActivity),
    c.Feedback: st.builds(
        c.Feedback, score=st.sampled_from([None, "like", "dislike"]), event_id=ints
    ),
    c.McpToolApprovalResult: st.builds(
        c.McpToolApprovalResult, tool_call_id=text, is_approved=st.booleans()
    ),
    c.MultimodalMessage: st.builds(
        c.MultimodalMessage,
        text=opt(st.builds(c.MultimodalText, text=text)),
        file=opt(st.builds(c.FileInput, file_id=text)),
        files=opt(st.lists(st.builds(c.FileInput, file_id=text), max_size=3)),
    ),
    c.SagelabHeard: st.builds(
        c.SagelabHeard, event_id=ints, played_ms=st.integers(0, 10**6), text=opt(text)
    ),
}

KNOWN_SERVER_TYPES = {m.type for m in get_args(c.ServerMessage) if m is not c.UnknownServerMessage}
unknown_types = text.filter(lambda t: t not in KNOWN_SERVER_TYPES)
tool_response_fields = {
    "tool_name": text,
    "tool_call_id": text,
    "tool_type": st.sampled_from(["client", "system", "webhook", "mcp"]) | text,
    "is_error": st.booleans(),
    "is_called": st.booleans(),
    "event_id": ints,
}

SERVER_STRATEGIES: dict[type[Any], st.SearchStrategy[Any]] = {
    c.ConversationInitiationMetadata: st.builds(
        c.ConversationInitiationMetadata,
        conversation_id=text,
        agent_output_audio_format=audio_formats,
        user_input_audio_format=audio_formats,
    ),
    c.Ping: st.builds(c.Ping, event_id=ints, ping_ms=opt(ints)),
    c.AudioEvent: st.builds(
        c.AudioEvent,
        audio=st.binary(max_size=64),
        event_id=ints,
        alignment=opt(
            st.builds(
                c.Alignment,
                chars=st.lists(text, max_size=4),
                char_start_times_ms=st.lists(numbers, max_size=4),
                char_durations_ms=st.lists(numbers, max_size=4),
            )
        ),
        is_final=opt(st.booleans()),
    ),
    c.AgentResponse: st.builds(c.AgentResponse, agent_response=text, event_id=ints),
    c.AgentResponseCorrection: st.builds(
        c.AgentResponseCorrection,
        original_agent_response=text,
        corrected_agent_response=text,
        event_id=ints,
    ),
    c.AgentChatResponsePart: st.builds(
        c.AgentChatResponsePart, text=text, part_type=part_types, event_id=ints
    ),
    c.AgentReasoningResponsePart: st.builds(
        c.AgentReasoningResponsePart, text=text, part_type=part_types, event_id=text
    ),
    c.UserTranscript: st.builds(c.UserTranscript, user_transcript=text, event_id=ints),
    c.TentativeUserTranscript: st.builds(
        c.TentativeUserTranscript, user_transcript=text, event_id=ints
    ),
    c.InternalTentativeAgentResponse: st.builds(
        c.InternalTentativeAgentResponse, tentative_agent_response=text
    ),
    c.InternalTurnProbability: st.builds(c.InternalTurnProbability, turn_probability=floats),
    c.Interruption: st.builds(c.Interruption, event_id=ints),
    c.SagelabStage: st.builds(c.SagelabStage, event_id=ints, stage=text, ms=floats),
    c.ClientToolCall: st.builds(
        c.ClientToolCall,
        tool_name=text,
        tool_call_id=text,
        parameters=json_objects,
        event_id=ints,
    ),
    c.VadScore: st.builds(c.VadScore, vad_score=floats),
    c.AgentToolRequest: st.builds(
        c.AgentToolRequest, tool_name=text, tool_call_id=text, tool_type=text, event_id=ints
    ),
    c.AgentToolResponse: st.builds(c.AgentToolResponse, **tool_response_fields),
    c.AgentToolResponseFullPayload: st.builds(
        c.AgentToolResponseFullPayload,
        full_tool_result=text,
        is_blocked=st.booleans(),
        truncated=st.booleans(),
        **tool_response_fields,
    ),
    c.McpToolCall: st.builds(
        c.McpToolCall,
        service_id=text,
        tool_call_id=text,
        tool_name=text,
        tool_description=opt(text),
        parameters=json_objects,
        timestamp=text,
        state=st.sampled_from(["loading", "awaiting_approval", "success", "failure"]),
        approval_timeout_secs=opt(ints),
        result=opt(st.lists(json_objects, max_size=2)),
        error_message=opt(text),
    ),
    c.McpConnectionStatus: st.builds(
        c.McpConnectionStatus,
        integrations=st.lists(
            st.builds(
                c.McpIntegration,
                integration_id=text,
                integration_type=st.sampled_from(["mcp_server", "mcp_integration"]),
                is_connected=st.booleans(),
                tool_count=ints,
            ),
            max_size=3,
        ),
    ),
    c.ContextUsage: st.builds(
        c.ContextUsage, event_id=ints, model=text, context_tokens=ints, context_limit_tokens=ints
    ),
    c.AsrInitiationMetadata: st.builds(c.AsrInitiationMetadata, metadata=json_objects),
    c.RichContent: st.builds(
        c.RichContent, rich_content_id=text, component=text, props=json_objects, event_id=ints
    ),
    c.GuardrailTriggered: st.builds(c.GuardrailTriggered),
    c.AgentTyping: st.builds(c.AgentTyping, is_typing=st.booleans(), duration_ms=opt(ints)),
    c.ExternalAgentConnected: st.builds(c.ExternalAgentConnected),
    c.ExternalAgentDisconnected: st.builds(c.ExternalAgentDisconnected),
    c.ErrorEvent: st.builds(
        c.ErrorEvent,
        code=st.sampled_from([1000, 1002, 1008, 1011]) | ints,
        message=opt(text),
        error_type=opt(text),
        reason=opt(text),
        debug_message=opt(text),
        details=json_values,
    ),
    c.UnknownServerMessage: st.builds(
        lambda t, extra: c.UnknownServerMessage(type=t, raw={**extra, "type": t}),
        unknown_types,
        json_objects,
    ),
}

client_messages = st.one_of(list(CLIENT_STRATEGIES.values()))
server_messages = st.one_of(list(SERVER_STRATEGIES.values()))


def test_every_message_type_has_a_strategy() -> None:
    assert set(CLIENT_STRATEGIES) == set(get_args(c.ClientMessage))
    assert set(SERVER_STRATEGIES) == set(get_args(c.ServerMessage))


def test_type_tags_are_unique_and_class_level() -> None:
    client_tags = [m.type for m in get_args(c.ClientMessage)]
    server_tags = [m.type for m in SERVER_STRATEGIES if m is not c.UnknownServerMessage]
    assert len(set(client_tags)) == len(client_tags)
    assert len(set(server_tags)) == len(server_tags)
    assert c.Pong.type == "pong"
    assert c.AudioEvent.type == "audio"
    assert c.Pong(event_id=1).type == "pong"


# ------------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("model", list(CLIENT_STRATEGIES), ids=lambda m: m.__name__)
@settings(max_examples=60)
@given(data=st.data())
def test_client_round_trip(model: type, data: st.DataObject) -> None:
    msg = data.draw(CLIENT_STRATEGIES[model])
    frame = c.encode_client(msg)
    parsed = c.parse_client(frame)
    assert parsed == msg
    assert type(parsed) is model
    assert c.encode_client(parsed) == frame


@pytest.mark.parametrize("model", list(SERVER_STRATEGIES), ids=lambda m: m.__name__)
@settings(max_examples=60)
@given(data=st.data())
def test_server_round_trip(model: type, data: st.DataObject) -> None:
    msg = data.draw(SERVER_STRATEGIES[model])
    frame = c.encode_server(msg)
    parsed = c.parse_server(frame)
    assert parsed == msg
    assert type(parsed) is model
    assert c.encode_server(parsed) == frame
    assert json.loads(frame)["type"] == msg.type


# ------------------------------------------------------------------------------------------------
# Garbage in: only ProtocolError out


def check_client(frame: str | bytes) -> None:
    try:
        msg = c.parse_client(frame)
    except ProtocolError as exc:
        assert exc.error_type in ERROR_TYPES
        assert exc.field
        assert str(exc) == f"{exc.field}: {exc.problem}"
        return
    assert isinstance(msg, get_args(c.ClientMessage))
    assert c.parse_client(c.encode_client(msg)) == msg


def check_server(frame: str | bytes) -> None:
    try:
        msg = c.parse_server(frame)
    except ProtocolError as exc:
        assert exc.error_type in ERROR_TYPES - {"unknown_message_type"}
        assert exc.field
        return
    assert isinstance(msg, get_args(c.ServerMessage))
    assert c.parse_server(c.encode_server(msg)) == msg


any_text = st.text(st.characters(exclude_categories=()), max_size=60)
CLIENT_KEYS = sorted(
    {"type", "user_audio_chunk"}
    | {f for m in get_args(c.ClientMessage) for f in m.model_fields}
    | set(c.ConversationConfigOverride.model_fields)
)
SERVER_PAYLOADS = {
    m.type: m.payload_key for m in SERVER_STRATEGIES if m is not c.UnknownServerMessage
}
SERVER_FIELDS = sorted(
    {"audio_base_64", "type"} | {f for m in SERVER_STRATEGIES for f in m.model_fields}
)


def random_client_objects() -> st.SearchStrategy[dict[str, Any]]:
    keys = st.sampled_from(CLIENT_KEYS) | text
    types = st.sampled_from([m.type for m in get_args(c.ClientMessage)]) | text | json_values
    return st.builds(
        lambda t, rest, with_type: {**rest, "type": t} if with_type else rest,
        types,
        st.dictionaries(keys, json_values | st.just("AAAA"), max_size=5),
        st.booleans(),
    )


def random_server_objects() -> st.SearchStrategy[dict[str, Any]]:
    def build(name: str, payload: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        key = SERVER_PAYLOADS.get(name) or "payload"
        return {**extra, "type": name, key: payload}

    payloads = st.dictionaries(st.sampled_from(SERVER_FIELDS) | text, json_values, max_size=6)
    return st.builds(
        build,
        st.sampled_from(sorted(SERVER_PAYLOADS)) | text,
        payloads,
        st.dictionaries(text, json_values, max_size=2),
    )


def mutate(value: Any, data: st.DataObject, top: bool = True) -> Any:
    """Delete, replace or retype one node somewhere inside a decoded JSON frame.

    The frame object itself is never replaced wholesale: non-object frames have their own test.
    """
    if isinstance(value, dict) and value and (top or data.draw(st.booleans())):
        key = data.draw(st.sampled_from(sorted(value)))
        action = data.draw(st.sampled_from(["delete", "replace", "descend"]))
        copy = dict(value)
        if action == "delete":
            del copy[key]
        elif action == "replace":
            copy[key] = data.draw(json_values)
        else:
            copy[key] = mutate(copy[key], data, top=False)
        return copy
    if isinstance(value, list) and value and data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(value) - 1))
        return [*value[:i], mutate(value[i], data, top=False), *value[i + 1 :]]
    return data.draw(json_values)


def mutate_text(frame: str, data: st.DataObject) -> str:
    i = data.draw(st.integers(0, len(frame)))
    j = data.draw(st.integers(i, min(len(frame), i + 4)))
    return frame[:i] + data.draw(any_text.map(lambda s: s[:3])) + frame[j:]


@settings(max_examples=200)
@given(frame=any_text | st.binary(max_size=60))
def test_garbage_text_and_bytes(frame: str | bytes) -> None:
    check_client(frame)
    check_server(frame)


@settings(max_examples=200)
@given(value=json_values)
def test_arbitrary_json_values(value: Any) -> None:
    check_client(json.dumps(value))
    check_server(json.dumps(value))


@settings(max_examples=200)
@given(obj=random_client_objects())
def test_random_client_objects(obj: dict[str, Any]) -> None:
    check_client(json.dumps(obj))


@settings(max_examples=200)
@given(obj=random_server_objects())
def test_random_server_objects(obj: dict[str, Any]) -> None:
    check_server(json.dumps(obj))


@settings(max_examples=200)
@given(msg=client_messages, data=st.data())
def test_mutated_client_frames(msg: Any, data: st.DataObject) -> None:
    frame = c.encode_client(msg)
    check_client(json.dumps(mutate(json.loads(frame), data)))
    check_client(mutate_text(frame, data))


@settings(max_examples=200)
@given(msg=server_messages, data=st.data())
def test_mutated_server_frames(msg: Any, data: st.DataObject) -> None:
    frame = c.encode_server(msg)
    check_server(json.dumps(mutate(json.loads(frame), data)))
    check_server(mutate_text(frame, data))


@pytest.mark.parametrize(
    "frame",
    [
        "[" * 100_000,
        '{"type":"pong","event_id":' + "1" * 5000 + "}",
        '{"type":"pong","event_id":NaN}',
        '{"type":"vad_score","vad_score_event":{"vad_score":1e400}}',
        '{"type":"conversation_initiation_client_data","custom_llm_extra_body":'
        + "[" * 500
        + "]" * 500
        + "}",
        '{"type":"zzz","x":' + "[" * 500 + "]" * 500 + "}",
        '{"type":"pong","event_id":1}\x00',
        "",
    ],
    ids=[
        "deep",
        "huge-int",
        "nan",
        "inf",
        "deep-valid-client",
        "deep-valid-server",
        "nul",
        "empty",
    ],
)
def test_pathological_frames(frame: str) -> None:
    check_client(frame)
    check_server(frame)


# ------------------------------------------------------------------------------------------------
# Specific errors


def error_of(parse: Any, frame: str | bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse(frame)
    return info.value


def test_missing_tool_call_id() -> None:
    exc = error_of(c.parse_client, '{"type":"client_tool_result","result":"ok","is_error":false}')
    assert (exc.field, exc.error_type) == ("client_tool_result.tool_call_id", "missing_fields")
    assert str(exc).startswith("client_tool_result.tool_call_id: ")


def test_pong_event_id_wrong_type() -> None:
    exc = error_of(c.parse_client, '{"type":"pong","event_id":"x"}')
    assert (exc.field, exc.error_type) == ("pong.event_id", "value_error")
    assert "integer" in exc.problem and "'x'" in exc.problem


def test_invalid_base64() -> None:
    exc = error_of(c.parse_client, '{"user_audio_chunk":"not base64!"}')
    assert (exc.field, exc.error_type) == ("user_audio_chunk", "value_error")
    exc = error_of(c.parse_client, '{"user_audio_chunk":123}')
    assert (exc.field, exc.error_type) == ("user_audio_chunk", "value_error")
    exc = error_of(
        c.parse_server, '{"type":"audio","audio_event":{"audio_base_64":"A","event_id":1}}'
    )
    assert (exc.field, exc.error_type) == ("audio.audio_event.audio_base_64", "value_error")


def test_binary_frame() -> None:
    for parse in (c.parse_client, c.parse_server):
        exc = error_of(parse, b'{"type":"pong","event_id":1}')
        assert (exc.field, exc.error_type) == ("$", "invalid_message")
        assert "binary" in exc.problem


@pytest.mark.parametrize("frame", ["[]", "1", '"pong"', "null", "not json", "{"])
def test_non_object_json(frame: str) -> None:
    for parse in (c.parse_client, c.parse_server):
        exc = error_of(parse, frame)
        assert (exc.field, exc.error_type) == ("$", "invalid_message")


def test_unknown_client_type() -> None:
    exc = error_of(c.parse_client, '{"type":"enclave_setup_config"}')
    assert (exc.field, exc.error_type) == ("type", "unknown_message_type")
    assert "enclave_setup_config" in str(exc)


def test_missing_or_bad_type() -> None:
    exc = error_of(c.parse_client, '{"event_id":1}')
    assert (exc.field, exc.error_type) == ("type", "missing_fields")
    exc = error_of(c.parse_client, '{"type":7}')
    assert (exc.field, exc.error_type) == ("type", "value_error")
    exc = error_of(c.parse_server, '{"ping_event":{"event_id":1}}')
    assert (exc.field, exc.error_type) == ("type", "missing_fields")


def test_nested_and_server_field_paths() -> None:
    frame = json.dumps(
        {
            "type": "conversation_initiation_client_data",
            "conversation_config_override": {"tts": {"speed": "fast"}},
        }
    )
    exc = error_of(c.parse_client, frame)
    assert exc.field == "conversation_initiation_client_data.conversation_config_override.tts.speed"
    assert exc.error_type == "value_error"
    frame = '{"type":"conversation_initiation_client_data","dynamic_variables":{"a":{"b":1}}}'
    exc = error_of(c.parse_client, frame)
    assert (exc.field, exc.error_type) == (
        "conversation_initiation_client_data.dynamic_variables.a",
        "value_error",
    )
    exc = error_of(c.parse_server, '{"type":"audio","audio_event":{"audio_base_64":"AAAA"}}')
    assert (exc.field, exc.error_type) == ("audio.audio_event.event_id", "missing_fields")
    exc = error_of(c.parse_server, '{"type":"interruption"}')
    assert (exc.field, exc.error_type) == ("interruption.interruption_event", "missing_fields")
    exc = error_of(c.parse_server, '{"type":"ping","ping_event":[]}')
    assert (exc.field, exc.error_type) == ("ping.ping_event", "value_error")
    exc = error_of(c.parse_server, '{"type":"client_tool_call","client_tool_call":{"event_id":1}}')
    assert exc.field.startswith("client_tool_call.client_tool_call.")


def test_protocol_error_is_a_value_error_and_picklable() -> None:
    import pickle

    exc = ProtocolError("pong.event_id", "expected an integer", "value_error")
    assert isinstance(exc, ValueError)
    again = pickle.loads(pickle.dumps(exc))
    assert (again.field, again.problem, again.error_type) == (
        exc.field,
        exc.problem,
        exc.error_type,
    )


# ------------------------------------------------------------------------------------------------
# Reference examples (verbatim from convai-protocol.md §3 and §4)

PYTHON_INITIATION = """{"type":"conversation_initiation_client_data",
 "custom_llm_extra_body":{"temperature":0.2},
 "conversation_config_override":{"agent":{"prompt":{"prompt":"Be brief"},"first_message":"Hi","language":"en"},
                                 "tts":{"voice_id":"v1"}},
 "dynamic_variables":{"user_name":"Ann"},
 "source_info":{"source":"python_sdk","version":"2.78.0"},
 "user_id":"u42"}"""  # noqa: E501

SERVER_EXAMPLES = """\
{"type":"conversation_initiation_metadata","conversation_initiation_metadata_event":{"conversation_id":"conv_local_1","agent_output_audio_format":"pcm_16000","user_input_audio_format":"pcm_16000"}}
{"type":"ping","ping_event":{"event_id":7,"ping_ms":null}}
{"type":"agent_response","agent_response_event":{"agent_response":"Hello! How can I help?","event_id":2}}
{"type":"audio","audio_event":{"audio_base_64":"AAAA...","event_id":2,"alignment":{"chars":["H","i"],"char_start_times_ms":[0,60],"char_durations_ms":[60,80]}}}
{"type":"user_transcript","user_transcription_event":{"user_transcript":"what's the weather","event_id":3}}
{"type":"interruption","interruption_event":{"event_id":2}}
{"type":"agent_response_correction","agent_response_correction_event":{"original_agent_response":"Let me tell you about the complete history","corrected_agent_response":"Let me tell you","event_id":2}}
{"type":"client_tool_call","client_tool_call":{"tool_name":"get_weather","tool_call_id":"call_abc","parameters":{"city":"Paris"},"event_id":4}}
{"type":"agent_tool_response","agent_tool_response":{"tool_name":"get_weather","tool_call_id":"call_abc","tool_type":"client","is_error":false,"is_called":true,"event_id":4}}
{"type":"vad_score","vad_score_event":{"vad_score":0.93}}
{"type":"agent_chat_response_part","text_response_part":{"text":"Hel","type":"delta","event_id":5}}
{"type":"error","error_event":{"code":1008,"error_type":"override_error","message":"Override for field not allowed"}}
"""  # noqa: E501
# The reference elides the audio as "AAAA...", which is not valid base64.
SERVER_EXAMPLES = SERVER_EXAMPLES.replace("AAAA...", "AAAA")
SERVER_EXAMPLE_LINES = SERVER_EXAMPLES.splitlines()


def test_python_sdk_initiation_example() -> None:
    msg = c.parse_client(PYTHON_INITIATION)
    assert isinstance(msg, c.ConversationInitiationClientData)
    override = msg.conversation_config_override
    assert override.agent is not None and override.agent.prompt is not None
    assert override.agent.prompt.prompt == "Be brief"
    assert override.agent.first_message == "Hi"
    assert override.agent.language == "en"
    assert override.tts is not None and override.tts.voice_id == "v1"
    assert msg.custom_llm_extra_body == {"temperature": 0.2}
    assert msg.dynamic_variables == {"user_name": "Ann"}
    assert msg.source_info == c.SourceInfo(source="python_sdk", version="2.78.0")
    assert msg.user_id == "u42"
    assert msg.text_only is False
    assert json.loads(c.encode_client(msg)) == json.loads(PYTHON_INITIATION)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"text_only": True}, True),
        ({"conversation": {"text_only": True}}, True),
        ({"conversation": {"text_only": False}}, False),
        ({}, False),
    ],
)
def test_text_only_in_either_place(override: dict[str, Any], expected: bool) -> None:
    frame = json.dumps(
        {"type": "conversation_initiation_client_data", "conversation_config_override": override}
    )
    msg = c.parse_client(frame)
    assert isinstance(msg, c.ConversationInitiationClientData)
    assert msg.text_only is expected


def test_dynamic_variable_types_survive() -> None:
    frame = json.dumps(
        {
            "type": "conversation_initiation_client_data",
            "dynamic_variables": {"s": "x", "i": 3, "f": 2.5, "b": True},
        }
    )
    msg = c.parse_client(frame)
    assert isinstance(msg, c.ConversationInitiationClientData)
    assert [type(v) for v in msg.dynamic_variables.values()] == [str, int, float, bool]


def test_unknown_fields_are_ignored() -> None:
    msg = c.parse_client('{"type":"pong","event_id":3,"future_field":{"x":1}}')
    assert msg == c.Pong(event_id=3)
    msg = c.parse_client('{"user_audio_chunk":"AAAA","sample_rate":16000}')
    assert msg == c.UserAudioChunk(audio=b"\x00\x00\x00")


@pytest.mark.parametrize("line", SERVER_EXAMPLE_LINES, ids=lambda s: json.loads(s)["type"])
def test_server_examples_reencode_exactly(line: str) -> None:
    msg = c.parse_server(line)
    assert not isinstance(msg, c.UnknownServerMessage)
    assert json.loads(c.encode_server(msg)) == json.loads(line)


def test_server_example_values() -> None:
    msgs = [c.parse_server(line) for line in SERVER_EXAMPLE_LINES]
    assert msgs[0] == c.ConversationInitiationMetadata(
        conversation_id="conv_local_1",
        agent_output_audio_format="pcm_16000",
        user_input_audio_format="pcm_16000",
    )
    assert msgs[1] == c.Ping(event_id=7, ping_ms=None)
    audio = msgs[3]
    assert isinstance(audio, c.AudioEvent)
    assert audio.audio == b"\x00\x00\x00" and audio.event_id == 2
    assert audio.alignment == c.Alignment(
        chars=["H", "i"], char_start_times_ms=[0, 60], char_durations_ms=[60, 80]
    )
    assert msgs[7] == c.ClientToolCall(
        tool_name="get_weather", tool_call_id="call_abc", parameters={"city": "Paris"}, event_id=4
    )
    assert msgs[10] == c.AgentChatResponsePart(text="Hel", part_type="delta", event_id=5)
    assert msgs[11] == c.ErrorEvent(
        code=1008, error_type="override_error", message="Override for field not allowed"
    )


def test_exact_envelopes() -> None:
    assert (
        c.encode_server(c.AudioEvent(audio=b"\x00\x00\x00", event_id=2))
        == '{"type":"audio","audio_event":{"audio_base_64":"AAAA","event_id":2}}'
    )
    assert (
        c.encode_server(c.Ping(event_id=7))
        == '{"type":"ping","ping_event":{"event_id":7,"ping_ms":null}}'
    )
    assert c.encode_server(c.GuardrailTriggered()) == '{"type":"guardrail_triggered"}'
    assert c.encode_client(c.UserAudioChunk(audio=b"\x00\x00\x00")) == '{"user_audio_chunk":"AAAA"}'


def test_unknown_server_type_is_kept() -> None:
    frame = '{"type":"agent_response_metadata","agent_response_metadata_event":{"x":1}}'
    msg = c.parse_server(frame)
    assert msg == c.UnknownServerMessage(
        type="agent_response_metadata",
        raw={"type": "agent_response_metadata", "agent_response_metadata_event": {"x": 1}},
    )
    assert json.loads(c.encode_server(msg)) == json.loads(frame)


def test_reasoning_part_event_id_is_a_string() -> None:
    frame = '{"type":"agent_reasoning_response_part","reasoning_response_part":{"text":"t","type":"start","event_id":"r1"}}'  # noqa: E501
    assert c.parse_server(frame) == c.AgentReasoningResponsePart(
        text="t", part_type="start", event_id="r1"
    )


# ------------------------------------------------------------------------------------------------
# Conformance with the official Python SDK's own code


def test_tool_result_accepts_any_json() -> None:
    # Shapes ClientTools sends: a returned object (not stringified), the default text, an error.
    cases = [
        ({"a": 1}, '{"a": 1}'),
        ("Client tool: get_weather called successfully.", None),
        (None, "null"),
        (3, "3"),
        (["é"], '["é"]'),
    ]
    for result, expected_text in cases:
        frame = json.dumps(
            {
                "type": "client_tool_result",
                "tool_call_id": "c1",
                "result": result,
                "is_error": False,
            }
        )
        msg = c.parse_client(frame)
        assert isinstance(msg, c.ClientToolResult)
        assert msg.result == result
        assert msg.result_text == (expected_text if expected_text is not None else result)
        assert json.loads(c.encode_client(msg)) == json.loads(frame)


@pytest.mark.parametrize(
    "event",
    [
        UserMessageClientToOrchestratorEvent(text="hello"),
        UserMessageClientToOrchestratorEvent(),
        UserActivityClientToOrchestratorEvent(),
        ContextualUpdateClientToOrchestratorEvent(text="user is on the pricing page"),
        MultimodalMessageClientToOrchestratorEvent(text="look", file_ids=["f1", "f2"]),
        MultimodalMessageClientToOrchestratorEvent(file_id="f9"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_sdk_client_events_parse_and_reencode(event: Any) -> None:
    frame = json.dumps(event.to_dict())  # exactly what the SDK puts on the wire
    msg = c.parse_client(frame)
    assert msg.type == event.to_dict()["type"]
    assert json.loads(c.encode_client(msg)) == json.loads(frame)


def test_sdk_multimodal_helpers() -> None:
    event = MultimodalMessageClientToOrchestratorEvent(text="look", file_ids=["f1", "f2"])
    msg = c.parse_client(json.dumps(event.to_dict()))
    assert isinstance(msg, c.MultimodalMessage)
    assert (msg.user_text, msg.file_ids) == ("look", ["f1", "f2"])
    js_shape = '{"type":"multimodal_message","file":{"type":"file_input","file_id":"f3"}}'
    msg = c.parse_client(js_shape)
    assert isinstance(msg, c.MultimodalMessage)
    assert (msg.user_text, msg.file_ids) == (None, ["f3"])


def sdk_conversation(**config: Any) -> Any:
    """A BaseConversation with just the state its frame builders and handler touch."""
    conv = BaseConversation.__new__(BaseConversation)
    conv.config = ConversationInitiationData(**config)
    conv.user_id = "u42"
    conv._conversation_id = None
    conv._last_interrupt_id = 0
    return conv


def test_sdk_initiation_message_parses() -> None:
    conv = sdk_conversation(
        extra_body={"temperature": 0.2},
        conversation_config_override={"agent": {"first_message": "Hi"}, "text_only": True},
        dynamic_variables={"n": 1, "ok": True},
    )
    frame = conv._create_initiation_message()
    msg = c.parse_client(frame)
    assert isinstance(msg, c.ConversationInitiationClientData)
    assert msg.text_only is True
    assert msg.dynamic_variables == {"n": 1, "ok": True}
    assert msg.user_id == "u42"
    assert json.loads(c.encode_client(msg)) == json.loads(frame)


class RecordingHandler:
    """Stands in for the SDK's message handler, with every optional callback registered."""

    callback_audio_alignment = True
    callback_agent_response = True
    callback_agent_chat_response_part = True
    callback_agent_response_correction = True
    callback_user_transcript = True
    callback_latency_measurement = True

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("handle_"):
            raise AttributeError(name)
        return lambda *args: self.calls.append((name, args))


@settings(max_examples=100)
@given(msg=server_messages)
def test_sdk_handles_every_encoded_server_message(msg: Any) -> None:
    # The SDK indexes keys without checking, so a wrong shape would raise KeyError here.
    conv = sdk_conversation()
    handler = RecordingHandler()
    conv._handle_message_core(json.loads(c.encode_server(msg)), handler)
    if isinstance(msg, c.Ping):
        name, (event,) = handler.calls[0]
        assert name == "handle_ping"
        pong = c.parse_client(json.dumps({"type": "pong", "event_id": event["event_id"]}))
        assert pong == c.Pong(event_id=msg.event_id)
    if isinstance(msg, c.AudioEvent) and msg.event_id > 0:
        assert handler.calls[0] == ("handle_audio_output", (msg.audio,))
