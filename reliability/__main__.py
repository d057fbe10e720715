"""python -m reliability [--quick]: the reliability suite -> RELIABILITY.md (see reliability.run)."""

import sys

from reliability.run import main

sys.exit(main())
