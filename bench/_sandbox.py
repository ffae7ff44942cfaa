"""The sandbox OAuth provider in a process of its own, with N token sets minted up front.

    python -m bench._sandbox --tokens N --out FILE --client-id ID --client-secret SECRET

Writes the token sets (JSON list of [access_token, refresh_token]) to FILE, then serves
on a free loopback port and prints `ready <url>` (SIGTERM stops it). Minting in-process
takes a second for 100,000 tokens where the admin endpoint would take minutes.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from collections.abc import Sequence
from pathlib import Path

from relink_dev.sandbox import SandboxProvider, SandboxServer

REDIRECT_URI = "http://127.0.0.1:9/oauth/callback"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--client-secret", required=True)
    parser.add_argument("--expires-in", type=int, default=86_400)
    args = parser.parse_args(argv)

    provider = SandboxProvider(access_token_lifetime=args.expires_in)
    provider.register_client(args.client_id, args.client_secret, [REDIRECT_URI])
    sets = []
    for i in range(args.tokens):
        token = provider.issue_token(args.client_id, f"user{i}", "api", args.expires_in)
        sets.append([token["access_token"], token["refresh_token"]])
    args.out.write_text(json.dumps(sets), "utf-8")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with SandboxServer(provider) as server:
        print(f"ready {server.url}", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
