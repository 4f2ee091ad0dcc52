import sys

from agent.signals import main

sys.exit(main())
