#!/usr/bin/env bash
# Set up (virtualenv, packages, database) and run the app on http://127.0.0.1:8000.
#   ./run.sh           run with the defaults (SQLite, in-memory channel layer, local Jupyter Server)
#   ./run.sh --demo    also create a demo user and notebook
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup.sh

demo=0
for arg in "$@"; do
  case "$arg" in
    --demo) demo=1 ;;
    *) echo "unknown option: $arg (use --demo)" >&2; exit 2 ;;
  esac
done

umask 077  # var/ (secret key, SQLite database, kernel homes) is for the app's user alone
.venv/bin/python manage.py migrate --no-input -v0
if [ "$demo" = 1 ]; then .venv/bin/python manage.py seed_demo; fi

exec .venv/bin/python manage.py serve "${HOST:-127.0.0.1}" "${PORT:-8000}"
