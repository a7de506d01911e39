"""`python -m hwprune.cli ...` (and `torchrun -m hwprune.cli finetune ...`): the hwprune command."""
import sys

from .main import main

sys.exit(main())
