#!/usr/bin/env bash
# One-off setup of the docker-compose stack: migrate the metadata DB and write the demo source
# (the blog's sample tables as DMS files, configured active) into the shared demo volume.
set -euo pipefail
airflow db migrate
dmscdc demo-source --raw "${DMSCDC_DEMO_HOME}/raw" --state "sqlite:///${DMSCDC_DEMO_HOME}/state.sqlite"
chown -R 50000:0 "${DMSCDC_DEMO_HOME}"
