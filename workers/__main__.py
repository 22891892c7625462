"""Entry point: ``python -m lem.workers --endpoint … --worker-id … --backend …``."""

import sys

from lem.workers.runtime import main

sys.exit(main())
