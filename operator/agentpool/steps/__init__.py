"""Build steps: scheduling, batching, the session protocol, step status."""
