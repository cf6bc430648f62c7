#!/usr/bin/env python3
"""The official OpenAI Python SDK's client.responses.create through memgate to a local
OpenAI-compatible server that has no Responses API (llama-cpp-python: its /v1/responses is a
404), configured with nothing about Responses. Answers come from the server's recordings in
fixtures/local/prov-* (through memgate-mock), so the checks know what the model "says".

Environment: MEMGATE_BASE_URL (with /v1), MEMGATE_API_KEY, MEMGATE_SKIP (comma-separated).
Prints one line per check, then "N passed, M failed"; exits non-zero if anything failed.
"""

import json
import os
import sys
import urllib.request
import uuid

import openai

from harness import eq, run, test

BASE = os.environ.get("MEMGATE_BASE_URL", "http://127.0.0.1:4000/v1").rstrip("/")
KEY = os.environ.get("MEMGATE_API_KEY", "anything")
client = openai.OpenAI(base_url=BASE, api_key=KEY, max_retries=0)
MODEL = "local/smollm2"
# What the recorded server answers "Say hi" with, cut at 16 tokens (so "incomplete", as OpenAI
# reports an answer that reached max_output_tokens).
ANSWER = "I'm glad you're here! I'm a helpful AI, and I can"


@test
def responses_create():
    r = client.responses.create(model=MODEL, input="Say hi", max_output_tokens=16)
    eq(r.output_text, ANSWER)
    eq(r.model, MODEL)
    eq(r.status, "incomplete")
    eq(r.incomplete_details.reason, "max_output_tokens")
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0, r.usage


@test
def responses_stream():
    stream = client.responses.create(model=MODEL, input="Say hi", max_output_tokens=16, stream=True)
    text, kinds, final = "", [], None
    for event in stream:
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            text += event.delta
        if event.type == "response.incomplete":
            final = event.response
    eq(text, ANSWER)
    eq(kinds[0], "response.created")
    eq(kinds[-1], "response.incomplete")
    eq(final.output_text, ANSWER)


@test
def responses_with_memory_store_the_exchange():
    thread = f"local-{uuid.uuid4().hex[:8]}"
    headers = {"x-thread-id": thread, "x-resource-id": "user-local"}
    r = client.responses.create(model=MODEL, input="Say hi", max_output_tokens=16, extra_headers=headers)
    eq(r.output_text, ANSWER)
    req = urllib.request.Request(
        f"{BASE}/memory/threads/{thread}/messages", headers={"authorization": f"Bearer {KEY}"}
    )
    with urllib.request.urlopen(req) as res:
        stored = json.load(res)["messages"]
    eq([(m["role"], m["content"]) for m in stored], [("user", "Say hi"), ("assistant", ANSWER)])


sys.exit(run("OpenAI Python SDK: Responses over a local server without them"))
