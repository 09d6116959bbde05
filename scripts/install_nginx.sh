#!/usr/bin/env bash
# Install nginx from Debian when missing, without starting Debian's own nginx service (the app
# runs nginx with deploy/nginx.conf under its own control: run.sh, the Procfile or systemd).
# With it, libnginx-mod-http-brotli-static: nginx then serves the .br files collectstatic writes
# (optional: without it the config leaves brotli_static out and the workers send .br themselves).
set -euo pipefail
BROTLI_MODULE=/usr/lib/nginx/modules/ngx_http_brotli_static_module.so
packages=()
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then packages+=(nginx); fi
if [ ! -e "$BROTLI_MODULE" ]; then packages+=(libnginx-mod-http-brotli-static); fi
if [ ${#packages[@]} = 0 ]; then exit 0; fi
if ! command -v apt-get >/dev/null || [ "$(id -u)" != 0 ]; then
  if [[ " ${packages[*]} " == *" nginx "* ]]; then
    echo "nginx is missing: install it (Debian: apt-get install nginx) and run again." >&2
    exit 1
  fi
  exit 0  # only the brotli module is missing: nginx runs without it
fi
echo "Installing the Debian packages ${packages[*]} (the proxy in front of the workers) ..."
own_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  own_policy=1
fi
trap '[ "$own_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
