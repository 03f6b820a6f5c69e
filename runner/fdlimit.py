"""The open-file limit, checked at start: every gateway connection holds a file descriptor.

The gateway keeps up to 32 idle connections per worker plus one per call in flight, so a soft
limit of 1024 (a common default) is within reach of a busy gateway with many workers; past it,
``accept`` fails and the gateway answers its clients 503. The runner raises its soft limit
towards the hard one at start and says so in one warning line when that is still too low.
"""

from __future__ import annotations

import logging

log = logging.getLogger("apisix_openai_triton.runner")

WANTED_FDS = 4096
"""Enough for 100 gateway workers' keep-alive pools with room for calls in flight."""


def ensure_fd_limit(wanted: int = WANTED_FDS) -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to ``wanted`` (or the hard limit); warn if it stays lower.

    Returns the soft limit in force afterwards (-1: unlimited or not a POSIX system).
    """
    try:
        import resource
    except ImportError:  # not POSIX: nothing to check
        return -1
    unlimited = resource.RLIM_INFINITY
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == unlimited:
        return -1
    if soft < wanted:
        target = wanted if hard == unlimited else min(hard, wanted)
        if target > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
            except (ValueError, OSError) as exc:
                log.debug("cannot raise the open-file limit to %d: %s", target, exc)
    if soft < wanted:
        log.warning(
            "open-file limit is %d (hard limit %s): the runner can hold fewer than %d gateway "
            "connections at once and refuses the rest; raise it to at least %d (ulimit -n, or "
            "LimitNOFILE= under systemd)", soft, "unlimited" if hard == unlimited else hard,
            soft, wanted,
        )
    return soft
