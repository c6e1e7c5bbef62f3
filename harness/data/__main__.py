"""`python -m harness.data fetch NAME...`: fetch and verify bundled datasets ahead of use."""

import sys

from harness.data.bundled import main

sys.exit(main())
