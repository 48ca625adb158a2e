"""A stand-in for get-pip.py, which `ansible-test --venv` downloads from the internet to put pip in each venv it
makes: pip from the standard library's ensurepip instead, then what was asked of get-pip (`pip==24.2`, say).
tests/test_collection_sanity.py puts it where ansible-test looks (~/.ansible/test/cache/get_pip_24_2.py)."""

import subprocess
import sys

# get-pip's own flags, which pip install does not take
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
# In a child: ensurepip blanks pip's configuration (PIP_CONFIG_FILE=/dev/null) in the process that runs it, and the
# install below needs the machine's (its certificate authority, its index).
subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade"])
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install"] + args))
