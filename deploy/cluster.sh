#!/usr/bin/env bash
# make cluster: Redis and three StreamHub instances sharing sessions through
# it, as plain processes on this machine (deploy/compose.yaml does the same
# with Docker). Instance N serves gRPC on 127.0.0.1:5005N, HTTP on
# 127.0.0.1:818N and admin on 127.0.0.1:918N. Ctrl-C drains and stops all.
#
# Needs redis-server (Debian: apt-get install redis-server) and the binaries
# in bin/ (make build). REDIS_PORT (default 6390) picks Redis's port.
set -euo pipefail
cd "$(dirname "$0")/.."

redis_port=${REDIS_PORT:-6390}
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  echo "cluster: redis-server and redis-cli are needed (Debian: apt-get install redis-server)" >&2
  exit 1
fi
if [ ! -x bin/streamhub ]; then
  echo "cluster: bin/streamhub not found: run make build" >&2
  exit 1
fi

# prefix labels each line of a process's output; it outlives a Ctrl-C so
# that the drain's last lines still show.
prefix() {
  trap '' INT
  sed -u "s/^/[$1] /"
}

work=$(mktemp -d)
pids=()     # the StreamHub instances
redis_pid=
# stop drains the instances first and stops Redis after them: a draining
# instance still saves its clients' positions to Redis.
stop() {
  trap - EXIT INT TERM
  if [ ${#pids[@]} -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  if [ -n "$redis_pid" ]; then
    kill -TERM "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap stop EXIT
trap 'exit 0' INT TERM

# Persistent as production Redis must be (README, "What Redis must be"): the
# append-only file, fsynced every second, in the work directory. In a
# session of its own, so that the terminal's Ctrl-C, which starts the
# instances' drain, does not stop Redis under them.
setsid redis-server --bind 127.0.0.1 --port "$redis_port" --appendonly yes --appendfsync everysec --dir "$work" \
  > >(prefix redis) 2>&1 &
redis_pid=$!
for _ in $(seq 100); do
  redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
  sleep 0.1
done
redis-cli -p "$redis_port" ping >/dev/null || { echo "cluster: Redis did not start on port $redis_port" >&2; exit 1; }

for n in 1 2 3; do
  STREAMHUB_ENGINE=redis \
  STREAMHUB_REDIS_ADDR="127.0.0.1:$redis_port" \
  STREAMHUB_REDIS_PREFIX=streamhub \
  STREAMHUB_GRPC_ADDR="127.0.0.1:5005$n" \
  STREAMHUB_HTTP_ADDR="127.0.0.1:818$n" \
  STREAMHUB_ADMIN_ADDR="127.0.0.1:918$n" \
  STREAMHUB_LOG_FORMAT=text \
    bin/streamhub > >(prefix "streamhub-$n") 2>&1 &
  pids+=($!)
done

cat <<MSG
cluster: Redis on 127.0.0.1:$redis_port; StreamHub on gRPC 127.0.0.1:50051, :50052, :50053
         (HTTP :8181-:8183, admin :9181-:9183). Chat across two instances:
  bin/streamhub-cli -url 127.0.0.1:50051 -session lobby stream-service stream-data --client-id alice
  bin/streamhub-cli -url 127.0.0.1:50052 -session lobby stream-service stream-data --client-id bob
Ctrl-C stops them all.
MSG
# Until Ctrl-C, or until any of them ends (a bad flag, a taken port).
wait -n "$redis_pid" "${pids[@]}" || true
echo "cluster: a process ended; stopping the others" >&2
