"""Entry point: ``python -m lem.workers --endpoint … --worker-id … --backend …``."""

import sys

from lem.workers.runtime.main import main

sys.exit(main())
