"""`python -m harness.data fetch NAME...`: fetch and verify bundled datasets ahead of use."""

import sys

from harness.data.sources import main

sys.exit(main())
