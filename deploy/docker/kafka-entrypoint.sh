#!/bin/bash
# Writes server.properties from the KAFKA_* environment (KAFKA_LOG_DIRS -> log.dirs, as in the
# apache/kafka image), formats the log dir the first time (KAFKA_CLUSTER_ID; a formatted dir is
# left alone, so a kept volume keeps every topic), then runs the broker as PID 1's replacement.
set -euo pipefail
: "${KAFKA_CLUSTER_ID:?KAFKA_CLUSTER_ID is required (one id per cluster, 22 base64url characters)}"
config=/opt/kafka/run/server.properties
: >"$config"
for name in $(compgen -e | grep '^KAFKA_' | sort); do  # names only: values keep every '='
  case "$name" in
    KAFKA_CLUSTER_ID|KAFKA_HEAP_OPTS|KAFKA_JVM_OPTS) continue ;;
  esac
  key=$(printf '%s' "${name#KAFKA_}" | tr '[:upper:]_' '[:lower:].')
  printf '%s=%s\n' "$key" "${!name}" >>"$config"
done
java=(java $KAFKA_HEAP_OPTS ${KAFKA_JVM_OPTS:-} -XX:+UseG1GC -Djava.awt.headless=true
      -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.xml -cp '/opt/kafka/libs/*')
if [ ! -f "$KAFKA_LOG_DIRS/meta.properties" ]; then
  "${java[@]}" kafka.tools.StorageTool format --cluster-id="$KAFKA_CLUSTER_ID" -c "$config" --ignore-formatted
fi
rm -f /opt/kafka/run/server.log  # the healthcheck reads this run's start-up line only
exec "${java[@]}" kafka.Kafka "$config"
