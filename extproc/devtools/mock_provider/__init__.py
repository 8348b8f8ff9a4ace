"""An OpenAI- and Anthropic-compatible provider for demos and tests (`extproc mock-provider`):
Chat Completions, the Responses API, completions, embeddings and models; Anthropic's
Messages; both APIs' token counts (`/responses/input_tokens`, `/messages/count_tokens`).

Deterministic: the reply text is the last user message, token counts are computed from
the text. Request headers make it misbehave on purpose:
  x-mock-status: 503      answer with that status and an error body in the path's schema
  x-mock-delay-ms: 250    wait before answering
  x-mock-chunk-delay-ms: 50  streams: wait this long between events
  x-mock-extra-field: NAME  JSON answers carry an extra field NAME (an API change)
JSON responses are gzip-compressed when the request accepts gzip.
With tools offered and a user's question last, the reply calls the first tool with
{"text": <the question>}; after a tool result, the reply echoes "tool result: ...".
  x-mock-cut-after: 3     streams: send 3 events, pause, close the connection (no final event);
                          JSON: close the connection without answering
  x-mock-end-after: 3     streams: send 3 events and end the response (no final event)
  x-mock-omit-final: 1    streams: the whole answer without its last event ([DONE],
                          message_stop or response.completed), as some OpenAI-compatible
                          servers send it
  x-mock-tag: soak        GET /mock/stats counts chat, responses and messages answers
                          served in full by tag: [answers, prompt tokens, completion tokens]
Response headers report what arrived, so tests can see what the gateway sent upstream:
  x-mock-path (with the query), x-mock-host, x-mock-headers (the names of all request
  headers), x-mock-authorization-sha256, x-mock-api-key-sha256 (of x-api-key) and
  x-mock-azure-api-key-sha256 (of api-key), each over every value that arrived joined
  by ", " (one value: its digest), x-mock-prompt-sha256 (of the last user message's
  text, as the provider received it), x-mock-body-bytes (the request body's size),
  x-mock-images-sha256 (of the base64 data of the request's images, in order, in
  either API's parts), x-mock-part-types (the type of every content part or block of the
  request's messages, in order, comma-separated)
"""

from extproc.devtools.mock_provider.provider import MockProvider, run
from extproc.devtools.mock_provider.reading import count_tokens

__all__ = ["MockProvider", "count_tokens", "run"]
