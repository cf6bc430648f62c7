#!/usr/bin/env python3
"""Runs the official Anthropic Python SDK against memgate's POST /v1/messages, over each provider
kind (a native Anthropic upstream, a native Gemini upstream and an OpenAI upstream), plus a few
OpenAI SDK checks that errors of the native upstreams reach OpenAI clients as the right
exceptions.

Upstream answers come from fixtures/{anthropic,gemini,openai}/ (through memgate-mock), so the
checks know exactly what the model "says".

Environment:
  MEMGATE_BASE_URL     memgate's base URL, with or without the /v1 suffix (e.g.
                       http://127.0.0.1:1234/v1). The Anthropic SDK appends /v1/messages to its
                       base_url itself, so it gets the URL without /v1; the OpenAI SDK gets it with.
  MEMGATE_API_KEY      a key memgate accepts (the Anthropic SDK sends it as x-api-key)
  MEMGATE_EXPECT_AUTH  "1" when memgate requires keys: then a wrong key must be refused with 401
  MEMGATE_SKIP         comma-separated test names to skip

Prints one line per test, then "N passed, M failed" (", K skipped" when some were skipped), and
exits non-zero if anything failed.
"""

import json
import os
import sys
import urllib.parse
import urllib.request
import uuid

import anthropic
import openai

from harness import Skip, eq, register, run, test

_BASE = os.environ.get("MEMGATE_BASE_URL", "http://127.0.0.1:8080/v1").rstrip("/")
ROOT = _BASE[: -len("/v1")] if _BASE.endswith("/v1") else _BASE
OPENAI_BASE_URL = ROOT + "/v1"
API_KEY = os.environ.get("MEMGATE_API_KEY", "anything")
EXPECT_AUTH = os.environ.get("MEMGATE_EXPECT_AUTH") == "1"

CLAUDE = "anthropic/claude-sonnet-4"
GEMINI = "google/gemini-2.5-flash"
GPT = "openai/gpt-4o-mini"
MODELS = {"anthropic": CLAUDE, "gemini": GEMINI, "openai": GPT}

client = anthropic.Anthropic(api_key=API_KEY, base_url=ROOT, timeout=30.0)
# Error checks must see the first answer, not the SDK's retries.
no_retry = client.with_options(max_retries=0)

HELLO_WORLD = {
    "name": "helloWorld",
    "description": "Returns a greeting for the given name",
    "input_schema": {
        "type": "object",
        "properties": {"name": {"type": "string", "description": "The name to greet"}},
        "required": ["name"],
    },
}



def per_model(make):
    """Registers `make(model)` once per provider kind, as `<name>_<kind>`."""
    for kind, model in MODELS.items():
        register(f"{make.__name__}_{kind}", lambda model=model: make(model))
    return make


def user(text):
    return [{"role": "user", "content": text}]


def text_of(message):
    return "".join(b.text for b in message.content if b.type == "text")


def tool_uses(message):
    return [b for b in message.content if b.type == "tool_use"]


def expect_error(cls, status, fn):
    try:
        fn()
    except cls as e:
        eq(e.status_code, status)
        assert isinstance(e.body, dict) and e.body.get("type") == "error", e.body
        assert e.body["error"].get("message"), e.body
        return e
    raise AssertionError(f"no {cls.__name__}")


# ----------------------------------------------------------------- messages.create


@per_model
def create_text(model):
    message = client.messages.create(
        model=model,
        max_tokens=50,
        messages=user("Count from 1 to 5, separated by commas."),
    )
    assert "1, 2, 3, 4, 5" in text_of(message), message
    eq(message.type, "message")
    eq(message.role, "assistant")
    eq(message.model, model)
    eq(message.stop_reason, "end_turn")
    assert message.id.startswith("msg_"), message.id
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0, message.usage


# ----------------------------------------------------------------- messages.stream


@per_model
def stream_text(model):
    with client.messages.stream(
        model=model,
        max_tokens=50,
        messages=user("Count from 1 to 5, separated by commas."),
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    text = "".join(pieces)
    assert "1, 2, 3, 4, 5" in text, pieces
    assert len(pieces) > 1, f"one text delta only: not streamed ({pieces})"
    eq(text_of(final), text)
    eq(final.model, model)
    eq(final.stop_reason, "end_turn")
    assert final.usage.output_tokens > 0, final.usage


@per_model
def stream_tool_use(model):
    with client.messages.stream(
        model=model,
        max_tokens=200,
        tools=[HELLO_WORLD],
        messages=user("Use the helloWorld tool to greet Bob."),
    ) as stream:
        final = stream.get_final_message()
    calls = tool_uses(final)
    eq(len(calls), 1)
    eq(calls[0].name, "helloWorld")
    eq(calls[0].input, {"name": "Bob"})
    eq(final.stop_reason, "tool_use")
    assert final.usage.output_tokens > 0, final.usage


# ----------------------------------------------------------------- tool use round trip


@per_model
def tool_use_round_trip(model):
    bob = client.messages.create(
        model=model,
        max_tokens=200,
        tools=[HELLO_WORLD],
        messages=user("Use the helloWorld tool to greet Bob."),
    )
    call = tool_uses(bob)
    eq(len(call), 1)
    eq((call[0].name, call[0].input), ("helloWorld", {"name": "Bob"}))
    assert call[0].id, call[0]
    eq(bob.stop_reason, "tool_use")

    # The same loop the SDK documents: run the tool, send its result back in a user turn.
    question = user("Use the helloWorld tool to greet Alice.")
    alice = client.messages.create(model=model, max_tokens=200, tools=[HELLO_WORLD], messages=question)
    call = tool_uses(alice)
    eq((call[0].name, call[0].input), ("helloWorld", {"name": "Alice"}))
    answer = client.messages.create(
        model=model,
        max_tokens=200,
        tools=[HELLO_WORLD],
        messages=question
        + [
            {"role": "assistant", "content": alice.content},
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": call[0].id,
                        "content": json.dumps({"greeting": f"Hello, {call[0].input['name']}!"}),
                    }
                ],
            },
        ],
    )
    eq(text_of(answer), "Hello, Alice!")
    eq(answer.stop_reason, "end_turn")


# ----------------------------------------------------------------- errors


@test
def rate_limit_error():
    for model in (CLAUDE, GEMINI):
        e = expect_error(
            anthropic.RateLimitError,
            429,
            lambda: no_retry.messages.create(model=model, max_tokens=20, messages=user("trigger-upstream-error")),
        )
        eq(e.body["error"]["type"], "rate_limit_error")


@test
def overloaded_is_internal_server_error():
    for model in (CLAUDE, GEMINI):
        e = expect_error(
            anthropic.InternalServerError,
            503,
            lambda: no_retry.messages.create(model=model, max_tokens=20, messages=user("trigger-overloaded")),
        )
        eq(e.body["error"]["type"], "overloaded_error")


@test
def unknown_provider_is_bad_request():
    e = expect_error(
        anthropic.BadRequestError,
        400,
        lambda: no_retry.messages.create(model="nosuch/x", max_tokens=20, messages=user("Hello!")),
    )
    eq(e.body["error"]["type"], "invalid_request_error")


@test
def wrong_api_key():
    if not EXPECT_AUTH:
        raise Skip("MEMGATE_EXPECT_AUTH is not 1")
    bad = anthropic.Anthropic(api_key="msk_wrong", base_url=ROOT, max_retries=0)
    e = expect_error(
        anthropic.AuthenticationError,
        401,
        lambda: bad.messages.create(model=CLAUDE, max_tokens=20, messages=user("Hello!")),
    )
    eq(e.body["error"]["type"], "authentication_error")


# ----------------------------------------------------------------- memory


def memory_api(path):
    req = urllib.request.Request(ROOT + "/v1/memory/" + path, headers={"Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(req, timeout=30) as res:
        return json.load(res)


@test
def memory_thread_headers():
    thread = f"anthropic-sdk-{uuid.uuid4().hex[:12]}"
    headers = {"x-thread-id": thread, "x-resource-id": "user-42"}
    first = client.messages.create(
        model=CLAUDE,
        max_tokens=100,
        messages=user("My name is Alex and I prefer concise answers."),
        extra_headers=headers,
    )
    assert text_of(first), first
    # The second request sends only its own message; the gateway supplies the first exchange,
    # and only an upstream request that holds "Alex" is answered with the name.
    second = client.messages.create(
        model=CLAUDE,
        max_tokens=100,
        messages=user("What is my name?"),
        extra_headers=headers,
    )
    assert "Alex" in text_of(second), text_of(second)
    stored = memory_api(f"threads/{urllib.parse.quote(thread, safe='')}/messages")
    eq(stored["total"], 4)
    eq([m["role"] for m in stored["messages"]], ["user", "assistant", "user", "assistant"])
    eq(stored["messages"][0]["content"], "My name is Alex and I prefer concise answers.")
    eq(stored["messages"][3]["content"], text_of(second))


# ----------------------------------------------------------------- OpenAI SDK over native upstreams


def openai_client():
    return openai.OpenAI(api_key=API_KEY, base_url=OPENAI_BASE_URL, max_retries=0, timeout=30.0)


@test
def openai_rate_limit_from_gemini():
    try:
        openai_client().chat.completions.create(model=GEMINI, messages=user("trigger-upstream-error"))
    except openai.RateLimitError as e:
        eq(e.status_code, 429)
        eq(e.code, "rate_limit_exceeded")
    else:
        raise AssertionError("no openai.RateLimitError")


@test
def openai_authentication_error_from_gemini_bad_key():
    # Gemini answers a bad key with 400 INVALID_ARGUMENT (reason API_KEY_INVALID); clients see 401.
    try:
        openai_client().chat.completions.create(model=GEMINI, messages=user("trigger-bad-key"))
    except openai.AuthenticationError as e:
        eq(e.status_code, 401)
    else:
        raise AssertionError("no openai.AuthenticationError")


if __name__ == "__main__":
    sys.exit(run(f"anthropic {anthropic.__version__}, openai {openai.__version__} against {ROOT}"))
