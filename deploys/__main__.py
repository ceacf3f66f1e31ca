"""`python -m deploys audit|remediate ...` (deploys.run). gevent patches the standard library first, as the
pyinfra command does, so that nodes are read and changed in parallel."""

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402 - after gevent's patching

import deploys  # noqa: E402

deploys.import_ansible_quietly()  # the package was imported before gevent patched: -m imports it first

from deploys.run import main  # noqa: E402

sys.exit(main())
