"""A demo MCP server for demos and tests (`extproc mcp-demo`), built with the official MCP
SDK and served over Streamable HTTP at `/mcp`.

Its tools:
  echo(text)          the text back, as text content
  add(a, b)           a + b, as text and as structured content {"result": a + b}
  run_shell(command)  "would run: <command>": it never runs anything, it stands for a tool
                      a tenant must not be offered
Options (each a flag of the command):
  json_response  answer each request with one JSON object instead of an SSE stream
  stateless      no sessions: no Mcp-Session-Id, no GET stream, every request stands alone
GET /mcp-demo/stats answers {"calls": {tool: n}, "unknown": n}: every `tools/call` that
arrived, counted before its arguments are read, so a test can show that a call the gateway
refused never reached the server.
"""

from extproc.devtools.mcp_demo.server import STATS_PATH, TOOLS, DemoServer, run

__all__ = ["STATS_PATH", "TOOLS", "DemoServer", "run"]
