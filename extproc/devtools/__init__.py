"""Development tools, outside the service's import graph: the mock provider and the demo
MCP server."""
