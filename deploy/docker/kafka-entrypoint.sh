#!/bin/bash
# Writes server.properties from the KAFKA_* environment (KAFKA_LOG_DIRS -> log.dirs, as in the
# apache/kafka image), formats the log dir the first time (KAFKA_CLUSTER_ID; a formatted dir is
# left alone, so a kept volume keeps every topic), then runs the broker as PID 1's replacement.
#
# Authentication (docs/operations.md "Kafka users and ACLs"): each SASL_PASSWORD_<user> variable
# is a SCRAM-SHA-512 user. SASL_PASSWORD_admin is required with any SASL listener: the super user
# (KAFKA_SUPER_USERS), used between broker and controller (PLAIN on the controller listener: KRaft
# controllers cannot check SCRAM, whose credentials live in the metadata they serve) and for
# inter-broker traffic. The users are created when the log dir is formatted; afterwards a user
# whose password changed in the environment gets it set through the running broker
# (kafka-scram-users --changed), so rotating a password is: edit .env, `docker compose up -d`.
set -euo pipefail
umask 077  # server.properties holds the admin password
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

scram=()  # --add-scram arguments of the storage format: every user, the first time
if [[ "${KAFKA_LISTENER_SECURITY_PROTOCOL_MAP:-}" == *SASL_* ]]; then
  : "${SASL_PASSWORD_admin:?SASL_PASSWORD_admin is required with SASL listeners (the password of the super user)}"
  for name in $(compgen -e | grep '^SASL_PASSWORD_' | sort); do
    user=${name#SASL_PASSWORD_}
    [[ "${!name}" =~ ^[A-Za-z0-9._~-]+$ ]] \
      || { echo "kafka-entrypoint: $name is empty or has characters other than A-Z a-z 0-9 . _ ~ -" >&2; exit 2; }
    scram+=(--add-scram "SCRAM-SHA-512=[name=$user,password=${!name}]")
  done
  controller=${KAFKA_CONTROLLER_LISTENER_NAMES%%,*}
  for mapping in ${KAFKA_LISTENER_SECURITY_PROTOCOL_MAP//,/ }; do
    listener=$(printf '%s' "${mapping%%:*}" | tr '[:upper:]' '[:lower:]')
    [[ "${mapping#*:}" == SASL_* ]] || continue
    if [ "${mapping%%:*}" = "$controller" ]; then
      printf 'listener.name.%s.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="%s" user_admin="%s";\n' \
        "$listener" "$SASL_PASSWORD_admin" "$SASL_PASSWORD_admin" >>"$config"
    else
      printf 'listener.name.%s.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="%s";\n' \
        "$listener" "$SASL_PASSWORD_admin" >>"$config"
    fi
  done
  cat >/opt/kafka/run/admin.properties <<PROPERTIES
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$SASL_PASSWORD_admin";
PROPERTIES
fi

java=(java $KAFKA_HEAP_OPTS ${KAFKA_JVM_OPTS:-} -XX:+UseG1GC -Djava.awt.headless=true
      -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.xml -cp '/opt/kafka/libs/*')
rm -f /opt/kafka/run/server.log  # the healthcheck reads this run's start-up line only
if [ ! -f "$KAFKA_LOG_DIRS/meta.properties" ]; then
  "${java[@]}" kafka.tools.StorageTool format --cluster-id="$KAFKA_CLUSTER_ID" -c "$config" --ignore-formatted \
    "${scram[@]}"
  [ ${#scram[@]} -eq 0 ] || kafka-scram-users --record
elif [ ${#scram[@]} -gt 0 ]; then
  kafka-scram-users --changed &  # waits for the broker below, then sets any changed password
fi
exec "${java[@]}" kafka.Kafka "$config"
