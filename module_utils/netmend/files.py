"""Writing the files netmend owns: through a temp file in the same directory and an atomic move.

Stdlib only; `module` is any object with Ansible's `atomic_move(src, dest)`.
"""

import os
import tempfile


def write_atomic(module, path, text, mode=0o644):
    """Replace path with text atomically, creating its directory; the result has exactly `mode`."""
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o755)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".netmend.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        module.atomic_move(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    os.chmod(path, mode)  # atomic_move keeps an existing file's mode
