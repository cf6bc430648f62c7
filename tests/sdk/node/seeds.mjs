// Runs the OpenAI Node SDK snippets of the seed documents (shared/seeds/001, 002, 003) against memgate.
//
// Each snippet is kept as the seed writes it, with only the client's baseURL and apiKey pointed at
// memgate, and then its printed result is checked. Upstream answers come from fixtures/openai/
// (through memgate-mock), so the checks know exactly what the model "says".
//
// Environment:
//   MEMGATE_BASE_URL     memgate's OpenAI base URL, e.g. http://127.0.0.1:1234/v1
//   MEMGATE_API_KEY      a key memgate accepts (stands in for YOUR_API_KEY / "anything")
//   MEMGATE_EXPECT_AUTH  "1" when memgate requires keys: then a wrong key must be refused with 401
//   MEMGATE_SKIP         comma-separated test names to skip
//
// Prints one line per test, then "N passed, M failed" (", K skipped" when some were skipped), and
// exits non-zero if anything failed.

import OpenAI from "openai";
import { VERSION } from "openai/version";
import { readFileSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const BASE_URL = process.env.MEMGATE_BASE_URL ?? "http://127.0.0.1:8080/v1";
const API_KEY = process.env.MEMGATE_API_KEY ?? "anything";
const EXPECT_AUTH = process.env.MEMGATE_EXPECT_AUTH === "1";
const SKIP = new Set((process.env.MEMGATE_SKIP ?? "").split(",").map((s) => s.trim()).filter(Boolean));
const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "fixtures", "openai");

// The seeds' ./gateway module: "All subsequent examples import this client instance".
const client = new OpenAI({
  apiKey: API_KEY,
  baseURL: BASE_URL,
  timeout: 30_000,
});

const TESTS = [];
const test = (name, fn) => TESTS.push({ name, fn });

class Skip extends Error {}

function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}

function eq(got, want) {
  const g = JSON.stringify(got);
  const w = JSON.stringify(want);
  if (g !== w) throw new Error(`got ${g}, want ${w}`);
}

/** Runs `fn` with stdout captured (console.log and process.stdout.write both land there). */
async function printed(fn) {
  const write = process.stdout.write;
  let out = "";
  process.stdout.write = (chunk, ...rest) => {
    out += typeof chunk === "string" ? chunk : Buffer.from(chunk).toString();
    const cb = rest.find((r) => typeof r === "function");
    if (cb) cb();
    return true;
  };
  try {
    await fn();
  } finally {
    process.stdout.write = write;
  }
  return out;
}

/** The float vectors a `*_embeddings_<label>_float` fixture holds, or null without the repo. */
function fixtureVectors(label) {
  let dirs;
  try {
    dirs = readdirSync(FIXTURES).filter((d) => d.endsWith(`_embeddings_${label}_float`)).sort();
  } catch {
    return null;
  }
  if (!dirs.length) return null;
  const body = JSON.parse(readFileSync(join(FIXTURES, dirs[0], "response.json"), "utf8"));
  return body.data.map((d) => d.embedding);
}

function assertVectors(got, label) {
  const want = fixtureVectors(label);
  if (!want) return;
  eq(got.length, want.length);
  got.forEach((g, i) => {
    eq(g.length, want[i].length);
    g.forEach((x, j) => assert(Math.abs(x - want[i][j]) <= 1e-6 * Math.max(1, Math.abs(want[i][j])), `${label}[${i}][${j}]: ${x} != ${want[i][j]}`));
  });
}

const helloWorldTool = {
  type: "function",
  function: {
    name: "helloWorld",
    description: "Returns a greeting for the given name",
    parameters: {
      type: "object",
      properties: {
        name: { type: "string", description: "The name to greet" },
      },
      required: ["name"],
    },
  },
};

// ---------------------------------------------------------------- 001: Mastra, OpenAI TypeScript SDK

test("chat_completions", async () => {
  let completion;
  const out = await printed(async () => {
    completion = await client.chat.completions.create({
      model: "google/gemini-2.5-flash",
      messages: [
        { role: "user", content: "What is 2+2? Reply with just the number." },
      ],
      max_tokens: 20,
    });
    console.log(completion.choices[0].message.content);
  });
  eq(out.trim(), "4");
  eq(completion.object, "chat.completion");
  eq(completion.model, "google/gemini-2.5-flash");
  assert(completion.usage.total_tokens > 0, "usage");
});

test("system_messages", async () => {
  const out = await printed(async () => {
    const completion = await client.chat.completions.create({
      model: "google/gemini-2.5-flash",
      messages: [
        { role: "system", content: "You are a calculator. Only respond with numbers, no words." },
        { role: "user", content: "What is 10 * 5?" },
      ],
      max_tokens: 100,
    });
    console.log(completion.choices[0].message.content);
  });
  eq(out.trim(), "50");
});

test("multi_turn", async () => {
  const out = await printed(async () => {
    const completion = await client.chat.completions.create({
      model: "google/gemini-2.5-flash",
      messages: [
        { role: "user", content: "Remember this word: banana" },
        { role: "assistant", content: "Got it, I will remember it." },
        { role: "user", content: "What word did I ask you to remember? Reply with just the word." },
      ],
      max_tokens: 100,
    });
    console.log(completion.choices[0].message.content);
  });
  eq(out.trim(), "banana");
});

test("streaming", async () => {
  let chunks = 0;
  const out = await printed(async () => {
    const stream = await client.chat.completions.create({
      model: "google/gemini-2.5-flash",
      messages: [
        { role: "user", content: "Count from 1 to 5, separated by commas." },
      ],
      max_tokens: 50,
      stream: true,
    });
    for await (const chunk of stream) {
      chunks++;
      eq(chunk.model, "google/gemini-2.5-flash");
      const delta = chunk.choices[0]?.delta?.content;
      if (delta) {
        process.stdout.write(delta);
      }
    }
  });
  eq(out, "1, 2, 3, 4, 5");
  assert(chunks > 2, `only ${chunks} chunks: not streamed`);
});

test("memory_thread_and_resource_ids", async () => {
  // First request: introduce yourself
  const first = await client.chat.completions.create(
    {
      model: "google/gemini-2.5-flash",
      messages: [
        { role: "user", content: "My name is Alex and I prefer concise answers." },
      ],
    },
    {
      headers: {
        "x-thread-id": "my-thread-1",
        "x-resource-id": "user-42",
      },
    },
  );
  // Second request: the gateway remembers
  const response = await client.chat.completions.create(
    {
      model: "google/gemini-2.5-flash",
      messages: [
        { role: "user", content: "What is my name?" },
      ],
    },
    {
      headers: {
        "x-thread-id": "my-thread-1",
        "x-resource-id": "user-42",
      },
    },
  );
  const out = await printed(async () => {
    console.log(response.choices[0].message.content);
  });
  // The second request sent only its own message; the gateway supplied the first.
  assert(first.choices[0].message.content, "first answer");
  eq(out.trim(), "Alex");
});

test("tool_calling", async () => {
  // Step 1: Send the request with tools
  const first = await client.chat.completions.create({
    model: "google/gemini-2.5-flash",
    messages: [
      { role: "user", content: "Use the helloWorld tool to greet Alice." },
    ],
    tools: [helloWorldTool],
    tool_choice: { type: "function", function: { name: "helloWorld" } },
    max_tokens: 200,
  });
  const toolCall = first.choices[0].message.tool_calls[0];
  const args = JSON.parse(toolCall.function.arguments);
  // args.name === "Alice"
  eq(args.name, "Alice");
  eq(first.choices[0].finish_reason, "tool_calls");
  assert(toolCall.id.startsWith("call_"), toolCall.id);
  eq(toolCall.function.name, "helloWorld");

  // Execute the tool locally
  const result = { greeting: `Hello, ${args.name}!` };

  // Step 2: Send the tool result back
  const out = await printed(async () => {
    const second = await client.chat.completions.create({
      model: "google/gemini-2.5-flash",
      messages: [
        { role: "user", content: "Use the helloWorld tool to greet Alice." },
        first.choices[0].message,
        {
          role: "tool",
          tool_call_id: toolCall.id,
          content: JSON.stringify(result),
        },
      ],
      tools: [helloWorldTool],
      max_tokens: 200,
    });
    console.log(second.choices[0].message.content);
  });
  eq(out.trim(), "Hello, Alice!");
});

test("streaming_tool_calls", async () => {
  const stream = await client.chat.completions.create({
    model: "google/gemini-2.5-flash",
    messages: [
      { role: "user", content: "Use the helloWorld tool to greet Bob." },
    ],
    tools: [helloWorldTool],
    tool_choice: { type: "function", function: { name: "helloWorld" } },
    max_tokens: 200,
    stream: true,
  });
  const toolCalls = {};
  let finish = null;
  let chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    const delta = chunk.choices[0]?.delta;
    for (const tc of delta?.tool_calls ?? []) {
      const idx = tc.index ?? 0;
      const entry = toolCalls[idx] ?? (toolCalls[idx] = { args: "" });
      if (tc.id) entry.id = tc.id;
      if (tc.function?.name && !entry.name) entry.name = tc.function.name;
      if (tc.function?.arguments) entry.args += tc.function.arguments;
    }
    finish = chunk.choices[0]?.finish_reason ?? finish;
  }
  const firstCall = toolCalls[0];
  const out = await printed(async () => {
    console.log(firstCall.name); // "helloWorld"
    console.log(JSON.parse(firstCall.args)); // { name: "Bob" }
  });
  eq(firstCall.name, "helloWorld");
  eq(JSON.parse(firstCall.args), { name: "Bob" });
  assert(firstCall.id?.startsWith("call_"), `id ${firstCall.id}`);
  eq(finish, "tool_calls");
  assert(chunks > 3, `only ${chunks} chunks: arguments were not streamed`);
  assert(out.startsWith("helloWorld\n"), out);
});

test("responses_api", async () => {
  let response;
  const out = await printed(async () => {
    response = await client.responses.create({
      model: "openai/gpt-5.4-mini",
      input: "What is 3+3? Reply with just the number.",
      max_output_tokens: 10,
    });
    const message = response.output[0];
    if (message.type === "message") {
      const text = message.content[0];
      if (text.type === "output_text") {
        console.log(text.text); // "6"
      }
    }
  });
  eq(out.trim(), "6");
  eq(response.object, "response");
  eq(response.status, "completed");
  eq(response.output_text, "6");
  eq(response.model, "openai/gpt-5.4-mini");
});

test("streaming_responses", async () => {
  const types = [];
  const out = await printed(async () => {
    const stream = await client.responses.create({
      model: "openai/gpt-5.4-mini",
      input: "Count from 1 to 5, separated by commas.",
      max_output_tokens: 50,
      stream: true,
    });
    for await (const event of stream) {
      types.push(event.type);
      if (event.type === "response.output_text.delta") {
        process.stdout.write(event.delta);
      }
    }
  });
  eq(out, "1, 2, 3, 4, 5");
  eq(types[0], "response.created");
  eq(types[types.length - 1], "response.completed");
  for (const t of ["response.in_progress", "response.output_item.added", "response.content_part.added",
    "response.output_text.done", "response.content_part.done", "response.output_item.done"]) {
    assert(types.includes(t), `${t} missing from ${types}`);
  }
});

test("byok_pass_through", async () => {
  const client = new OpenAI({
    apiKey: "sk-your-openai-key", // Your provider key
    baseURL: BASE_URL,
    defaultHeaders: {
      "X-Memory-Gateway-Authorization": `Bearer ${API_KEY}`, // msk_ key
    },
  });
  const completion = await client.chat.completions.create({
    model: "openai/gpt-5.4-mini",
    messages: [
      { role: "user", content: "Hello!" },
    ],
  });
  eq(completion.choices[0].message.content, "Hello! How can I help you today?");
});

// ---------------------------------------------------------------- 002: Mastra quickstart (TypeScript)

test("quickstart_first_request", async () => {
  const client = new OpenAI({
    apiKey: API_KEY,
    baseURL: BASE_URL,
  });
  const out = await printed(async () => {
    const response = await client.chat.completions.create({
      model: "google/gemini-2.5-flash",
      messages: [
        { role: "user", content: "Hello World!" },
      ],
    });
    console.log(response.choices[0].message.content);
  });
  eq(out.trim(), "Hello! How can I help you today?");
});

// ---------------------------------------------------------------- 003: agentgateway (Node.js)

test("agentgateway_basic_usage", async () => {
  const client = new OpenAI({
    baseURL: BASE_URL,
    apiKey: API_KEY, // Use placeholder if gateway has no auth
  });
  const out = await printed(async () => {
    const response = await client.chat.completions.create({
      model: "gpt-4o-mini",
      messages: [
        { role: "user", content: "Hello, how are you?" },
      ],
    });
    console.log(response.choices[0].message.content);
  });
  eq(out.trim(), "Hello! How can I help you today?");
});

test("agentgateway_environment_variables", async () => {
  // The seed exports OPENAI_API_BASE, which the SDK does not read; OPENAI_BASE_URL is what it
  // reads, so both are set.
  const saved = { ...process.env };
  process.env.OPENAI_API_BASE = BASE_URL;
  process.env.OPENAI_BASE_URL = BASE_URL;
  process.env.OPENAI_API_KEY = API_KEY;
  try {
    // Automatically uses OPENAI_API_BASE and OPENAI_API_KEY from env
    const client = new OpenAI();
    const out = await printed(async () => {
      const response = await client.chat.completions.create({
        model: "gpt-4o-mini",
        messages: [{ role: "user", content: "Hello!" }],
      });
      console.log(response.choices[0].message.content);
    });
    eq(out.trim(), "Hello! How can I help you today?");
  } finally {
    for (const k of ["OPENAI_API_BASE", "OPENAI_BASE_URL", "OPENAI_API_KEY"]) {
      if (k in saved) process.env[k] = saved[k];
      else delete process.env[k];
    }
  }
});

test("agentgateway_streaming", async () => {
  const client = new OpenAI({
    baseURL: BASE_URL,
    apiKey: API_KEY,
  });
  const out = await printed(async () => {
    const stream = await client.chat.completions.create({
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: "Write a short story" }],
      stream: true,
    });
    for await (const chunk of stream) {
      const content = chunk.choices[0]?.delta?.content || "";
      process.stdout.write(content);
    }
  });
  assert(out.startsWith("Once upon a time, a small robot named Pip"), out);
});

test("agentgateway_advanced_parameters", async () => {
  const response = await client.chat.completions.create({
    model: "gpt-4o-mini",
    messages: [
      { role: "system", content: "You are a helpful assistant." },
      { role: "user", content: "Explain quantum computing" },
    ],
    temperature: 0.7,
    max_tokens: 500,
    top_p: 0.9,
    frequency_penalty: 0.0,
    presence_penalty: 0.0,
  });
  assert(response.choices[0].message.content.includes("qubits"), response.choices[0].message.content);
});

test("agentgateway_error_handling", async () => {
  const client = new OpenAI({
    baseURL: BASE_URL,
    apiKey: API_KEY,
  });
  const out = await printed(async () => {
    try {
      const response = await client.chat.completions.create({
        model: "gpt-4o-mini",
        messages: [{ role: "user", content: "Hello!" }],
      });
      console.log(response.choices[0].message.content);
    } catch (error) {
      if (error instanceof OpenAI.APIError) {
        console.error(`OpenAI API error: ${error.message}`);
        console.error(`Status: ${error.status}`);
      } else {
        console.error(`Unexpected error: ${error}`);
      }
    }
  });
  eq(out.trim(), "Hello! How can I help you today?");
});

test("agentgateway_upstream_error", async () => {
  // The seed's error handler, on a request whose upstream answers 429. Retries are off so the
  // test does not sit through the SDK's backoff.
  const client = new OpenAI({
    baseURL: BASE_URL,
    apiKey: API_KEY,
    maxRetries: 0,
  });
  let caught;
  try {
    const response = await client.chat.completions.create({
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: "Please trigger-upstream-error now." }],
    });
    console.log(response.choices[0].message.content);
  } catch (error) {
    caught = error;
  }
  assert(caught instanceof OpenAI.APIError, `not an OpenAI.APIError: ${caught}`);
  assert(caught instanceof OpenAI.RateLimitError, `not an OpenAI.RateLimitError: ${caught}`);
  eq(caught.status, 429);
  eq(caught.code, "rate_limit_exceeded");
  assert(caught.message.includes("Rate limit reached"), caught.message);
});

test("agentgateway_function_calling", async () => {
  const tools = [
    {
      type: "function",
      function: {
        name: "get_weather",
        description: "Get current weather for a location",
        parameters: {
          type: "object",
          properties: {
            location: { type: "string", description: "City name" },
          },
          required: ["location"],
        },
      },
    },
  ];
  const response = await client.chat.completions.create({
    model: "gpt-4o-mini",
    messages: [{ role: "user", content: "What's the weather in Boston?" }],
    tools: tools,
  });
  const call = response.choices[0].message.tool_calls[0];
  eq(response.choices[0].finish_reason, "tool_calls");
  eq(call.function.name, "get_weather");
  eq(JSON.parse(call.function.arguments), { location: "Boston" });
});

test("agentgateway_embeddings", async () => {
  let response;
  const out = await printed(async () => {
    response = await client.embeddings.create({
      model: "text-embedding-3-small",
      input: "The quick brown fox jumps over the lazy dog",
    });
    console.log(response.data[0].embedding);
  });
  const embedding = response.data[0].embedding;
  assert(Array.isArray(embedding) && embedding.every((x) => typeof x === "number"), `not numbers: ${out}`);
  eq(response.model, "text-embedding-3-small");
  assertVectors([embedding], "fox");
});

test("embeddings_batch", async () => {
  const response = await client.embeddings.create({
    model: "text-embedding-3-small",
    input: ["The quick brown fox jumps over the lazy dog", "The five boxing wizards jump quickly"],
  });
  eq(response.data.map((d) => d.index), [0, 1]);
  assertVectors(response.data.map((d) => d.embedding), "fox_wizards_batch");
});

test("agentgateway_verification", async () => {
  // node -e "import('openai').then(({default: OpenAI}) => {...})"
  const out = await printed(() =>
    import("openai").then(({ default: OpenAI }) => { const c = new OpenAI({ baseURL: BASE_URL, apiKey: API_KEY }); return c.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hello" }] }).then((r) => console.log(r.choices[0].message.content)); }),
  );
  eq(out.trim(), "Hello! How can I help you today?");
});

// ---------------------------------------------------------------- errors and models

test("unknown_provider", async () => {
  let caught;
  try {
    await client.chat.completions.create(
      { model: "nosuch/model", messages: [{ role: "user", content: "Hello!" }] },
      { maxRetries: 0 },
    );
  } catch (error) {
    caught = error;
  }
  assert(caught instanceof OpenAI.BadRequestError, `not a BadRequestError: ${caught}`);
  eq(caught.status, 400);
});

test("wrong_api_key", async () => {
  if (!EXPECT_AUTH) throw new Skip("MEMGATE_EXPECT_AUTH is not 1");
  const bad = new OpenAI({ apiKey: "msk_wrong_key_0000000000000000", baseURL: BASE_URL, maxRetries: 0 });
  let caught;
  try {
    await bad.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hello!" }] });
  } catch (error) {
    caught = error;
  }
  assert(caught instanceof OpenAI.AuthenticationError, `not an AuthenticationError: ${caught}`);
  eq(caught.status, 401);
});

test("models_list", async () => {
  const ids = [];
  for await (const model of client.models.list()) {
    eq(model.object, "model");
    ids.push(model.id);
  }
  assert(ids.length > 0, "no models listed");
});

// ---------------------------------------------------------------- runner

let passed = 0;
let skipped = 0;
const failed = [];
console.log(`openai ${VERSION} against ${BASE_URL}`);
for (const { name, fn } of TESTS) {
  if (SKIP.has(name)) {
    skipped++;
    console.log(`SKIP ${name} (MEMGATE_SKIP)`);
    continue;
  }
  try {
    await fn();
    passed++;
    console.log(`ok   ${name}`);
  } catch (error) {
    if (error instanceof Skip) {
      skipped++;
      console.log(`SKIP ${name} (${error.message})`);
    } else {
      failed.push({ name, error });
      console.log(`FAIL ${name}`);
    }
  }
}
for (const { name, error } of failed) {
  console.log(`\n--- ${name}\n${error?.stack ?? error}`);
}
console.log(`\n${passed} passed, ${failed.length} failed${skipped ? `, ${skipped} skipped` : ""}`);
process.exitCode = failed.length ? 1 : 0;
