#!/usr/bin/env python3
"""Entry point: `python build.py --help`. The code lives in src/kube_router_sctp/."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from kube_router_sctp.cli import main

if __name__ == "__main__":
    main()
