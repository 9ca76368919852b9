#!/usr/bin/env bash
# Regenerates the REAL samples of samples/iostat/ and samples/pidstat/ with the sysstat installed
# on this machine (files named handmade_* are not touched: they imitate layouts this sysstat
# version cannot emit, see the PROVENANCE.md files).
#
# Needs: sysstat, python3, dd, script (util-linux), faketime (for the midnight roll-over samples)
# and the locales en_US, en_CA, de_DE, fr_FR, zh_CN (as root on Debian:
#   apt-get install -y sysstat locales faketime
#   sed -i 's/^# *\(en_US.UTF-8\)/\1/;s/^# *\(en_CA.UTF-8\)/\1/;s/^# *\(de_DE.UTF-8\)/\1/;s/^# *\(fr_FR.UTF-8\)/\1/;s/^# *\(zh_CN.UTF-8\)/\1/' /etc/locale.gen && locale-gen
# ). Takes about two minutes. Usage: bash samples/generate/sysstat_samples.sh
set -eu
root="$(cd "$(dirname "$0")/.." && pwd)"
io="$root/iostat"
ps="$root/pidstat"
mkdir -p "$io" "$ps"
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# -- workloads: disk writes (so device figures are non-zero) and a multi-threaded python task
( while :; do dd if=/dev/zero of="$work/dd.bin" bs=1M count=64 oflag=direct status=none; \
    sync; rm -f "$work/dd.bin"; done ) &
pids+=($!)
python3 - "$work" <<'PY' &
import os, sys, threading, time
work = sys.argv[1]
def spin():
    x = 0
    while True:
        for i in range(200000):
            x += i * i
        time.sleep(0.01)
def writer():
    while True:
        with open(os.path.join(work, "w.bin"), "wb") as fh:
            fh.write(os.urandom(1 << 20)); fh.flush(); os.fsync(fh.fileno())
        time.sleep(0.2)
def sleeper():
    while True:
        time.sleep(0.5)
for target in (spin, spin, writer, sleeper, sleeper):
    threading.Thread(target=target, daemon=True).start()
time.sleep(3600)
PY
TASK=$!
pids+=($TASK)
sleep 1

C="env LC_ALL=C"
# -- iostat ----------------------------------------------------------------------------------
$C iostat -x 1 3                       > "$io/x_c_no_t.txt"
$C iostat -xt 1 3                      > "$io/xt_c.txt"
$C iostat -xzt 1 4                     > "$io/xzt_c.txt"
$C iostat -dt 1 3                      > "$io/dt_c.txt"
$C iostat -d 1 3                       > "$io/d_c_no_t.txt"
$C iostat -k -dt 1 3                   > "$io/kdt_c.txt"
$C iostat -m -dt 1 3                   > "$io/mdt_c.txt"
$C iostat -m -xt 1 3                   > "$io/mxt_c.txt"
POSIXLY_CORRECT=1 $C iostat -dt 1 3    > "$io/posix_dt_c.txt"
$C iostat -p ALL -dt 1 3               > "$io/p_all_dt_c.txt"
$C iostat -ct 1 3                      > "$io/ct_c.txt"
$C iostat -h -xt 1 3                   > "$io/h_xt_c.txt"
$C iostat -h -dt 1 3                   > "$io/h_dt_c.txt"
$C iostat --pretty -xt 1 3             > "$io/pretty_xt_c.txt"
$C iostat -N -xt 1 3                   > "$io/n_xt_c.txt"
$C iostat -s -xt 1 3                   > "$io/s_xt_c.txt"
$C iostat -g total vda -xt 1 3         > "$io/g_xt_c.txt"
$C iostat --dec=0 -xt 1 3              > "$io/dec0_xt_c.txt"
S_TIME_FORMAT=ISO $C iostat -xt 1 3    > "$io/xt_iso.txt"
LC_ALL=en_US.UTF-8 iostat -xt 1 3      > "$io/xt_en_us.txt"
LC_ALL=en_CA.UTF-8 iostat -xt 1 3      > "$io/xt_en_ca.txt"
LC_ALL=de_DE.UTF-8 iostat -xt 1 3      > "$io/xt_de_de.txt"
LC_ALL=fr_FR.UTF-8 iostat -xt 1 3      > "$io/xt_fr_fr.txt"
LC_ALL=zh_CN.UTF-8 iostat -xt 1 3      > "$io/xt_zh_cn.txt"
S_COLORS=always $C iostat -xt 1 3      > "$io/xt_colors.txt"
faketime -f '@2026-11-28 23:59:57' env LC_ALL=en_US.UTF-8 iostat -xt 1 5 > "$io/xt_en_us_midnight.txt"
$C iostat -x -o JSON -t 1 3            > "$io/x_json_t_c.json"
S_TIME_FORMAT=ISO $C iostat -x -o JSON -t 1 3 > "$io/x_json_t_iso.json"
$C iostat -x -o JSON 1 3               > "$io/x_json_no_t.json"
$C iostat -d -o JSON -t 1 3            > "$io/d_json_t_c.json"
# killed mid-run, as a collector stopped with a signal leaves it (no closing brackets)
( S_TIME_FORMAT=ISO $C iostat -x -o JSON -t 1 > "$io/x_json_t_iso_killed.json" & ip=$!; sleep 2.5; kill $ip )

# -- pidstat ---------------------------------------------------------------------------------
$C pidstat -u -r -d -w 1 3                         > "$ps/urdw_c.txt"
$C pidstat -u -p "$TASK" 1 3                       > "$ps/u_p_c.txt"
$C pidstat -u -t -p "$TASK"                        > "$ps/ut_since_boot_c.txt"
$C pidstat -h -u -r -d -w -t -p "$TASK" 1 3        > "$ps/h_urdwt_c.txt"
$C pidstat -H -h -u -r -d -w -t -p "$TASK" 1 3     > "$ps/hh_epoch_urdwt_c.txt"
$C pidstat -t -u -p "$TASK" 1 3                    > "$ps/t_u_c.txt"
$C pidstat -t -r -d -w -p "$TASK" 1 2              > "$ps/t_rdw_c.txt"
$C pidstat -l -u 1 2                               > "$ps/l_u_c.txt"
$C pidstat -v -p "$TASK" 1 3                       > "$ps/v_c.txt"
$C pidstat -s -p "$TASK" 1 3                       > "$ps/s_c.txt"
$C pidstat -R -p "$TASK" 1 3                       > "$ps/rr_c.txt"
$C pidstat -U -u -p "$TASK" 1 3                    > "$ps/uu_user_c.txt"
$C pidstat -u -r -v -s -t -p "$TASK" 1 2           > "$ps/t_multi_c.txt"
$C pidstat -h -l -u -p "$TASK" 1 2                 > "$ps/h_l_c.txt"
LC_ALL=en_US.UTF-8 pidstat -u -r -p "$TASK" 1 3    > "$ps/ur_en_us.txt"
LC_ALL=de_DE.UTF-8 pidstat -u -r -d -p "$TASK" 1 3 > "$ps/urd_de_de.txt"
LC_ALL=fr_FR.UTF-8 pidstat -u -w -p "$TASK" 1 3    > "$ps/uw_fr_fr.txt"
LC_ALL=zh_CN.UTF-8 pidstat -u -r -t -p "$TASK" 1 3 > "$ps/urt_zh_cn.txt"
S_TIME_FORMAT=ISO $C pidstat -u -p "$TASK" 1 2     > "$ps/u_iso.txt"
S_COLORS=always $C pidstat -u -d 1 2               > "$ps/ud_colors.txt"
faketime -f '@2026-11-28 23:59:57' env LC_ALL=en_US.UTF-8 pidstat -u -p "$TASK" 1 5 > "$ps/u_en_us_midnight.txt"

versions="$(iostat -V 2>&1 | head -1)"
kernel="$(uname -sr)"
today="$(date -u '+%F')"
{
  echo "# samples/iostat provenance"
  echo
  echo "Real files produced by samples/generate/sysstat_samples.sh on $today ($kernel, $versions),"
  echo "while dd (oflag=direct) and a multi-threaded python3 task kept the disk and CPUs busy."
  echo "Each file name encodes the command; the locale is LC_ALL=C unless the name says otherwise."
  echo
  echo "| file | command |"
  echo "| --- | --- |"
  echo "| x_c_no_t.txt | \`iostat -x 1 3\` (no -t: no per-report times) |"
  echo "| xt_c.txt | \`iostat -xt 1 3\` |"
  echo "| xzt_c.txt | \`iostat -xzt 1 4\` |"
  echo "| dt_c.txt / d_c_no_t.txt | \`iostat -dt 1 3\` / \`iostat -d 1 3\` |"
  echo "| kdt_c.txt / mdt_c.txt / mxt_c.txt | \`iostat -k -dt 1 3\` / \`iostat -m -dt 1 3\` / \`iostat -m -xt 1 3\` |"
  echo "| posix_dt_c.txt | \`POSIXLY_CORRECT=1 iostat -dt 1 3\` (Blk_ units) |"
  echo "| p_all_dt_c.txt | \`iostat -p ALL -dt 1 3\` |"
  echo "| ct_c.txt | \`iostat -ct 1 3\` |"
  echo "| h_xt_c.txt / h_dt_c.txt | \`iostat -h -xt 1 3\` / \`iostat -h -dt 1 3\` |"
  echo "| pretty_xt_c.txt | \`iostat --pretty -xt 1 3\` |"
  echo "| n_xt_c.txt | \`iostat -N -xt 1 3\` |"
  echo "| s_xt_c.txt | \`iostat -s -xt 1 3\` (short report) |"
  echo "| g_xt_c.txt | \`iostat -g total vda -xt 1 3\` (group row) |"
  echo "| dec0_xt_c.txt | \`iostat --dec=0 -xt 1 3\` |"
  echo "| xt_iso.txt | \`S_TIME_FORMAT=ISO iostat -xt 1 3\` |"
  echo "| xt_en_us.txt, xt_en_ca.txt, xt_de_de.txt, xt_fr_fr.txt, xt_zh_cn.txt | \`LC_ALL=<locale>.UTF-8 iostat -xt 1 3\` |"
  echo "| xt_colors.txt | \`S_COLORS=always iostat -xt 1 3\` (ANSI colour codes) |"
  echo "| xt_en_us_midnight.txt | \`faketime -f '@2026-11-28 23:59:57' env LC_ALL=en_US.UTF-8 iostat -xt 1 5\` (crosses midnight) |"
  echo "| x_json_t_c.json / x_json_t_iso.json / x_json_no_t.json | \`iostat -x -o JSON -t 1 3\` (C, and S_TIME_FORMAT=ISO) / without -t |"
  echo "| d_json_t_c.json | \`iostat -d -o JSON -t 1 3\` |"
  echo "| x_json_t_iso_killed.json | \`S_TIME_FORMAT=ISO iostat -x -o JSON -t 1\` killed after 2.5 s (unterminated JSON) |"
  echo
  echo "Hand-written files (handmade_*): see the section below (kept when regenerating)."
} > "$io/PROVENANCE.real.md"
{
  echo "# samples/pidstat provenance"
  echo
  echo "Real files produced by samples/generate/sysstat_samples.sh on $today ($kernel, $versions)."
  echo "\`-p PID\` is a python3 task with five threads (two spinning, one writing + fsync, two sleeping)."
  echo "The locale is LC_ALL=C unless the name says otherwise."
  echo
  echo "| file | command |"
  echo "| --- | --- |"
  echo "| urdw_c.txt | \`pidstat -u -r -d -w 1 3\` (all tasks) |"
  echo "| u_p_c.txt | \`pidstat -u -p PID 1 3\` |"
  echo "| ut_since_boot_c.txt | \`pidstat -u -t -p PID\` (no interval: one since-boot report) |"
  echo "| h_urdwt_c.txt | \`pidstat -h -u -r -d -w -t -p PID 1 3\` |"
  echo "| hh_epoch_urdwt_c.txt | \`pidstat -H -h -u -r -d -w -t -p PID 1 3\` (epoch seconds) |"
  echo "| t_u_c.txt / t_rdw_c.txt | \`pidstat -t -u -p PID 1 3\` / \`pidstat -t -r -d -w -p PID 1 2\` |"
  echo "| l_u_c.txt | \`pidstat -l -u 1 2\` (command lines with spaces) |"
  echo "| v_c.txt / s_c.txt / rr_c.txt | \`pidstat -v\` / \`-s\` / \`-R\` \`-p PID 1 3\` |"
  echo "| uu_user_c.txt | \`pidstat -U -u -p PID 1 3\` (USER column) |"
  echo "| t_multi_c.txt | \`pidstat -u -r -v -s -t -p PID 1 2\` |"
  echo "| h_l_c.txt | \`pidstat -h -l -u -p PID 1 2\` |"
  echo "| ur_en_us.txt | \`LC_ALL=en_US.UTF-8 pidstat -u -r -p PID 1 3\` (12-hour times) |"
  echo "| urd_de_de.txt | \`LC_ALL=de_DE.UTF-8 pidstat -u -r -d -p PID 1 3\` (decimal commas, Durchschn.:) |"
  echo "| uw_fr_fr.txt | \`LC_ALL=fr_FR.UTF-8 pidstat -u -w -p PID 1 3\` (Moyenne :) |"
  echo "| urt_zh_cn.txt | \`LC_ALL=zh_CN.UTF-8 pidstat -u -r -t -p PID 1 3\` (CJK times) |"
  echo "| u_iso.txt | \`S_TIME_FORMAT=ISO pidstat -u -p PID 1 2\` |"
  echo "| ud_colors.txt | \`S_COLORS=always pidstat -u -d 1 2\` (ANSI colour codes) |"
  echo "| u_en_us_midnight.txt | \`faketime -f '@2026-11-28 23:59:57' env LC_ALL=en_US.UTF-8 pidstat -u -p PID 1 5\` (crosses midnight) |"
  echo
  echo "Hand-written files (handmade_*): see the section below (kept when regenerating)."
} > "$ps/PROVENANCE.real.md"
for d in "$io" "$ps"; do
  if [ -f "$d/PROVENANCE.handmade.md" ]; then
    cat "$d/PROVENANCE.real.md" "$d/PROVENANCE.handmade.md" > "$d/PROVENANCE.md"
  else
    cp "$d/PROVENANCE.real.md" "$d/PROVENANCE.md"
  fi
  rm -f "$d/PROVENANCE.real.md"
done
echo "samples written to $io and $ps"
