// The official OpenAI Node.js client against airlockd's OpenAI-compatible listener, over mutual TLS.
// Run by tests/integration/openai_test.cc (OpenAiNodeClientTest) from a temporary folder where it
// installed the `openai` and `undici` packages from the npm registry. Prints one JSON object with
// what each call returned (or the error the client raised), for the test to check.
//
// usage: node openai_node_client.mjs PORT PKI_DIR USER [refusals]
// USER "key=<API key>": no client certificate, the key as the client's apiKey (openai.api_keys).
// With `refusals`, only: a chat on the model "secret" (not granted to USER), then two chats on
// "stories" (USER's quota allows one request a minute).
import fs from 'node:fs';
import OpenAI from 'openai';
import { Agent, fetch } from 'undici';

const [port, pki, user] = process.argv.slice(2);
const apiKey = user.startsWith('key=') ? user.slice(4) : null;
// The client certificate goes in the TLS connector: the OpenAI client itself knows only API keys.
const agent = new Agent({
  connect: {
    ca: fs.readFileSync(`${pki}/ca.crt`),
    ...(apiKey ? {} : { cert: fs.readFileSync(`${pki}/${user}.crt`), key: fs.readFileSync(`${pki}/${user}.key`) }),
    servername: 'localhost',
  },
});
const client = new OpenAI({
  baseURL: `https://localhost:${port}/v1`,
  apiKey: apiKey ?? 'unused: the client certificate identifies the caller',
  fetch: (url, init) => fetch(url, { ...init, dispatcher: agent }),
  maxRetries: 0,
});
const messages = [{ role: 'user', content: 'Tell me a story' }];

// Each step records its result or the client's error (status, type, message), never throws.
async function attempt(step) {
  try {
    return { ok: await step() };
  } catch (e) {
    return { error: { status: e.status ?? null, type: e.type ?? null, message: String(e.message) } };
  }
}

const out = {};
if (process.argv[5] === 'refusals') {
  out.forbidden = await attempt(() => client.chat.completions.create({ model: 'secret', messages, max_tokens: 4 }));
  out.first = await attempt(async () => (await client.chat.completions.create({ model: 'stories', messages, max_tokens: 4 })).id);
  out.second = await attempt(() => client.chat.completions.create({ model: 'stories', messages, max_tokens: 4 }));
  console.log(JSON.stringify(out));
  process.exit(0);
}
out.models = await attempt(async () => (await client.models.list()).data.map((m) => m.id));
out.chat = await attempt(async () => {
  const r = await client.chat.completions.create({ model: 'stories', messages, max_tokens: 24, temperature: 0 });
  return { id: r.id, text: r.choices[0].message.content, finish: r.choices[0].finish_reason, usage: r.usage };
});
out.stream = await attempt(async () => {
  const stream = await client.chat.completions.create({
    model: 'stories', messages, max_tokens: 24, temperature: 0, stream: true, stream_options: { include_usage: true },
  });
  let text = '';
  let finish = null;
  let usage = null;
  let chunks = 0;
  for await (const chunk of stream) {
    chunks += 1;
    if (chunk.choices.length > 0) {
      text += chunk.choices[0].delta.content ?? '';
      if (chunk.choices[0].finish_reason) finish = chunk.choices[0].finish_reason;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  return { text, finish, usage, chunks };
});
out.completion = await attempt(async () => {
  const r = await client.completions.create({ model: 'stories', prompt: 'Once upon a time', max_tokens: 12, temperature: 0 });
  return { text: r.choices[0].text, finish: r.choices[0].finish_reason, usage: r.usage };
});
out.structured = await attempt(async () => {
  const r = await client.chat.completions.create({
    model: 'stories', messages, max_tokens: 200, temperature: 1, seed: 7,
    response_format: {
      type: 'json_schema',
      json_schema: {
        name: 'mood', strict: true,
        schema: { type: 'object', properties: { mood: { enum: ['happy', 'sad'] }, ok: { type: 'boolean' } }, required: ['mood', 'ok'] },
      },
    },
  });
  return r.choices[0].message.content;
});
out.not_found = await attempt(() => client.chat.completions.create({ model: 'nope', messages }));
out.bad_request = await attempt(() => client.chat.completions.create({ model: 'stories', messages, max_tokens: 1000000000 }));
console.log(JSON.stringify(out));
