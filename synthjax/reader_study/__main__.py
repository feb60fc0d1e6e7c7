"""`python -m synthjax.reader_study`: the command line of `cli.py`."""

import sys

from synthjax.reader_study.cli import main

sys.exit(main())
