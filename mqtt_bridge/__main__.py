"""`python -m mqtt_bridge run ...` is the same as the `kiosk-bridge` console script."""

import sys

from mqtt_bridge.cli import main

sys.exit(main())
