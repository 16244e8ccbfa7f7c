#!/bin/sh
# The image's entrypoint. The Airflow Helm chart passes `bash -c "exec airflow …"` or
# `airflow …`; our own Deployments pass `visitshare land --follow`, `visitshare share serve …`.
# A first word that is not a program runs as a visitshare command: `land --follow` works too.
set -e
case "${1:-}" in
  "" ) exec visitshare --help ;;
  airflow|visitshare|bash|sh|python|python3) exec "$@" ;;
  -*|land|share|db|topics|publish|validate|quarantine|maintain|releases|status) exec visitshare "$@" ;;
  *) exec "$@" ;;
esac
