#!/usr/bin/env python3
"""Runs the OpenAI Python SDK snippets of the seed documents (shared/seeds/000-004) against memgate.

Each snippet is kept as the seed writes it, with only the client's base URL and key pointed at
memgate, and then its printed result is checked. Upstream answers come from fixtures/openai/
(through memgate-mock), so the checks know exactly what the model "says".

Environment:
  MEMGATE_BASE_URL     memgate's OpenAI base URL, e.g. http://127.0.0.1:1234/v1
  MEMGATE_API_KEY      a key memgate accepts (stands in for YOUR_API_KEY / "anything")
  MEMGATE_EXPECT_AUTH  "1" when memgate requires keys: then a wrong key must be refused with 401
  MEMGATE_SKIP         comma-separated test names to skip (e.g. while a provider is not wired yet)

Prints one line per test, then "N passed, M failed" (", K skipped" when some were skipped), and
exits non-zero if anything failed.
"""

import contextlib
import io
import json
import os
import pathlib
import sys

import openai
from openai import APIError, AuthenticationError, OpenAI, OpenAIError, RateLimitError

from harness import Skip, eq, run, test

BASE_URL = os.environ.get("MEMGATE_BASE_URL", "http://127.0.0.1:8080/v1")
API_KEY = os.environ.get("MEMGATE_API_KEY", "anything")
EXPECT_AUTH = os.environ.get("MEMGATE_EXPECT_AUTH") == "1"
FIXTURES = pathlib.Path(__file__).resolve().parents[3] / "fixtures" / "openai"

# The seeds' `client` (000: "All subsequent examples use this client instance").
client = OpenAI(api_key=API_KEY, base_url=BASE_URL, timeout=30.0)



@contextlib.contextmanager
def printed():
    """Captures what a snippet prints; the test then asserts on `out.getvalue()`."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        yield out


@contextlib.contextmanager
def env(**values):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def fixture_vectors(label):
    """The float vectors a `*_embeddings_<label>_float` fixture holds, or None without the repo."""
    for d in sorted(FIXTURES.glob(f"*_embeddings_{label}_float")):
        body = json.loads((d / "response.json").read_text())
        return [item["embedding"] for item in body["data"]]
    return None


def assert_vectors(got, label):
    want = fixture_vectors(label)
    if want is None:
        return
    assert len(got) == len(want), (len(got), len(want))
    for g, w in zip(got, want):
        assert len(g) == len(w), f"dims {len(g)} != {len(w)}"
        assert all(abs(a - b) <= 1e-6 * max(1.0, abs(b)) for a, b in zip(g, w)), (g, w)


# ----------------------------------------------------------------- 000: Mastra, OpenAI Python SDK


@test
def chat_completions():
    with printed() as out:
        completion = client.chat.completions.create(
            model="google/gemini-2.5-flash",
            messages=[
                {"role": "user", "content": "What is 2+2? Reply with just the number."}
            ],
            max_tokens=20,
        )

        print(completion.choices[0].message.content)
    eq(out.getvalue().strip(), "4")
    eq(completion.object, "chat.completion")
    eq(completion.model, "google/gemini-2.5-flash")
    eq(completion.choices[0].finish_reason, "stop")
    assert completion.usage and completion.usage.total_tokens > 0, completion.usage


@test
def system_messages():
    with printed() as out:
        completion = client.chat.completions.create(
            model="google/gemini-2.5-flash",
            messages=[
                {"role": "system", "content": "You are a calculator. Only respond with numbers, no words."},
                {"role": "user", "content": "What is 10 * 5?"},
            ],
            max_tokens=100,
        )

        print(completion.choices[0].message.content)
    eq(out.getvalue().strip(), "50")


@test
def multi_turn():
    with printed() as out:
        completion = client.chat.completions.create(
            model="google/gemini-2.5-flash",
            messages=[
                {"role": "user", "content": "Remember this word: banana"},
                {"role": "assistant", "content": "Got it, I will remember it."},
                {"role": "user", "content": "What word did I ask you to remember? Reply with just the word."},
            ],
            max_tokens=100,
        )

        print(completion.choices[0].message.content)
    eq(out.getvalue().strip(), "banana")


@test
def streaming():
    chunks = []
    with printed() as out:
        stream = client.chat.completions.create(
            model="google/gemini-2.5-flash",
            messages=[
                {"role": "user", "content": "Count from 1 to 5, separated by commas."}
            ],
            max_tokens=50,
            stream=True,
        )

        for chunk in stream:
            chunks.append(chunk)
            if chunk.choices and chunk.choices[0].delta.content:
                print(chunk.choices[0].delta.content, end="")
    eq(out.getvalue(), "1, 2, 3, 4, 5")
    assert len(chunks) > 2, f"only {len(chunks)} chunks: not streamed"
    for c in chunks:
        eq(c.object, "chat.completion.chunk")
        eq(c.model, "google/gemini-2.5-flash")
        assert c.choices, "a usage chunk (choices: []) arrived although include_usage was not asked for"
    eq(chunks[0].choices[0].delta.role, "assistant")
    eq(chunks[-1].choices[0].finish_reason, "stop")


@test
def streaming_include_usage():
    chunks = []
    with printed() as out:
        stream = client.chat.completions.create(
            model="google/gemini-2.5-flash",
            messages=[
                {"role": "user", "content": "Count from 1 to 5, separated by commas."}
            ],
            max_tokens=50,
            stream=True,
            stream_options={"include_usage": True},
        )

        for chunk in stream:
            chunks.append(chunk)
            if chunk.choices and chunk.choices[0].delta.content:
                print(chunk.choices[0].delta.content, end="")
    eq(out.getvalue(), "1, 2, 3, 4, 5")
    last = chunks[-1]
    eq(last.choices, [])
    assert last.usage is not None and last.usage.total_tokens > 0, last.usage
    eq(last.usage.total_tokens, last.usage.prompt_tokens + last.usage.completion_tokens)
    assert all(c.usage is None for c in chunks[:-1]), "usage may only be set on the final chunk"


@test
def memory_thread_and_resource_ids():
    # First request: introduce yourself
    first = client.chat.completions.create(
        model="google/gemini-2.5-flash",
        messages=[
            {"role": "user", "content": "My name is Alex and I prefer concise answers."}
        ],
        extra_headers={
            "x-thread-id": "my-thread-1",
            "x-resource-id": "user-42",
        },
    )

    # Second request: the gateway remembers
    response = client.chat.completions.create(
        model="google/gemini-2.5-flash",
        messages=[
            {"role": "user", "content": "What is my name?"}
        ],
        extra_headers={
            "x-thread-id": "my-thread-1",
            "x-resource-id": "user-42",
        },
    )

    with printed() as out:
        print(response.choices[0].message.content)
    # The second request sent only its own message; the gateway supplied the first.
    assert first.choices[0].message.content
    eq(out.getvalue().strip(), "Alex")


@test
def streaming_with_memory():
    with printed() as out:
        stream = client.chat.completions.create(
            model="google/gemini-2.5-flash",
            messages=[
                {"role": "user", "content": "Summarize what you know about me."}
            ],
            stream=True,
            extra_headers={
                "x-thread-id": "my-thread-1",
                "x-resource-id": "user-42",
            },
        )

        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                print(chunk.choices[0].delta.content, end="")
    # Same thread as the snippet before: the summary knows the name it was told there.
    assert "Alex" in out.getvalue(), out.getvalue()


# ----------------------------------------------------------------- 002: Mastra quickstart (Python)


@test
def quickstart_first_request():
    with printed() as out:
        response = client.chat.completions.create(
            model="google/gemini-2.5-flash",
            messages=[
                {"role": "user", "content": "Hello World!"}
            ],
        )
        print(response.choices[0].message.content)
    eq(out.getvalue().strip(), "Hello! How can I help you today?")


# ----------------------------------------------------------------- 003: agentgateway (Python)


@test
def agentgateway_basic_usage():
    client = OpenAI(
        base_url=BASE_URL,
        api_key=API_KEY,  # Use placeholder if gateway has no auth
    )

    with printed() as out:
        response = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[
                {"role": "user", "content": "Hello, how are you?"}
            ],
        )

        print(response.choices[0].message.content)
    eq(out.getvalue().strip(), "Hello! How can I help you today?")
    eq(response.model, "gpt-4o-mini")


@test
def agentgateway_environment_variables():
    # The seed exports OPENAI_API_BASE, which the SDK does not read; OPENAI_BASE_URL is what it
    # reads, so both are set.
    with env(OPENAI_API_BASE=BASE_URL, OPENAI_BASE_URL=BASE_URL, OPENAI_API_KEY=API_KEY):
        # Automatically uses OPENAI_API_BASE and OPENAI_API_KEY
        client = OpenAI()

        with printed() as out:
            response = client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "Hello!"}],
            )

            print(response.choices[0].message.content)
    eq(out.getvalue().strip(), "Hello! How can I help you today?")


@test
def agentgateway_streaming():
    client = OpenAI(
        base_url=BASE_URL,
        api_key=API_KEY,
    )

    with printed() as out:
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Write a short story"}],
            stream=True,
        )

        # Indexes choices[0] unguarded: a usage chunk nobody asked for would break it.
        for chunk in stream:
            if chunk.choices[0].delta.content:
                print(chunk.choices[0].delta.content, end="")
    assert out.getvalue().startswith("Once upon a time, a small robot named Pip"), out.getvalue()


@test
def agentgateway_advanced_parameters():
    response = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Explain quantum computing"},
        ],
        temperature=0.7,
        max_tokens=500,
        top_p=0.9,
        frequency_penalty=0.0,
        presence_penalty=0.0,
    )
    assert "qubits" in response.choices[0].message.content, response.choices[0].message.content


@test
def agentgateway_error_handling():
    client = OpenAI(
        base_url=BASE_URL,
        api_key=API_KEY,
    )

    with printed() as out:
        try:
            response = client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "Hello!"}],
            )
            print(response.choices[0].message.content)
        except OpenAIError as e:
            print(f"OpenAI API error: {e}")
        except Exception as e:
            print(f"Unexpected error: {e}")
    eq(out.getvalue().strip(), "Hello! How can I help you today?")


@test
def agentgateway_function_calling():
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Get current weather for a location",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "location": {"type": "string", "description": "City name"},
                    },
                    "required": ["location"],
                },
            },
        }
    ]

    response = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "What's the weather in Boston?"}],
        tools=tools,
    )
    choice = response.choices[0]
    eq(choice.finish_reason, "tool_calls")
    eq(choice.message.content, None)
    call = choice.message.tool_calls[0]
    eq(call.type, "function")
    assert call.id.startswith("call_"), call.id
    eq(call.function.name, "get_weather")
    eq(json.loads(call.function.arguments), {"location": "Boston"})

    # Not in the seed: the natural second step, the tool's result sent back.
    second = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "user", "content": "What's the weather in Boston?"},
            choice.message,
            {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature_f": 72, "sky": "sunny"})},
        ],
        tools=tools,
    )
    eq(second.choices[0].message.content, "It's currently 72°F and sunny in Boston.")


@test
def agentgateway_embeddings():
    with printed() as out:
        response = client.embeddings.create(
            model="text-embedding-3-small",
            input="The quick brown fox jumps over the lazy dog",
        )

        print(response.data[0].embedding)
    embedding = response.data[0].embedding
    assert isinstance(embedding, list) and all(isinstance(x, float) for x in embedding), embedding
    eq(json.loads(out.getvalue()), embedding)
    eq(response.model, "text-embedding-3-small")
    assert_vectors([embedding], "fox")


@test
def embeddings_batch():
    response = client.embeddings.create(
        model="text-embedding-3-small",
        input=["The quick brown fox jumps over the lazy dog", "The five boxing wizards jump quickly"],
    )
    eq([d.index for d in response.data], [0, 1])
    assert_vectors([d.embedding for d in response.data], "fox_wizards_batch")


@test
def embeddings_float_format():
    # Asked for explicitly, floats come back as floats, untouched by the SDK.
    response = client.embeddings.create(
        model="text-embedding-3-small",
        input="The quick brown fox jumps over the lazy dog",
        encoding_format="float",
    )
    assert_vectors([response.data[0].embedding], "fox")


@test
def agentgateway_verification():
    # python -c "from openai import OpenAI; client = OpenAI(base_url='http://localhost:3000/v1', api_key='anything'); print(...)"
    with printed() as out:
        client = OpenAI(base_url=BASE_URL, api_key=API_KEY); print(client.chat.completions.create(model='gpt-4o-mini', messages=[{'role': 'user', 'content': 'Hello'}]).choices[0].message.content)  # noqa: E702,E501
    eq(out.getvalue().strip(), "Hello! How can I help you today?")


# ----------------------------------------------------------------- 004: Vercel AI Gateway (Python)


def vercel_client():
    with env(AI_GATEWAY_API_KEY=API_KEY):
        return OpenAI(
            api_key=os.getenv('AI_GATEWAY_API_KEY'),
            base_url=BASE_URL,
        )


@test
def vercel_basic_chat_completion():
    client = vercel_client()
    with printed() as out:
        response = client.chat.completions.create(
            model='anthropic/claude-sonnet-4',
            messages=[
                {'role': 'user', 'content': 'Hello, how are you?'}
            ],
            stream=False
        )

        print(response.choices[0].message.content)
        print(f'Tokens: {response.usage.total_tokens}')
    lines = out.getvalue().splitlines()
    eq(lines[0], "Hello! How can I help you today?")
    assert lines[1].startswith("Tokens: ") and int(lines[1].split()[1]) > 0, lines


@test
def vercel_streaming():
    client = vercel_client()
    with printed() as out:
        stream = client.chat.completions.create(
            model='openai/gpt-5',
            messages=[
                {'role': 'user', 'content': 'Write a story'}
            ],
            stream=True
        )

        for chunk in stream:
            content = chunk.choices[0].delta.content
            if content:
                print(content, end='', flush=True)
    assert out.getvalue().startswith("Once upon a time"), out.getvalue()


@test
def vercel_provider_routing():
    client = vercel_client()
    response = client.chat.completions.create(
        model='anthropic/claude-sonnet-4',
        messages=[{'role': 'user', 'content': 'Hello'}],
        extra_body={
            'providerOptions': {
                'gateway': {
                    'order': ['vertex', 'anthropic'],
                    'only': ['vertex', 'anthropic'],
                }
            }
        }
    )
    eq(response.choices[0].message.content, "Hello! How can I help you today?")


@test
def vercel_model_fallbacks():
    client = vercel_client()
    with printed() as out:
        response = client.chat.completions.create(
            model='openai/gpt-5',  # Primary
            messages=[{'role': 'user', 'content': 'Hello'}],
            extra_body={
                'models': ['openai/gpt-5-mini', 'anthropic/claude-sonnet-4']  # Fallbacks
            }
        )

        print(f'Model used: {response.model}')
    assert out.getvalue().startswith("Model used: ") and len(out.getvalue().strip()) > len("Model used:"), out.getvalue()


@test
def vercel_zero_data_retention():
    client = vercel_client()
    response = client.chat.completions.create(
        model='anthropic/claude-sonnet-4',
        messages=[{'role': 'user', 'content': 'Sensitive data...'}],
        extra_body={
            'providerOptions': {
                'gateway': {
                    'zeroDataRetention': True
                }
            }
        }
    )
    assert response.choices[0].message.content


@test
def vercel_embeddings():
    client = vercel_client()
    with printed() as out:
        response = client.embeddings.create(
            model='openai/text-embedding-3-small',
            input='Your text here'
        )

        embedding = response.data[0].embedding
        print(f'Dimensions: {len(embedding)}')
    eq(out.getvalue().strip(), "Dimensions: 8")
    assert_vectors([embedding], "your_text")


@test
def vercel_batch_embeddings():
    client = vercel_client()
    with printed() as out:
        response = client.embeddings.create(
            model='openai/text-embedding-3-small',
            input=['Text 1', 'Text 2', 'Text 3']
        )

        for item in response.data:
            print(f'Index {item.index}: {len(item.embedding)} dims')
    eq(out.getvalue().splitlines(), ["Index 0: 8 dims", "Index 1: 8 dims", "Index 2: 8 dims"])
    assert_vectors([d.embedding for d in response.data], "text123_batch")


@test
def vercel_error_handling():
    # The seed's `create(...)`, filled with a request whose upstream answers 429. Retries are off
    # so the test does not sit through the SDK's backoff.
    client = vercel_client().with_options(max_retries=0)
    with printed() as out:
        try:
            response = client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "Please trigger-upstream-error now."}],
            )
        except AuthenticationError:
            print('Invalid API key')
        except RateLimitError:
            print('Rate limited - Gateway auto-retries')
        except APIError as e:
            print(f'API error: {e.status_code} - {e.message}')
    eq(out.getvalue().strip(), "Rate limited - Gateway auto-retries")


# ----------------------------------------------------------------- 001 (TypeScript) mirrored: Responses API


@test
def responses_create():
    response = client.responses.create(
        model="openai/gpt-5.4-mini",
        input="What is 3+3? Reply with just the number.",
        max_output_tokens=10,
    )
    eq(response.object, "response")
    eq(response.status, "completed")
    message = response.output[0]
    eq(message.type, "message")
    eq(message.content[0].type, "output_text")
    eq(message.content[0].text, "6")
    eq(response.output_text, "6")
    eq(response.model, "openai/gpt-5.4-mini")
    eq(response.usage.total_tokens, response.usage.input_tokens + response.usage.output_tokens)


@test
def responses_stream():
    types = []
    with printed() as out:
        stream = client.responses.create(
            model="openai/gpt-5.4-mini",
            input="Count from 1 to 5, separated by commas.",
            max_output_tokens=50,
            stream=True,
        )
        for event in stream:
            types.append(event.type)
            if event.type == "response.output_text.delta":
                print(event.delta, end="")
    eq(out.getvalue(), "1, 2, 3, 4, 5")
    eq(types[0], "response.created")
    eq(types[-1], "response.completed")
    for t in ("response.in_progress", "response.output_item.added", "response.content_part.added",
              "response.output_text.done", "response.content_part.done", "response.output_item.done"):
        assert t in types, f"{t} missing from {types}"


# ----------------------------------------------------------------- errors and models


@test
def upstream_rate_limit():
    try:
        client.with_options(max_retries=0).chat.completions.create(
            model="google/gemini-2.5-flash",
            messages=[{"role": "user", "content": "trigger-upstream-error"}],
        )
    except openai.RateLimitError as e:
        eq(e.status_code, 429)
        eq(e.code, "rate_limit_exceeded")
        # The vendor's own words pass through (google is a native Gemini upstream).
        assert "exceeded your current quota" in e.message, e.message
    else:
        raise AssertionError("no RateLimitError")


@test
def unknown_provider():
    try:
        client.with_options(max_retries=0).chat.completions.create(
            model="nosuch/model",
            messages=[{"role": "user", "content": "Hello!"}],
        )
    except openai.BadRequestError as e:
        eq(e.status_code, 400)
        assert e.message, e
    else:
        raise AssertionError("no BadRequestError")


@test
def wrong_api_key():
    if not EXPECT_AUTH:
        raise Skip("MEMGATE_EXPECT_AUTH is not 1")
    bad = OpenAI(api_key="msk_wrong_key_0000000000000000", base_url=BASE_URL, max_retries=0)
    try:
        bad.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello!"}])
    except openai.AuthenticationError as e:
        eq(e.status_code, 401)
    else:
        raise AssertionError("no AuthenticationError")


@test
def models_list():
    models = client.models.list()
    assert models.data, "no models listed"
    for m in models.data:
        eq(m.object, "model")
        assert m.id, m


if __name__ == "__main__":
    sys.exit(run(f"openai {openai.__version__} against {BASE_URL}"))
