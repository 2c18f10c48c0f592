"""`python -m agentpool_sandbox`: `agentpool sandbox` without the operator's CLI."""

from __future__ import annotations

from agentpool_sandbox.commands import sandbox

if __name__ == "__main__":
    sandbox(prog_name="python -m agentpool_sandbox")
