import sys

from pbx_core.cli import main

sys.exit(main())
