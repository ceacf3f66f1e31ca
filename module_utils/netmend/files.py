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


def read_text(path):
    """The file's text (undecodable bytes kept as they are), or None when it does not exist."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def file_change(path, text, mode=0o644):
    """What making `path` hold `text` with `mode` takes: (changed, Ansible diff entry)."""
    current = read_text(path)
    changed = current != text or (current is not None and os.stat(path).st_mode & 0o7777 != mode)
    diff = {"before_header": path if current is not None else f"{path} (absent)", "after_header": path,
            "before": current or "", "after": text}
    return changed, diff


def replace_file(module, path, text, *, mode=0o644, backup=True):
    """Back the file up when its text changes (and `backup`), then write `text` atomically.

    Returns the backup's path, or None."""
    current = read_text(path)
    backup_file = module.backup_local(path) if backup and current is not None and current != text else None
    write_atomic(module, path, text, mode)
    return backup_file
