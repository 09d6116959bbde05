# Sourced by run.sh and test.sh: create .venv and install the locked packages when needed.
set -euo pipefail
PYTHON="${PYTHON:-python3}"

# venv_from_lock DIR LOCK: a virtualenv in DIR with LOCK's packages, installed again when
# LOCK changes (a stamp file in DIR names the lock's hash).
venv_from_lock() {
  local dir=$1 lock=$2 stamp
  if [ ! -x "$dir/bin/python" ]; then
    echo "Creating the virtualenv in $dir ..."
    "$PYTHON" -m venv "$dir"
  fi
  stamp=$dir/.installed-$(sha256sum "$lock" | cut -c1-16)
  if [ ! -f "$stamp" ]; then
    echo "Installing Python packages from $lock into $dir ..."
    "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$lock"
    rm -f "$dir"/.installed-*
    touch "$stamp"
  fi
}

venv_from_lock .venv requirements.lock
# Kernels run in a bubblewrap sandbox (kernels/sandbox.py); prlimit and setpriv come with util-linux.
if ! command -v bwrap >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "Installing the Debian package bubblewrap (the kernel sandbox) ..."
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null
fi
