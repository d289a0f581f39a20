#!/bin/sh
# The compose stack's Alertmanager entrypoint. Alertmanager reads secrets only from files
# (the *_file settings of alertmanager.yml); this gathers them into a tmpfs, from the files
# in alertmanager/secrets/ and then from environment variables (which win), and starts
# Alertmanager with the arguments it was given. An unset variable leaves its file as it is.
set -eu
src=${SECRETS_FILES:-/etc/alertmanager/secrets-files}
dst=${SECRETS_DIR:-/etc/alertmanager/secrets}
umask 077
for file in "$src"/*; do
    case "${file##*/}" in README.md|.gitignore) continue ;; esac
    if [ -f "$file" ]; then cp "$file" "$dst/"; fi
done
put() {
    if [ -n "$2" ]; then printf %s "$2" > "$dst/$1"; fi
}
put slack-api-url "${SLACK_API_URL:-}"
put smtp-password "${SMTP_PASSWORD:-}"
put pagerduty-ops-routing-key "${PAGERDUTY_OPS_ROUTING_KEY:-}"
put pagerduty-data-routing-key "${PAGERDUTY_DATA_ROUTING_KEY:-}"
put pagerduty-ml-routing-key "${PAGERDUTY_ML_ROUTING_KEY:-}"
exec "${ALERTMANAGER:-/bin/alertmanager}" "$@"
