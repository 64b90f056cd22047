"""Airlock's MCP front door: ``/mcp/<connection>/`` with the same rules, holds, masking and audit trail
as kubectl, because every tool call is Kubernetes API requests sent through the gateway (server.py)."""
