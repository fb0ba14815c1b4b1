"""``python -m polyvec_client import|export|search|collections ...``"""

import sys

from polyvec_client.cli.main import main

sys.exit(main())
