"""Load generator of the RTMP relay benchmark, run as its own process on the
load core: sipstream's LoopbackCallee (H.264 320x240 25 fps + PCMU, 2 s
loop). Prints its SIP port on stdout, runs until stdin closes."""

from __future__ import annotations

import asyncio
import sys

from sipstream.testing import LoopbackCallee


async def main() -> None:
    callee = LoopbackCallee(width=320, height=240, loop_seconds=2)
    await callee.start()
    print(callee.port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await callee.stop()


if __name__ == "__main__":
    asyncio.run(main())
