"""Drives an agent with the official `openai` client: chat, streaming chat, completions,
models and embeddings. Prints one JSON object with what it saw; exits non-zero on any
client error. Usage: openai_client.py BASE_URL MODEL EMBEDDING_MODEL
With INFERPOOL_TEST_CA set, an HTTPS server is trusted by that CA file (and only by it)."""
import json
import os
import sys

import openai

base_url, model, embedding_model = sys.argv[1:4]
ca = os.environ.get("INFERPOOL_TEST_CA")
http_client = openai.DefaultHttpxClient(verify=ca) if ca else None
client = openai.OpenAI(
    base_url=base_url, api_key="unused", max_retries=0, timeout=120, http_client=http_client
)
out = {}

chat = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Say hello."}],
    max_tokens=8,
    temperature=0,
)
out["chat"] = {
    "content": chat.choices[0].message.content,
    "finish_reason": chat.choices[0].finish_reason,
    "completion_tokens": chat.usage.completion_tokens,
}

pieces, usage, finish = [], None, None
for chunk in client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Say hello."}],
    max_tokens=8,
    temperature=0,
    stream=True,
    stream_options={"include_usage": True},
):
    if chunk.choices:
        pieces.append(chunk.choices[0].delta.content or "")
        finish = chunk.choices[0].finish_reason or finish
    if chunk.usage:
        usage = chunk.usage.completion_tokens
out["stream"] = {"content": "".join(pieces), "finish_reason": finish, "completion_tokens": usage}

completion = client.completions.create(model=model, prompt="Once upon a time", max_tokens=6, temperature=0)
out["completion"] = {
    "text": completion.choices[0].text,
    "completion_tokens": completion.usage.completion_tokens,
}

out["models"] = [m.id for m in client.models.list()]

embeddings = client.embeddings.create(model=embedding_model, input=["hello", "world"])
out["embeddings"] = [len(e.embedding) for e in embeddings.data]

try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    out["unknown_model"] = "accepted"
except openai.NotFoundError as e:
    out["unknown_model"] = e.status_code

print(json.dumps(out))
