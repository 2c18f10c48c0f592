"""Serve a sandbox cluster in a child process until its stdin closes.

The benchmarks run the sandbox apart from the operator so that the two do not share one event
loop on a 2-core machine: the operator's figures then measure the operator, not the API
server's share of its loop. The parent reads one line, `<url> <kubeconfig>`, from stdout and
stops the child by closing its stdin (which also happens when the parent dies).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from agentpool_sandbox.cluster import Sandbox


async def serve(state_dir: Path, time_scale: float) -> None:
    async with Sandbox(state_dir=state_dir, time_scale=time_scale) as sandbox:
        print(sandbox.url, sandbox.kubeconfig_path, flush=True)
        loop = asyncio.get_running_loop()
        # Blocking read in a thread: returns on EOF, i.e. when the parent closes the pipe.
        await loop.run_in_executor(None, sys.stdin.buffer.read)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--time-scale", type=float, default=1.0)
    args = parser.parse_args()
    asyncio.run(serve(args.state_dir, args.time_scale))


if __name__ == "__main__":
    main()
