#!/usr/bin/env bash
# Regenerates samples/thread_monitor/: the classic thread-monitor loop run against a real
# Python process that starts threads in steps and then exits. Needs bash, procps (ps), python3.
# Usage: bash samples/generate/thread_monitor_samples.sh
set -eu
out="$(cd "$(dirname "$0")/.." && pwd)/thread_monitor"
mkdir -p "$out"

start_workload() {
  # 4 steps of 10 sleeping threads, 3 s apart, then exit after ~16 s
  python3 -c '
import threading, time
ts = []
for step in range(4):
    for _ in range(10):
        t = threading.Thread(target=time.sleep, args=(14 - 3 * step,), daemon=True)
        t.start(); ts.append(t)
    time.sleep(3)
time.sleep(4)
' >/dev/null 2>&1 &
  PID=$!
}

# 1. the classic form: "%F %T - PID: N, Threads: M" (ps header counted by wc -l)
start_workload
: > "$out/monitor_sleep_threads.log"
for _ in $(seq 1 20); do
  echo "$(date '+%F %T') - PID: $PID, Threads: $(ps -T -p $PID | wc -l)" >> "$out/monitor_sleep_threads.log"
  sleep 1
done
wait "$PID" 2>/dev/null || true

# 2. date(1)'s default format, comma separator, header subtracted
start_workload
: > "$out/monitor_date_default.log"
for _ in $(seq 1 12); do
  n=$(ps -T -p $PID | wc -l)
  echo "$(LC_ALL=C date), PID: $PID, Threads: $((n - 1))" >> "$out/monitor_date_default.log"
  sleep 1
done
kill "$PID" 2>/dev/null || true

# 3. banner form: "=== $(date) ===" then "Thread count: N"
start_workload
: > "$out/monitor_banner.log"
for _ in $(seq 1 8); do
  echo "=== $(LC_ALL=C date -u) ===" >> "$out/monitor_banner.log"
  echo "Thread count: $(ps -o nlwp= -p $PID | xargs)" >> "$out/monitor_banner.log"
  sleep 1
done
kill "$PID" 2>/dev/null || true

cat > "$out/PROVENANCE.md" <<PROV
Produced by samples/generate/thread_monitor_samples.sh on $(date -u '+%F') ($(uname -sr), $(ps --version | head -1)).
- monitor_sleep_threads.log: \`echo "\$(date '+%F %T') - PID: \$PID, Threads: \$(ps -T -p \$PID | wc -l)"\` every 1 s
  while a python3 process starts 4x10 sleeping threads and exits (ps then prints only its header: Threads: 1).
- monitor_date_default.log: \`"\$(LC_ALL=C date), PID: \$PID, Threads: \$((n - 1))"\` (header subtracted).
- monitor_banner.log: \`=== \$(LC_ALL=C date -u) ===\` / \`Thread count: \$(ps -o nlwp= -p \$PID)\`.
Machine time zone: $(cat /etc/timezone 2>/dev/null || echo unknown).
PROV
