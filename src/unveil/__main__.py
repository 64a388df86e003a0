import sys

from .process import cli_main

sys.exit(cli_main())
