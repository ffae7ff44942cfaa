"""Serve every deployment in this process (`python -m deployments.serve`): the embedded
orchestration of `relink run`. Needs PREFECT_API_URL; runs flow runs from the current
directory (the repository root). Ctrl-C (SIGINT) or SIGTERM stops it; Prefect pauses the
served deployments on the way out, and the next start resumes them."""

from __future__ import annotations

import signal
import sys
from types import FrameType

from deployments.definitions import DEPLOYMENTS, to_deployment


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> None:
    from prefect import serve

    signal.signal(signal.SIGTERM, _interrupt)
    deployments = [to_deployment(spec) for spec in DEPLOYMENTS]
    try:
        serve(*deployments, print_starting_message=False)
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
