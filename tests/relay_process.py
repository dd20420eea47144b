"""Runs the relay as a real process (`python -m proxy serve`), for tests that kill or signal it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import aiohttp

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports (each socket stays bound until all are chosen)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class RelayProcess:
    """`async with RelayProcess(config, port) as relay:` starts it and waits until it answers."""

    def __init__(
        self,
        config: Path,
        port: int,
        env: dict[str, str] | None = None,
        args: Sequence[str] = (),  # more `serve` arguments, e.g. ("--role", "ingest")
    ) -> None:
        self.config = config
        self.port = port
        self.env = {**os.environ, **(env or {})}
        self.args = tuple(args)
        self.proc: asyncio.subprocess.Process | None = None
        self.log = config.parent / f"relay-{port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, within_secs: float = 20.0) -> None:
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "proxy",
                "serve",
                "--config",
                str(self.config),
                *self.args,
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        await self.wait_ready(within_secs)

    async def wait_ready(self, within_secs: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_secs
        async with aiohttp.ClientSession() as http:
            while True:
                if self.proc is not None and self.proc.returncode is not None:
                    raise AssertionError(
                        f"relay exited with {self.proc.returncode}:\n{self.output()}"
                    )
                try:
                    async with http.get(f"{self.url}/healthz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if loop.time() > deadline:
                    raise AssertionError(
                        f"relay did not answer within {within_secs}s:\n{self.output()}"
                    )
                await asyncio.sleep(0.05)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or an OOM kill."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def terminate(self, within_secs: float = 30.0) -> int:
        """SIGTERM, then wait for the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), within_secs)

    async def __aenter__(self) -> RelayProcess:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc is not None and self.proc.returncode is None:
            await self.kill()
