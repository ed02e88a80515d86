"""Load generator of the RTMP relay and viewer benchmarks, run as its own
process on the load core: sipstream's LoopbackCallee (H.264 25 fps + PCMU;
320x240 and a 2 s loop unless WIDTH HEIGHT LOOP_SECONDS are given). Prints
its SIP port on stdout, runs until stdin closes.

    python benches/loopback_callee.py [WIDTH HEIGHT LOOP_SECONDS]"""

from __future__ import annotations

import asyncio
import sys

from sipstream.testing import LoopbackCallee


async def main() -> None:
    width, height, loop_seconds = (int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])) if len(sys.argv) > 3 \
        else (320, 240, 2.0)
    callee = LoopbackCallee(width=width, height=height, loop_seconds=loop_seconds)
    await callee.start()
    print(callee.port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await callee.stop()


if __name__ == "__main__":
    asyncio.run(main())
