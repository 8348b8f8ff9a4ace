"""MCP tool governance: which tools a tenant may use, and definitions pinned against change."""
