"""`python -m decodelab.server --model ...`: run the server (the same as `decodelab serve`)."""

import sys

from .cli import main

sys.exit(main())
