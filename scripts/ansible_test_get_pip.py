"""Offline stand-in for ansible-test's pip bootstrap script.

`ansible-test sanity --venv` bootstraps pip in each virtualenv with a get-pip script it downloads from
ci-files.testing.ansible.com, which machines with only a PyPI mirror cannot reach. This does the same
job with what the interpreter ships: pip from the bundled ensurepip wheel, then the exact packages
ansible-test asks for (its pinned pip among them) from the configured index. scripts/setup.sh puts it
where ansible-test looks first: ~/.ansible/test/cache/get_pip_<version>.py.
"""

import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"])
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", *args]))
