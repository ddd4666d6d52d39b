"""`python -m difflab COMMAND ...`, the same as `difflab COMMAND ...`; what torchrun starts:
`torchrun --nproc-per-node N -m difflab train ...`."""

import sys

from difflab.cli.main import main

sys.exit(main())
