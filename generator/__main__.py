"""`python -m psbridge` runs the psbridge command."""

import sys

from .cli import main

sys.exit(main())
