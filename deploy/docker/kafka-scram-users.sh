#!/bin/bash
# The broker's SCRAM-SHA-512 users against the SASL_PASSWORD_<user> variables of its environment
# (deploy/docker/kafka-entrypoint.sh; docs/operations.md "Secrets and their rotation").
#   kafka-scram-users --record         remember every user's current password as the broker's
#                                      (after the storage format created them all)
#   kafka-scram-users --changed        wait for the broker to start, then set each password that
#                                      differs from the one remembered (the entrypoint runs it)
#   kafka-scram-users USER PASSWORD    set USER's password now, authenticating as admin with
#                                      SASL_PASSWORD_admin: the admin's own rotation starts here
# What is remembered is a SHA-256 of user and password per line, in the log dir's .scram-users.
set -euo pipefail
state="$KAFKA_LOG_DIRS/.scram-users"
digest() { printf '%s:%s' "$1" "$2" | sha256sum | cut -d' ' -f1; }
users() { compgen -e | grep '^SASL_PASSWORD_' | sed 's/^SASL_PASSWORD_//' | sort; }
remember() {
  touch "$state"
  grep -v "^$1 " "$state" >"$state.new" || true
  echo "$1 $(digest "$1" "$2")" >>"$state.new"
  mv "$state.new" "$state"
}
set_password() {
  java -Xmx192m -Dlog4j2.level=ERROR -cp '/opt/kafka/libs/*' kafka.admin.ConfigCommand \
    --bootstrap-server "${SCRAM_BOOTSTRAP:-127.0.0.1:9092}" --command-config /opt/kafka/run/admin.properties \
    --alter --entity-type users --entity-name "$1" --add-config "SCRAM-SHA-512=[iterations=8192,password=$2]" >/dev/null
}

case "${1:-}" in
  --record)
    for user in $(users); do name="SASL_PASSWORD_$user"; remember "$user" "${!name}"; done ;;
  --changed)
    until grep -qs "Kafka Server started" /opt/kafka/run/server.log; do sleep 1; done
    for user in $(users); do
      name="SASL_PASSWORD_$user"
      grep -qsx "$user $(digest "$user" "${!name}")" "$state" && continue
      if set_password "$user" "${!name}"; then
        remember "$user" "${!name}"
        echo "kafka-scram-users: set the password of User:$user from SASL_PASSWORD_$user"
      else
        echo "kafka-scram-users: could not set the password of User:$user: the admin password (SASL_PASSWORD_admin)" \
             "must be the broker's; a new admin password is set with \`kafka-scram-users admin NEW\` first" \
             "(docs/operations.md)" >&2
      fi
    done ;;
  -*|"")
    sed -n '2,12p' "$0" >&2; exit 2 ;;
  *)
    [ $# -eq 2 ] || { sed -n '2,12p' "$0" >&2; exit 2; }
    set_password "$1" "$2" && remember "$1" "$2" && echo "kafka-scram-users: set the password of User:$1" ;;
esac
