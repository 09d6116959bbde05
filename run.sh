#!/usr/bin/env bash
# Set up (virtualenv, packages, database) and run the app on http://127.0.0.1:8000.
#   ./run.sh           run with the defaults (SQLite, in-memory channel layer, local Jupyter Server)
#   ./run.sh --demo    also create a demo user and notebook
#   ./run.sh --workers N   N daphne workers behind nginx (installed when missing), with a local
#                      redis-server unless REDIS_URL is set (see README, "Production")
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup.sh

demo=0
workers=0
while [ $# -gt 0 ]; do
  case "$1" in
    --demo) demo=1 ;;
    --workers) workers=${2:?--workers needs a number}; shift ;;
    --workers=*) workers=${1#--workers=} ;;
    *) echo "unknown option: $1 (use --demo, --workers N)" >&2; exit 2 ;;
  esac
  shift
done

umask 077  # var/ (secret key, SQLite database, kernel homes) is for the app's user alone
.venv/bin/python manage.py migrate --no-input -v0
if [ "$demo" = 1 ]; then .venv/bin/python manage.py seed_demo; fi

if [ "$workers" -gt 0 ]; then
  scripts/install_nginx.sh
  if [ -z "${REDIS_URL:-}" ] && ! command -v redis-server >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  fi
  exec .venv/bin/python manage.py stack --workers "$workers" --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}"
fi
exec .venv/bin/python manage.py serve "${HOST:-127.0.0.1}" "${PORT:-8000}"
