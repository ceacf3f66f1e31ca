#!/usr/bin/env python3
"""`ansible-test sanity` for netmend as the collection netmend.netmend, under the controller's Python and the
nodes' oldest supported one (3.9: the modules and the core run there).

ansible-test needs the collection at .../ansible_collections/netmend/netmend/ and does not walk directory
symlinks (its `symlinks` test refuses them), while the repository's plugins/ holds only symlinks to library/,
module_utils/, action_plugins/ and filter_plugins/. So this builds the collection with `ansible-galaxy
collection build` (the files a user installs), unpacks it into a temporary tree, turns plugins/'s symlinks into
the directories they point to, and runs ansible-test there. Results: the temporary tree's tests/output/.

ansible-test bootstraps pip into each of its virtual environments with a get-pip script it downloads from
ci-files.testing.ansible.com; without that host, the script is made here from the pip wheel on PyPI (the same
thing get-pip.py does: put the wheel on sys.path and run its `pip install`). The environments themselves get
their packages from PyPI.

    tools/sanity.py                          every test but SKIP's under Python 3.11 and 3.9
    tools/sanity.py --python 3.11            one Python
    tools/sanity.py --keep -- --test pep8    keep the tree; extra arguments go to ansible-test sanity
"""

import argparse
import base64
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
NAMESPACE, NAME = "netmend", "netmend"
PYTHONS = ("3.11", "3.9")
# Every sanity test runs (those without targets, such as pslint, pass trivially) except these, each with why.
SKIP = (
    # ruff (pyproject.toml) is netmend's one judge of Python style; ansible-test's pycodestyle and pylint
    # configurations disagree with it (blank lines around the documentation block, `_` as a throwaway name).
    "pep8",
    "pylint",
)
PYENV_VERSIONS = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
GET_PIP = '''"""pip's bootstrap for ansible-test, made by netmend's tools/sanity.py from pip {version}'s wheel on PyPI:
what get-pip.py does, put the wheel on sys.path and run its `pip install`."""
import base64
import os
import sys
import tempfile

WHEEL = "{wheel}"

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
path = os.path.join(tempfile.mkdtemp(prefix="get-pip-"), "{filename}")
with open(path, "wb") as fh:
    fh.write(base64.b64decode(WHEEL))
sys.path.insert(0, path)
from pip._internal.cli.main import main  # noqa: E402

sys.exit(main(["install", "--upgrade", "--force-reinstall", *args]))
'''


def say(msg):
    print(f"sanity: {msg}", flush=True)


def ansible_test_pip_version():
    """The pip version ansible-test bootstraps (ansible_test/_internal/python_requirements.py)."""
    import ansible_test  # noqa: PLC0415 - only the venv's Python has it

    text = (Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py").read_text()
    found = re.search(r"pip='([0-9.]+)'", text)
    if not found:
        sys.exit("sanity: cannot find the pip version ansible-test bootstraps")
    return found.group(1)


def ensure_get_pip():
    """Put a get-pip script where ansible-test looks before it downloads one."""
    version = ansible_test_pip_version()
    cache = Path.home() / ".ansible" / "test" / "cache" / f"get_pip_{version.replace('.', '_')}.py"
    if cache.exists():
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "-d", tmp, f"pip=={version}"], check=True)
        wheel = next(Path(tmp).glob("pip-*.whl"))
        script = GET_PIP.format(version=version, filename=wheel.name,
                                wheel=base64.b64encode(wheel.read_bytes()).decode())
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.with_suffix(".tmp").write_text(script)
    cache.with_suffix(".tmp").replace(cache)
    say(f"made ansible-test's pip {version} bootstrap: {cache}")


def interpreter(version):
    """A python<version> that runs: $NETMEND_PY39 (for 3.9; ./dev test's), python3.9 on PATH, the repository's
    venvs' (.venv39), pyenv's. A pyenv shim on PATH may have no version behind it, so each one is tried."""
    venvs = sorted(glob.glob(str(ROOT / f".venv*/bin/python{version}")))
    pyenv = sorted(glob.glob(str(PYENV_VERSIONS / f"{version}.*/bin/python{version}")), reverse=True)
    candidates = [os.environ.get(f"NETMEND_PY{version.replace('.', '')}"), shutil.which(f"python{version}"),
                  *venvs, *pyenv]
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True, check=False)
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    return None


def assemble(tmp):
    """The collection as built, under tmp/ansible_collections/netmend/netmend, plugins/ as real directories."""
    coll = tmp / "ansible_collections" / NAMESPACE / NAME
    coll.mkdir(parents=True)
    subprocess.run([str(VENV_BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(tmp), str(ROOT)],
                   check=True, stdout=subprocess.DEVNULL)
    tarball = next(tmp.glob(f"{NAMESPACE}-{NAME}-*.tar.gz"))
    shutil.unpack_archive(tarball, coll)
    tarball.unlink()
    for link in (coll / "plugins").iterdir():
        if link.is_symlink():
            target = (link.parent / os.readlink(link)).resolve()
            link.unlink()
            shutil.move(target, link)
    # A source tree, as ansible-test expects it: galaxy.yml instead of the build's manifests.
    for name in ("MANIFEST.json", "FILES.json"):
        (coll / name).unlink()
    shutil.copy2(ROOT / "galaxy.yml", coll / "galaxy.yml")
    # The build leaves tests/ out; ansible-test reads its ignore files from there.
    shutil.copytree(ROOT / "tests" / "sanity", coll / "tests" / "sanity")
    return coll


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--python", action="append", help=f"a Python version (default: {' '.join(PYTHONS)})")
    parser.add_argument("--keep", action="store_true", help="keep the temporary tree")
    parser.add_argument("extra", nargs="*", help="more ansible-test sanity arguments (after --)")
    args = parser.parse_args()
    versions = args.python or list(PYTHONS)
    in_ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    tmp = Path(tempfile.mkdtemp(prefix="netmend-sanity-"))
    failed, skipped = [], []
    try:
        pybin = tmp / "bin"
        pybin.mkdir()
        for version in versions:
            if version == f"{sys.version_info.major}.{sys.version_info.minor}":
                continue  # the controller's own, .venv/bin/python<version> on PATH
            found = interpreter(version)
            if found:
                (pybin / f"python{version}").symlink_to(found)
            elif in_ci or args.python:
                sys.exit(f"sanity: no python{version} ($NETMEND_PY{version.replace('.', '')}, PATH, .venv*/, pyenv)")
            else:
                say(f"python{version} not found: the Python {version} sanity run did NOT run (CI fails here)")
                skipped.append(version)
        ensure_get_pip()
        coll = assemble(tmp)
        # Not the playbook project's settings (./dev exports ANSIBLE_CONFIG): ansible-test sets its own.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
        env["PATH"] = f"{pybin}:{VENV_BIN}:{os.environ.get('PATH', '')}"
        skips = [a for t in SKIP for a in ("--skip-test", t)]
        for version in (v for v in versions if v not in skipped):
            say(f"ansible-test sanity --python {version}")
            started = time.monotonic()
            rc = subprocess.run([str(VENV_BIN / "ansible-test"), "sanity", "--color", "no", "--python", version,
                                 *skips, *args.extra], cwd=coll, env=env, check=False).returncode
            say(f"python {version}: {'passed' if rc == 0 else 'FAILED'} in {time.monotonic() - started:.0f} s")
            if rc:
                failed.append(version)
    finally:
        if args.keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if failed:
        sys.exit(f"sanity: failed under Python {', '.join(failed)}")


if __name__ == "__main__":
    main()
