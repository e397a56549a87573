"""``python -m tests.jepsen.checker --history H --bootstrap B --region R``"""

import sys

from tests.jepsen.checker.cli import main

if __name__ == "__main__":
    sys.exit(main())
