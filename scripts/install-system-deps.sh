#!/usr/bin/env bash
# Install Debian packages that are missing (prometheus brings promtool; prometheus-alertmanager
# brings amtool). A fresh machine has no package lists, so `apt-get update` runs first.
# With --optional, failure to install is reported but not fatal (used by `make demo`).
set -u
optional=0
if [ "${1:-}" = "--optional" ]; then optional=1; shift; fi
declare -A binary=([prometheus]=promtool [prometheus-alertmanager]=amtool
                   [prometheus-pushgateway]=prometheus-pushgateway [default-jre-headless]=java)
missing=()
for pkg in "$@"; do
  bin=${binary[$pkg]:-$pkg}
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/bin/$bin" ] || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo -n"; else
    echo "install-system-deps: need root (or sudo) to install: ${missing[*]}" >&2
    [ $optional -eq 1 ] && exit 0 || exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-system-deps: no apt-get; install these yourself: ${missing[*]}" >&2
  [ $optional -eq 1 ] && exit 0 || exit 1
fi
echo "install-system-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
if $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
  exit 0
fi
echo "install-system-deps: could not install ${missing[*]}" >&2
[ $optional -eq 1 ] && exit 0 || exit 1
