"""`python -m runpod_worker.local_runpod`: see `cli.py` for the options and `README.md` beside this file."""

from __future__ import annotations

import sys

from runpod_worker.local_runpod.cli import main

sys.exit(main())
