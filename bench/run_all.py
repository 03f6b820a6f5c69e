"""Run the whole benchmark matrix and rewrite docs/benchmarks.md, docs/bench-connections.png and
docs/bench-results.json (the same as ``apisix-openai-triton bench --matrix``; extra flags such as
``--duration 5`` or ``--growth-calls 0`` are passed on). Run it from the repository root."""

from __future__ import annotations

import sys

from apisix_openai_triton.tools.bench import main

if __name__ == "__main__":
    sys.exit(main(["--matrix", *sys.argv[1:]]))
