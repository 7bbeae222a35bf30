#!/bin/sh
# Runs inside the booted test container as a oneshot unit (airlock-check.service), as root, outside
# airlockd's sandbox. Is airlockd, started by systemd with the packaged unit, serving, confined,
# reloadable and stoppable? Writes /root/report (what it saw) and /root/result ("ok", or the first
# thing that went wrong), then powers the container off.
report=/root/report
: >"$report"
ctl() {  # ctl COMMAND ARGS...: airlockctl as alice
  sub=$1; shift
  airlockctl "$sub" --server 127.0.0.1:7443 --ca /root/pki/ca.crt --cert /root/pki/alice.crt \
    --key /root/pki/alice.key "$@"
}
verdict=""
failed() { [ -n "$verdict" ] || verdict=$*; }
# Waits up to 90 s until the service is active and answers a health check.
serving() {
  deadline=$(( $(date +%s) + 90 ))
  while :; do
    state=$(systemctl show -P ActiveState airlockd.service)
    if [ "$state" = active ] && ctl health >>"$report" 2>&1; then return 0; fi
    [ "$state" = failed ] && return 1
    [ "$(date +%s)" -ge "$deadline" ] && return 1
    sleep 0.5
  done
}

if serving; then
  text=$(ctl generate --model stories --prompt "Once upon a time" --max-tokens 16 --temperature 0 2>>"$report")
  echo "generated: $text" >>"$report"
  [ -n "$text" ] || failed "generate returned no text"
  pid=$(systemctl show -P MainPID airlockd.service)
  echo "--- /proc/$pid/status" >>"$report"
  grep -E '^(Uid|Gid|NoNewPrivs|Seccomp|CapEff|CapPrm|CapBnd):' "/proc/$pid/status" >>"$report"
  # SIGHUP through the unit's ExecReload: the same process keeps serving.
  systemctl reload airlockd.service >>"$report" 2>&1 || failed "systemctl reload failed"
  deadline=$(( $(date +%s) + 30 ))
  until journalctl --no-pager -u airlockd.service | grep -q '"configuration reloaded"'; do
    [ "$(date +%s)" -ge "$deadline" ] && { failed "no 'configuration reloaded' in the journal after systemctl reload"; break; }
    sleep 0.5
  done
  serving || failed "airlockd stopped serving after systemctl reload"
  [ "$(systemctl show -P MainPID airlockd.service)" = "$pid" ] || failed "systemctl reload restarted airlockd"
  # SIGTERM through systemctl stop: it drains and exits cleanly.
  systemctl stop airlockd.service >>"$report" 2>&1 || failed "systemctl stop failed"
  [ "$(systemctl show -P Result airlockd.service)" = success ] ||
    failed "airlockd did not stop cleanly: Result=$(systemctl show -P Result airlockd.service)"
else
  failed "airlockd is not serving within 90 s (ActiveState $(systemctl show -P ActiveState airlockd.service))"
fi
{ echo "--- systemctl status"; systemctl status --no-pager airlockd.service
  echo "--- journal"; journalctl --no-pager -u airlockd.service
} >>"$report" 2>&1
echo "${verdict:-ok}" >/root/result
systemctl poweroff
