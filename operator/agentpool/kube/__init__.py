"""Kubernetes API access: client, exec over WebSocket, the per-pool quota."""
