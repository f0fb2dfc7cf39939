#!/usr/bin/env bash
# Builds the typed client example (codegen from ../schema/schema.graphql, then tsc) and runs it against a
# gateway started here on a fresh embedded database with the built-in simulator. Fails on any failure.
set -euo pipefail
cd "$(dirname "$0")"
root="$(cd .. && pwd)"

npm ci --no-audit --no-fund
npm run build

data_dir="$(mktemp -d)"
log="$data_dir/gateway.log"
port="${EXAMPLE_PORT:-4731}"
gateway_pid=""
cleanup() {
  if [ -n "$gateway_pid" ]; then kill "$gateway_pid" 2>/dev/null || true; wait "$gateway_pid" 2>/dev/null || true; fi
  rm -rf "$data_dir"
}
trap cleanup EXIT

export DATA_DIR="$data_dir" PORT="$port" HOST=127.0.0.1 LOG_LEVEL=warn
# Short simulated states keep the run to seconds, and a watched task is checked often enough to see each
# of them; the example's URLs are placeholders nobody fetches.
export SIMULATOR_STEP_MS=400 POLL_INTERVAL_MS=100 WATCHED_POLL_INTERVAL_MS=150 CHECK_INPUT_URLS=false
(cd "$root" && exec node --import tsx src/main.ts) >"$log" 2>&1 &
gateway_pid=$!

url="http://127.0.0.1:$port"
for _ in $(seq 1 120); do
  # A request made while the gateway is still starting can go unanswered: every probe has a deadline.
  curl -fsS --max-time 2 "$url/readyz" >/dev/null 2>&1 && break
  kill -0 "$gateway_pid" 2>/dev/null || { cat "$log" >&2; echo "the gateway did not start" >&2; exit 1; }
  sleep 0.5
done
curl -fsS --max-time 2 "$url/readyz" >/dev/null || { cat "$log" >&2; echo "the gateway is not ready" >&2; exit 1; }

token="$(cd "$root" && node --import tsx src/bin/token.ts example-user)"
export GATEWAY_URL="$url/graphql" TOKEN="$token" DEADLINE_MS=60000
# The built-in simulator downloads a task's inputs, as kie does: its own sample files exist.
export IMAGE_URL="$url/simulator/samples/face.png" AUDIO_URL="$url/simulator/samples/voice.wav"
if ! npm start --silent; then
  cat "$log" >&2
  exit 1
fi

# And it says so when something goes wrong: the simulator fails a task whose prompt has [fail] in it.
if PROMPT='[fail] on purpose' npm start --silent >"$data_dir/failing.log" 2>&1; then
  cat "$data_dir/failing.log" >&2
  echo "the example exited 0 for a task that FAILED" >&2
  exit 1
fi
grep -q 'GENERATION_FAILED' "$data_dir/failing.log" || { cat "$data_dir/failing.log" >&2; exit 1; }
echo "a FAILED task made the example exit non-zero, as it should"
