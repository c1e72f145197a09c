"""``python -m visiontune`` (and ``torchrun -m visiontune``) runs the CLI."""

import sys

from visiontune.cli import main

sys.exit(main())
