"""`python -m deploys audit|remediate ...` (deploys.run). gevent patches the standard library first, as the
pyinfra command does, so that nodes are read and changed in parallel."""

from gevent import get_hub, monkey

monkey.patch_all()

# Importing Ansible (deploys.inventory) probes getaddrinfo with a value it rejects, on purpose; under gevent that
# rejection would be printed as an error by gevent's hub.
_hub = get_hub()
_hub.exception_stream = None

import sys  # noqa: E402 - after gevent's patching

from deploys.run import main  # noqa: E402

del _hub.exception_stream  # gevent's default again: sys.stderr
sys.exit(main())
