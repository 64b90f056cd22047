"""kubesim: an asyncio Kubernetes API server double that real kubectl and client libraries accept.

Run it with ``python -m kubesim --state-dir DIR``; see kubesim/README.md.
"""
