#!/usr/bin/env bash
# tests/bench/tunnel.sh — tunnel throughput of agentd against other userspace WireGuards.
#
# Two network namespaces joined by a veth pair (underlay 192.0.2.1 <-> 192.0.2.2, TEST-NET-1,
# namespace-local only), one WireGuard tunnel 10.99.0.1 <-> 10.99.0.2 (MTU 1420) run by each
# implementation in turn, interleaved over rounds (round 1: veth agentd wireguard-go boringtun,
# round 2: ...), fresh namespaces per case. Per case: ping RTT through the tunnel (median of
# PING_COUNT pings, idle and during the 1-stream transfer), iperf3 TCP 1 stream and PAR streams
# (A sends, B receives), CPU time of both
# daemons (utime+stime, /proc/PID/stat) during each iperf3 run, their peak RSS, TCP retransmits,
# UDP receive-buffer drops. Then a table of medians (min–max) and the ratios agentd / others.
# Not part of the test suite. Needs root. Only ratios within one run are comparable.
#
# Usage:
#   tests/bench/tunnel.sh            build (or reuse) agentd + netctl, run, print the tables
#   tests/bench/tunnel.sh profile    agentd only: 1-stream runs with per-thread CPU, under
#                                    `perf record -g` (both ends; then the whole machine with
#                                    -a), under `strace -c -f`; reports -> $OUT
#   tests/bench/tunnel.sh summarize  the tables again from $OUT/raw.jsonl
#   tests/bench/tunnel.sh cleanup    remove what a killed run left behind (needs RUN_ID=<pid>)
#
# Env (defaults): ROUNDS=3 DURATION=10 PAR=4 PING_COUNT=50 PING_INTERVAL=0.05 MTU=1420
#   IMPLS="veth agentd wireguard-go boringtun"  (boringtun is skipped if boringtun-cli is missing)
#   QUICK=1     smoke test: 1 round of 3 s (overrides ROUNDS and DURATION)
#   OUT=dir     keep raw.jsonl, raw iperf3 JSON, daemon logs, summary.md there (default: temp, removed)
#   NO_BUILD=1  do not run cargo; use the existing target/release binaries
#   AGENTD, NETCTL, WG_GO=wireguard-go, BORINGTUN=~/.cargo/bin/boringtun-cli, PY=python3
set -euo pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)

QUICK=${QUICK:-}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
if [ -n "$QUICK" ] && [ "$QUICK" != 0 ]; then ROUNDS=1; DURATION=3; fi
PAR=${PAR:-4}
PING_COUNT=${PING_COUNT:-50}
PING_INTERVAL=${PING_INTERVAL:-0.05}
MTU=${MTU:-1420}
IMPLS=${IMPLS:-"veth agentd wireguard-go boringtun"}
NO_BUILD=${NO_BUILD:-}
AGENTD=${AGENTD:-$REPO/target/release/agentd}
NETCTL=${NETCTL:-$REPO/target/release/netctl}
WG_GO=${WG_GO:-wireguard-go}
BORINGTUN=${BORINGTUN:-$HOME/.cargo/bin/boringtun-cli}
PY=${PY:-python3}
OUT=${OUT:-}
CLK_TCK=$(getconf CLK_TCK)

# Names unique to this run, so that it can run beside the test suite or another run.
RUN_ID=${RUN_ID:-$$}
NS_A=isb${RUN_ID}a; NS_B=isb${RUN_ID}b
VETH_A=isv${RUN_ID}a; VETH_B=isv${RUN_ID}b
IF_A=isw${RUN_ID}a; IF_B=isw${RUN_ID}b
UL_A=192.0.2.1; UL_B=192.0.2.2
TUN_A=10.99.0.1; TUN_B=10.99.0.2
PORT=51820
UAPI_SYS=/var/run/wireguard   # where wireguard-go and boringtun-cli put their UAPI sockets

RUN_DIR=""        # private temp dir of this run (pid file, keys, configs, sockets)
CASE_PID=""       # the subshell running the current case
KEEP_OUT=1

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- processes and cleanup

# Every background process is recorded as "PID STARTTIME" in $RUN_DIR/pids; cleanup kills only a
# PID whose start time still matches (a recycled PID is left alone).
starttime() { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $20}' || true; }
alive() { # running, not a zombie waiting to be reaped
  local state
  state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $1}') || true
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}
record_pid() { echo "$1 $(starttime "$1")" >>"$RUN_DIR/pids"; }
stop_pid() { # stop_pid PID [STARTTIME]: TERM, up to 3 s, then KILL
  local pid=$1 st=${2:-} i
  [ -n "$pid" ] || return 0
  if [ -n "$st" ] && [ "$(starttime "$pid")" != "$st" ]; then return 0; fi
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 30); do alive "$pid" || break; sleep 0.1; done
    alive "$pid" && kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null || true
}
stop_recorded() {
  [ -n "$RUN_DIR" ] && [ -f "$RUN_DIR/pids" ] || return 0
  local pid st
  # newest first: iperf3 and probes before the daemons
  # (an entry without a start time was already gone when recorded: never touch that PID)
  while read -r pid st; do [ -z "$st" ] || stop_pid "$pid" "$st"; done < <(tac "$RUN_DIR/pids")
  : >"$RUN_DIR/pids"
}
delete_netns() {
  local ns
  for ns in "$NS_A" "$NS_B"; do
    if ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$ns"; then
      ip netns del "$ns" 2>/dev/null || log "warning: could not delete netns $ns"
    fi
  done
  rm -f "$UAPI_SYS/$IF_A.sock" "$UAPI_SYS/$IF_B.sock" "$UAPI_SYS/$IF_A.name" "$UAPI_SYS/$IF_B.name"
}
check_names_free() { # before any trap: never delete what another run owns
  local ns
  for ns in "$NS_A" "$NS_B"; do
    if ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$ns"; then
      die "netns $ns exists already (a killed run? remove it: RUN_ID=$RUN_ID $0 cleanup)"
    fi
  done
}
leftover_cleanup() { # `cleanup` command: processes inside the run's namespaces, then the namespaces
  local ns pid
  for ns in "$NS_A" "$NS_B"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null || true); do
      log "stopping PID $pid in $ns: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-80)"
      stop_pid "$pid"
    done
  done
  delete_netns
}
case_cleanup() { # in the case subshell: its processes, namespaces and agentd state
  stop_recorded
  delete_netns
  rm -rf "$RUN_DIR"/agentd-a "$RUN_DIR"/agentd-b
}
cleanup() { # in the main shell: everything, also after a failure or a signal
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$CASE_PID" ] && alive "$CASE_PID"; then
    kill -TERM "$CASE_PID" 2>/dev/null || true
    local i; for i in $(seq 1 50); do alive "$CASE_PID" || break; sleep 0.1; done
    alive "$CASE_PID" && kill -KILL "$CASE_PID" 2>/dev/null
    wait "$CASE_PID" 2>/dev/null || true
  fi
  stop_recorded
  delete_netns
  if [ -n "$RUN_DIR" ] && [ -d "$RUN_DIR" ]; then rm -rf "$RUN_DIR"; fi
  if [ "$KEEP_OUT" = 0 ] && [ -n "$OUT" ] && [ -d "$OUT" ]; then rm -rf "$OUT"; fi
  exit "$rc"
}

# ---------------------------------------------------------------- checks and build

need_tools() {
  local missing=() c
  for c in ip wg "$WG_GO" iperf3 ping ss awk tac timeout getconf "$PY"; do
    command -v "$c" >/dev/null 2>&1 || missing+=("$c")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "missing tools: ${missing[*]}" >&2
    echo "install them with: apt-get install iproute2 wireguard-tools wireguard-go iperf3 iputils-ping python3" >&2
    echo "(and optionally: cargo install boringtun-cli)" >&2
    exit 1
  fi
  [ "$(id -u)" = 0 ] || die "must run as root (network namespaces)"
  [ -c /dev/net/tun ] || die "/dev/net/tun is missing"
}

build() {
  if [ -z "$NO_BUILD" ] && command -v cargo >/dev/null 2>&1; then
    log "cargo build --release -p isthmus-agentd -p isthmus-netctl"
    local blog
    blog=$(mktemp /tmp/isthmus-bench-build.XXXXXX)
    if ! (cd "$REPO" && cargo build --release -p isthmus-agentd -p isthmus-netctl) >"$blog" 2>&1; then
      cat "$blog" >&2; rm -f "$blog"; die "build failed"
    fi
    rm -f "$blog"
  fi
  [ -x "$AGENTD" ] || die "$AGENTD not found (build it, or set AGENTD=)"
  [ -x "$NETCTL" ] || die "$NETCTL not found (build it, or set NETCTL=)"
}

snapshot_bins() { # the whole run uses one binary, even if target/ is rebuilt meanwhile
  mkdir -p "$RUN_DIR/bin"
  cp "$AGENTD" "$RUN_DIR/bin/agentd"; cp "$NETCTL" "$RUN_DIR/bin/netctl"
  AGENTD_SRC=$AGENTD
  AGENTD=$RUN_DIR/bin/agentd; NETCTL=$RUN_DIR/bin/netctl
}

versions() {
  local rev
  rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "?")
  git -C "$REPO" diff --quiet HEAD -- agentd 2>/dev/null || rev="$rev+dirty"
  echo "kernel:        $(uname -r)"
  echo "cpu:           $(nproc) x $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)"
  echo "agentd:        $("$AGENTD" --version 2>&1 | head -1) (tree at git $rev; ${AGENTD_SRC:-$AGENTD} built $(date -r "${AGENTD_SRC:-$AGENTD}" '+%F %T'), sha256 $(sha256sum "$AGENTD" | cut -c1-12))"
  echo "wireguard-go:  $("$WG_GO" --version 2>&1 | head -1)"
  if [ -x "$BORINGTUN" ]; then echo "boringtun-cli: $("$BORINGTUN" --version 2>&1 | head -1)"
  else echo "boringtun-cli: not installed ($BORINGTUN; cargo install boringtun-cli)"; fi
  echo "iperf3:        $(iperf3 --version 2>&1 | head -1)"
  echo "settings:      ROUNDS=$ROUNDS DURATION=${DURATION}s PAR=$PAR PING=${PING_COUNT}x${PING_INTERVAL}s MTU=$MTU"
}

# ---------------------------------------------------------------- topology and daemons

setup_netns() {
  ip netns add "$NS_A"
  ip netns add "$NS_B"
  ip -n "$NS_A" link set lo up
  ip -n "$NS_B" link set lo up
  # Created inside NS_A and its peer moved straight to NS_B: nothing appears in the host netns.
  ip -n "$NS_A" link add "$VETH_A" type veth peer name "$VETH_B" netns "$NS_B"
  ip -n "$NS_A" addr add "$UL_A/24" dev "$VETH_A"
  ip -n "$NS_B" addr add "$UL_B/24" dev "$VETH_B"
  ip -n "$NS_A" link set "$VETH_A" up
  ip -n "$NS_B" link set "$VETH_B" up
}

genkeys() {
  (umask 077
   wg genkey >"$RUN_DIR/a.key"; wg pubkey <"$RUN_DIR/a.key" >"$RUN_DIR/a.pub"
   wg genkey >"$RUN_DIR/b.key"; wg pubkey <"$RUN_DIR/b.key" >"$RUN_DIR/b.pub")
}

# agentd_config SIDE(a|b) IFNAME MY_UL PEER_UL MY_TUN PEER_TUN PEER_PUB -> path of the config
agentd_config() {
  local side=$1 ifn=$2 myul=$3 peerul=$4 mytun=$5 peertun=$6 peerpub=$7
  local dir="$RUN_DIR/agentd-$side"
  mkdir -p "$dir/state" "$dir/wireguard"
  chmod 700 "$dir"
  install -m 600 "$RUN_DIR/$side.key" "$dir/private.key"
  # peer_address: required by newer agentd for a /24 (older ones reject the key: retried below)
  cat >"$dir/agentd.toml" <<EOF
[agent]
name = "bench-$side"
log_level = "warn"
state_dir = "$dir/state"
uapi_dir = "$dir/wireguard"

[control]
socket = "$dir/agentd.sock"
read_group = 0
admin_group = 0

[[link]]
name = "bench"
interface = "$ifn"
private_key_file = "$dir/private.key"
listen = "$myul:$PORT"
peer_public_key = "$peerpub"
peer_endpoint = "$peerul:$PORT"
allowed_ips = ["$peertun/32"]
addresses = ["$mytun/24"]
peer_address = "$peertun"
mtu = $MTU
EOF
  if ! "$AGENTD" --check-config "$dir/agentd.toml" >"$dir/check.log" 2>&1; then
    grep -v '^peer_address = ' "$dir/agentd.toml" >"$dir/agentd-old.toml"
    if "$AGENTD" --check-config "$dir/agentd-old.toml" >/dev/null 2>&1; then
      mv "$dir/agentd-old.toml" "$dir/agentd.toml"
    else
      cat "$dir/check.log" >&2
      die "agentd config $side invalid"
    fi
  fi
  echo "$dir/agentd.toml"
}

# start_daemon KIND NS IFNAME SIDE -> DAEMON_PID (a global: this function must not run in $(...))
start_daemon() {
  local kind=$1 ns=$2 ifn=$3 side=$4 logf="$RUN_DIR/daemon-$4.log" pid i
  case $kind in
    agentd)
      local cfg
      cfg=$(agentd_config "$side" "$ifn" \
        "$([ "$side" = a ] && echo $UL_A || echo $UL_B)" "$([ "$side" = a ] && echo $UL_B || echo $UL_A)" \
        "$([ "$side" = a ] && echo $TUN_A || echo $TUN_B)" "$([ "$side" = a ] && echo $TUN_B || echo $TUN_A)" \
        "$(cat "$RUN_DIR/$([ "$side" = a ] && echo b || echo a).pub")")
      # `ip netns exec` execs: $! is agentd itself.
      ip netns exec "$ns" "$AGENTD" --config "$cfg" </dev/null >"$logf" 2>&1 &
      pid=$! ;;
    wireguard-go)
      rm -f "$UAPI_SYS/$ifn.sock"
      ip netns exec "$ns" env LOG_LEVEL=error WG_PROCESS_FOREGROUND=1 "$WG_GO" -f "$ifn" \
        </dev/null >"$logf" 2>&1 &
      pid=$! ;;
    boringtun)
      rm -f "$UAPI_SYS/$ifn.sock"
      # As plain root, the privilege drop cannot succeed: --disable-drop-privileges.
      ip netns exec "$ns" "$BORINGTUN" --foreground --disable-drop-privileges "$ifn" \
        </dev/null >"$logf" 2>&1 &
      pid=$! ;;
    *) die "unknown implementation $kind" ;;
  esac
  record_pid "$pid"
  DAEMON_PID=$pid
  if [ "$kind" != agentd ]; then
    for i in $(seq 1 50); do
      [ -S "$UAPI_SYS/$ifn.sock" ] && ip -n "$ns" link show "$ifn" >/dev/null 2>&1 && break
      alive "$pid" || { cat "$logf" >&2; die "$kind in $ns exited"; }
      sleep 0.1
    done
    [ -S "$UAPI_SYS/$ifn.sock" ] || die "$kind: no UAPI socket $UAPI_SYS/$ifn.sock"
  fi
}

# configure_wg NS IFNAME MYKEY PEERPUB PEER_UL MY_TUN PEER_TUN (wireguard-go, boringtun-cli)
configure_wg() {
  local ns=$1 ifn=$2 key=$3 peerpub=$4 peerul=$5 mytun=$6 peertun=$7
  ip netns exec "$ns" wg set "$ifn" private-key "$key" listen-port "$PORT" \
    peer "$peerpub" allowed-ips "$peertun/32" endpoint "$peerul:$PORT"
  ip -n "$ns" link set "$ifn" mtu "$MTU"
  ip -n "$ns" addr add "$mytun/24" dev "$ifn"
  ip -n "$ns" link set "$ifn" up
}

agentd_link_state() { # SIDE -> state of link "bench" ("" if netctl cannot answer)
  "$NETCTL" --socket "$RUN_DIR/agentd-$1/agentd.sock" --json links 2>/dev/null |
    "$PY" -c 'import json,sys
try:
    print(next((l.get("state","") for l in json.load(sys.stdin) if l.get("name")=="bench"), ""))
except Exception:
    print("")' 2>/dev/null || true
}

wait_agentd_up() { # PID SIDE
  local pid=$1 side=$2 i state=""
  for i in $(seq 1 150); do
    alive "$pid" || { cat "$RUN_DIR/daemon-$side.log" >&2; die "agentd $side exited"; }
    state=$(agentd_link_state "$side")
    [ "$state" = up ] && return 0
    sleep 0.1
  done
  cat "$RUN_DIR/daemon-$side.log" >&2
  die "agentd $side: link not up after 15 s (state '$state')"
}

wait_tunnel() { # until a ping crosses the tunnel (handshake done), up to ~10 s
  local i
  for i in $(seq 1 20); do
    ip netns exec "$NS_A" ping -n -c 1 -W 0.5 "$TUN_B" >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  die "no ping through the tunnel"
}

# ---------------------------------------------------------------- measurements

ticks() { # "utime stime" (clock ticks, whole process) of a PID, "0 0" if none
  if [ -n "$1" ] && [ -r "/proc/$1/stat" ]; then
    # comm (field 2) may hold spaces: cut after the last ')'.
    sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12, $13}' || echo "0 0"
  else echo "0 0"; fi
}
status_kb() { awk -v k="$2:" '$1==k{print $2}' "/proc/$1/status" 2>/dev/null || true; }
udp_rcvbuf_errors() { # NS -> UDP RcvbufErrors of the namespace (0 if unknown)
  { ip netns exec "$1" cat /proc/net/snmp 2>/dev/null || true; } | awk '
    /^Udp:/ { if (!h) { for (i=1;i<=NF;i++) n[i]=$i; h=1 } else { for (i=1;i<=NF;i++) if (n[i]=="RcvbufErrors") v=$i } }
    END { print v+0 }'
}
steal_busy() { # "steal total busy" jiffies of the machine (busy: not idle, not iowait)
  awk '/^cpu /{t=0; for(i=2;i<=NF;i++) t+=$i; print $9, t, t-$5-$6}' /proc/stat
}

ping_median() { # DST [FILE] -> "median loss_pct" (RTT in ms); FILE: ping output from before
  local out
  if [ -n "${2:-}" ]; then out=$(cat "$2" 2>/dev/null || true)
  else out=$(ip netns exec "$NS_A" ping -n -c "$PING_COUNT" -i "$PING_INTERVAL" -W 1 "$1" 2>&1 || true); fi
  "$PY" - "$out" <<'EOF'
import re, statistics, sys
t = [float(x) for x in re.findall(r"time=([0-9.]+) ms", sys.argv[1])]
m = re.search(r"([0-9.]+)% packet loss", sys.argv[1])
print("%s %s" % (("%.4f" % statistics.median(t)) if t else "null", m.group(1) if m else "null"))
EOF
}

# run_iperf P FILE [PING_FILE] -> JSON fragment in IPERF_RESULT. With PING_FILE: PING_COUNT
# pings through the tunnel while the transfer runs (from 1 s in), output kept in PING_FILE.
run_iperf() {
  local p=$1 f=$2 pingf=${3:-} a0 b0 a1 b1 s0 s1 pid rc=0 ppid=""
  a0=$(ticks "$PID_A"); b0=$(ticks "$PID_B"); s0=$(steal_busy)
  timeout $((DURATION + 30)) ip netns exec "$NS_A" iperf3 -c "$DST" -t "$DURATION" -P "$p" -J \
    </dev/null >"$f" 2>"$f.err" &
  pid=$!
  record_pid "$pid"
  if [ -n "$pingf" ]; then
    # as many pings as fit in the transfer (from 1 s in to 0.5 s before its end)
    local n
    n=$(awk -v d="$DURATION" -v i="$PING_INTERVAL" -v c="$PING_COUNT" 'BEGIN{m=int((d-1.5)/i); if (m>c) m=c; if (m<1) m=1; print m}')
    (sleep 1; exec ip netns exec "$NS_A" ping -n -c "$n" -i "$PING_INTERVAL" -W 1 "$DST") \
      </dev/null >"$pingf" 2>&1 &
    ppid=$!
    record_pid "$ppid"
  fi
  wait "$pid" || rc=$?
  [ -z "$ppid" ] || wait "$ppid" || true
  a1=$(ticks "$PID_A"); b1=$(ticks "$PID_B"); s1=$(steal_busy)
  IPERF_RESULT=$("$PY" - "$f" "$rc" "$CLK_TCK" "$a0" "$a1" "$b0" "$b1" "$s0" "$s1" <<'EOF'
import json, sys
f, rc, hz = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
a0, a1, b0, b1, s0, s1 = [list(map(float, x.split())) for x in sys.argv[4:10]]
out = {"rc": rc}
try:
    d = json.load(open(f))
    e = d["end"]
    out.update(gbps=e["sum_received"]["bits_per_second"] / 1e9,
               bytes=e["sum_received"]["bytes"],
               retrans=e["sum_sent"].get("retransmits"))
except Exception as ex:
    out.update(gbps=None, bytes=None, retrans=None, error=str(ex)[:200])
out["cpu"] = {"a_user": (a1[0] - a0[0]) / hz, "a_sys": (a1[1] - a0[1]) / hz,
              "b_user": (b1[0] - b0[0]) / hz, "b_sys": (b1[1] - b0[1]) / hz}
dt = s1[1] - s0[1]
out["steal_pct"] = 100 * (s1[0] - s0[0]) / dt if dt > 0 else 0
out["busy_pct"] = 100 * (s1[2] - s0[2]) / dt if dt > 0 else 0
print(json.dumps(out))
EOF
)
}

# run_case IMPL ROUND: one implementation, fresh namespaces; appends one JSON line to raw.jsonl.
# Runs in its own subshell (errexit on, EXIT trap = case_cleanup).
run_case() {
  local impl=$1 round=$2 ts loadavg
  ts=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  loadavg=$(cut -d' ' -f1 /proc/loadavg)
  log "round $round: $impl (loadavg $loadavg)"
  PID_A=""; PID_B=""
  setup_netns
  if [ "$impl" = veth ]; then
    DST=$UL_B
  else
    DST=$TUN_B
    genkeys
    start_daemon "$impl" "$NS_A" "$IF_A" a; PID_A=$DAEMON_PID
    start_daemon "$impl" "$NS_B" "$IF_B" b; PID_B=$DAEMON_PID
    if [ "$impl" = agentd ]; then
      wait_agentd_up "$PID_A" a
      wait_agentd_up "$PID_B" b
    else
      configure_wg "$NS_A" "$IF_A" "$RUN_DIR/a.key" "$(cat "$RUN_DIR/b.pub")" "$UL_B" "$TUN_A" "$TUN_B"
      configure_wg "$NS_B" "$IF_B" "$RUN_DIR/b.key" "$(cat "$RUN_DIR/a.pub")" "$UL_A" "$TUN_B" "$TUN_A"
    fi
    wait_tunnel
  fi

  local rtt loss
  read -r rtt loss < <(ping_median "$DST")

  ip netns exec "$NS_B" iperf3 -s </dev/null >"$RUN_DIR/iperf-server.log" 2>&1 &
  record_pid "$!"
  local i
  for i in $(seq 1 50); do
    ip netns exec "$NS_B" ss -ltnH 2>/dev/null | grep -q ':5201 ' && break
    sleep 0.1
  done
  local r1 rp lrtt lloss
  run_iperf 1 "$RUN_DIR/iperf1.json" "$RUN_DIR/ping-loaded.txt"; r1=$IPERF_RESULT
  read -r lrtt lloss < <(ping_median "$DST" "$RUN_DIR/ping-loaded.txt")
  sleep 1
  run_iperf "$PAR" "$RUN_DIR/iperf$PAR.json"; rp=$IPERF_RESULT

  local hwm_a=0 hwm_b=0 rss_a=0 rss_b=0 drops
  if [ -n "$PID_A" ]; then
    hwm_a=$(status_kb "$PID_A" VmHWM); hwm_b=$(status_kb "$PID_B" VmHWM)
    rss_a=$(status_kb "$PID_A" VmRSS); rss_b=$(status_kb "$PID_B" VmRSS)
  fi
  drops=$(( $(udp_rcvbuf_errors "$NS_A") + $(udp_rcvbuf_errors "$NS_B") ))

  if [ -n "$OUT" ]; then
    mkdir -p "$OUT/raw"
    cp "$RUN_DIR/iperf1.json" "$OUT/raw/r$round-$impl-iperf1.json" 2>/dev/null || true
    cp "$RUN_DIR/iperf$PAR.json" "$OUT/raw/r$round-$impl-iperf$PAR.json" 2>/dev/null || true
    for i in a b; do
      [ -f "$RUN_DIR/daemon-$i.log" ] && cp "$RUN_DIR/daemon-$i.log" "$OUT/raw/r$round-$impl-daemon-$i.log"
    done
  fi
  printf '{"ts":"%s","round":%s,"impl":"%s","loadavg":%s,"rtt_ms":%s,"ping_loss_pct":%s,"rtt_loaded_ms":%s,"ping_loaded_loss_pct":%s,"s1":%s,"sP":%s,"hwm_kb":[%s,%s],"rss_kb":[%s,%s],"udp_rcvbuf_errors":%s}\n' \
    "$ts" "$round" "$impl" "$loadavg" "$rtt" "$loss" "$lrtt" "$lloss" "$r1" "$rp" \
    "${hwm_a:-0}" "${hwm_b:-0}" "${rss_a:-0}" "${rss_b:-0}" "${drops:-0}" >>"$RESULTS"
  log "  rtt ${rtt} ms (${lrtt} ms under load), 1 stream $("$PY" -c 'import json,sys; g=json.loads(sys.argv[1])["gbps"]; print("%.2f" % g if g is not None else "FAILED")' "$r1") Gbit/s, $PAR streams $("$PY" -c 'import json,sys; g=json.loads(sys.argv[1])["gbps"]; print("%.2f" % g if g is not None else "FAILED")' "$rp") Gbit/s"
}

# Run one case in a background subshell (so that a signal to this script is handled at once) with
# errexit in force; its status lands in CASE_RC and the run goes on. NB: never call this in an
# `if`, `||` or `&&` context: bash would then ignore errexit in the whole subshell.
case_in_subshell() {
  (
    set -euo pipefail
    trap case_cleanup EXIT
    trap 'exit 143' TERM
    trap 'exit 130' INT
    "$@"
  ) &
  CASE_PID=$!
  CASE_RC=0
  wait "$CASE_PID" || CASE_RC=$?
  CASE_PID=""
}

# ---------------------------------------------------------------- summary

summarize() {
  "$PY" - "$RESULTS" "$PAR" <<'EOF'
import json, statistics as st, sys
from collections import defaultdict
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
P = sys.argv[2]
order = ["veth", "agentd", "wireguard-go", "boringtun"]
impls = [i for i in order if any(r["impl"] == i for r in rows)]
impls += sorted({r["impl"] for r in rows} - set(impls))
by = defaultdict(dict)
for r in rows:
    by[r["impl"]][r["round"]] = r
label = {"veth": "veth, no tunnel", "agentd": "agentd", "wireguard-go": "wireguard-go",
         "boringtun": "boringtun-cli"}

def gb(r, k): return r[k].get("gbps")
def cpu(r, k):
    c = r[k]["cpu"]; return c["a_user"] + c["a_sys"] + c["b_user"] + c["b_sys"]
def sysshare(r, k):
    c = r[k]["cpu"]; t = cpu(r, k)
    return 100 * (c["a_sys"] + c["b_sys"]) / t if t > 0 else None
def cpg(r, k):
    b = r[k].get("bytes"); return cpu(r, k) / (b / 1e9) if b else None
def rt(r, k): return r[k].get("retrans")

def cell(vals, fmt="{:.2f}"):
    v = [x for x in vals if x is not None]
    if not v: return "n/a"
    if len(v) == 1: return fmt.format(v[0])
    return "{} ({}–{})".format(fmt.format(st.median(v)), fmt.format(min(v)), fmt.format(max(v)))

out = []
out.append("| implementation | rounds | TCP 1 stream Gbit/s | TCP %s streams Gbit/s | ping RTT ms, idle "
           "| ping RTT ms, during 1 stream | retransmits 1 / %s streams | daemon CPU-s per GB, 1 stream "
           "| daemon CPU-s per GB, %s streams | kernel share of daemon CPU %% | machine busy %%, 1 stream "
           "| peak RSS MiB (A / B) | UDP rcvbuf drops |" % (P, P, P))
out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for i in impls:
    rs = [by[i][k] for k in sorted(by[i])]
    tun = i != "veth"
    ha = [r["hwm_kb"][0] / 1024 for r in rs if r["hwm_kb"][0]]
    hb = [r["hwm_kb"][1] / 1024 for r in rs if r["hwm_kb"][1]]
    out.append("| {} | {} | {} | {} | {} | {} | {} / {} | {} | {} | {} | {} | {} | {} |".format(
        label.get(i, i), len(rs),
        cell([gb(r, "s1") for r in rs]), cell([gb(r, "sP") for r in rs]),
        cell([r["rtt_ms"] for r in rs], "{:.3f}"),
        cell([r.get("rtt_loaded_ms") for r in rs], "{:.3f}"),
        cell([rt(r, "s1") for r in rs], "{:.0f}"), cell([rt(r, "sP") for r in rs], "{:.0f}"),
        cell([cpg(r, "s1") for r in rs]) if tun else "–",
        cell([cpg(r, "sP") for r in rs]) if tun else "–",
        cell([sysshare(r, "s1") for r in rs], "{:.0f}") if tun else "–",
        cell([r["s1"].get("busy_pct") for r in rs], "{:.0f}"),
        "{:.1f} / {:.1f}".format(max(ha), max(hb)) if tun and ha and hb else "–",
        cell([r["udp_rcvbuf_errors"] for r in rs], "{:.0f}")))
out.append("")
out.append("Cells: median (min–max) over rounds. RTT: median of the pings of a case, idle before the")
out.append("transfers and again during the 1-stream transfer. CPU = utime+stime of both daemons during the")
out.append("iperf3 run, per GB received. Machine busy: all CPUs, all processes. Retransmits: iperf3")
out.append("sender. Drops: UdpRcvbufErrors of both namespaces.")
out.append("")

# Ratios, computed per round (only rounds where both sides have a value), then median (min–max).
metrics = [("TCP 1 stream", lambda r: gb(r, "s1"), max),
           ("TCP %s streams" % P, lambda r: gb(r, "sP"), max),
           ("ping RTT idle", lambda r: r["rtt_ms"], min),
           ("ping RTT during 1 stream", lambda r: r.get("rtt_loaded_ms"), min),
           ("CPU-s per GB, 1 stream", lambda r: cpg(r, "s1"), min),
           ("CPU-s per GB, %s streams" % P, lambda r: cpg(r, "sP"), min)]
def per_round(f, den, pick):  # den: impl name or "best"
    v = []
    for k, r in by.get("agentd", {}).items():
        a = f(r)
        if den == "best":
            c = [f(by[o][k]) for o in ("wireguard-go", "boringtun") if k in by.get(o, {})]
            c = [x for x in c if x is not None]
            b = pick(c) if c else None
        else:
            b = f(by[den][k]) if k in by.get(den, {}) else None
        if a is not None and b:
            v.append(a / b)
    return v
ratios = {}
if "agentd" in by:
    dens = [d for d in ("wireguard-go", "boringtun") if d in by]
    if dens:
        dens.append("best")
        out.append("| ratio (per round) | " + " | ".join(m[0] for m in metrics) + " |")
        out.append("|---|" + "---|" * len(metrics))
        for d in dens:
            cells = []
            for name, f, pick in metrics:
                v = per_round(f, d, pick)
                ratios[(d, name)] = v
                cells.append(cell(v, "{:.2f}×"))
            dn = {"best": "better of wireguard-go and boringtun-cli (per round, per metric)",
                  "boringtun": "boringtun-cli"}.get(d, d)
            out.append("| agentd / %s | %s |" % (dn, " | ".join(cells)))
        out.append("")
        out.append("Throughput ratios > 1 and RTT / CPU-per-GB ratios < 1 favour agentd.")
        b1 = ratios[("best", "TCP 1 stream")]; bP = ratios[("best", "TCP %s streams" % P)]
        br = ratios[("best", "ping RTT idle")]
        if b1 and bP and br:
            ok1, okP, okr = st.median(b1) >= 2, st.median(bP) >= 2, st.median(br) <= 1
            out.append("Goal (agentd >= 2x the better of the two on both stream counts, RTT no worse): "
                       "1 stream %.2fx %s, %s streams %.2fx %s, RTT %.2fx %s -> %s" % (
                st.median(b1), "ok" if ok1 else "MISSED", P, st.median(bP), "ok" if okP else "MISSED",
                st.median(br), "ok" if okr else "MISSED", "MET" if ok1 and okP and okr else "NOT MET"))
            out.append("")
if "veth" in by and "agentd" in by:
    f1 = lambda r: gb(r, "s1")
    v = [f1(by["agentd"][k]) / f1(by["veth"][k]) for k in by["agentd"]
         if k in by["veth"] and f1(by["agentd"][k]) and f1(by["veth"][k])]
    out.append("agentd / raw veth, 1 stream: %s" % cell(v, "{:.2f}×"))
    out.append("")
out.append("NB: veth carries GSO super-packets intact: a UDP GSO batch of up to 64 KiB crosses it as one")
out.append("skb and reaches the peer's UDP_GRO socket unsegmented (likewise TCP super-packets for raw veth),")
out.append("so the offload gains measured on veth are an upper bound for real NICs, which must segment")
out.append("(in hardware or in software) and rebuild batches with GRO on receive. All")
out.append("processes (iperf3 client and server, both daemons) share this machine's %d CPUs." % __import__("os").cpu_count())
out.append("")
out.append("Per round (Gbit/s 1 / %s streams, RTT ms, retransmits, daemon CPU-s A+B in the 1-stream run, "
           "steal %%, loadavg before the case):" % P)
out.append("")
out.append("| round | impl | 1 stream | %s streams | RTT idle / loaded | retrans 1 / %s | CPU-s 1 stream (user+sys A / B) | busy %% | steal %% | loadavg |" % (P, P))
out.append("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    f = lambda x, s="{:.2f}": s.format(x) if x is not None else "n/a"
    c = r["s1"]["cpu"]
    out.append("| {} | {} | {} | {} | {} / {} | {} / {} | {:.2f}+{:.2f} / {:.2f}+{:.2f} | {:.0f} | {:.1f} | {} |".format(
        r["round"], label.get(r["impl"], r["impl"]), f(gb(r, "s1")), f(gb(r, "sP")), f(r["rtt_ms"], "{:.3f}"),
        f(r.get("rtt_loaded_ms"), "{:.3f}"), rt(r, "s1"), rt(r, "sP"), c["a_user"], c["a_sys"], c["b_user"], c["b_sys"],
        r["s1"].get("busy_pct", 0), r["s1"].get("steal_pct", 0), r["loadavg"]))
print("\n".join(out))
EOF
}

# ---------------------------------------------------------------- profile mode

# Per-thread CPU of a process: "tid comm utime stime" (ticks).
thread_ticks() {
  local t
  for t in /proc/"$1"/task/*; do
    [ -r "$t/stat" ] || continue
    echo "$(basename "$t") $(tr ' ' '_' <"$t/comm") $(sed 's/^.*) //' "$t/stat" | awk '{print $12, $13}')"
  done
}

stop_tracer() { # perf/strace write their results on SIGINT (SIGTERM as a fallback)
  local pid=$1 i
  kill -INT "$pid" 2>/dev/null || return 0
  for i in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
  alive "$pid" && kill -TERM "$pid" 2>/dev/null
  for i in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
  stop_pid "$pid"
}

profile_case() {
  local pdir=$1 i
  PID_A=""; PID_B=""
  setup_netns
  DST=$TUN_B
  genkeys
  start_daemon agentd "$NS_A" "$IF_A" a; PID_A=$DAEMON_PID
  start_daemon agentd "$NS_B" "$IF_B" b; PID_B=$DAEMON_PID
  wait_agentd_up "$PID_A" a
  wait_agentd_up "$PID_B" b
  wait_tunnel
  ip netns exec "$NS_B" iperf3 -s </dev/null >"$RUN_DIR/iperf-server.log" 2>&1 &
  record_pid "$!"
  for i in $(seq 1 50); do
    ip netns exec "$NS_B" ss -ltnH 2>/dev/null | grep -q ':5201 ' && break
    sleep 0.1
  done

  # 1) plain run with per-thread CPU (user vs sys) of both ends
  thread_ticks "$PID_A" >"$pdir/threads-a.before"; thread_ticks "$PID_B" >"$pdir/threads-b.before"
  run_iperf 1 "$pdir/iperf-plain.json"; echo "$IPERF_RESULT" >"$pdir/plain.json"
  thread_ticks "$PID_A" >"$pdir/threads-a.after"; thread_ticks "$PID_B" >"$pdir/threads-b.after"
  sleep 1

  # 2) perf record -g on both daemons (software cpu-clock: hardware counters may be missing)
  if command -v perf >/dev/null 2>&1; then
    local side pid perfpids=()
    for side in a b; do
      pid=$([ $side = a ] && echo "$PID_A" || echo "$PID_B")
      perf record -e cpu-clock -F 2000 -g -p "$pid" -o "$pdir/perf-$side.data" \
        >"$pdir/perf-$side.log" 2>&1 &
      perfpids+=("$!"); record_pid "$!"
    done
    sleep 0.5
    run_iperf 1 "$pdir/iperf-perf.json"; echo "$IPERF_RESULT" >"$pdir/perf-run.json"
    for pid in "${perfpids[@]}"; do stop_tracer "$pid"; done
    for side in a b; do
      perf report -i "$pdir/perf-$side.data" --no-children --sort sym --stdio -g none \
        --percent-limit 0.5 >"$pdir/perf-$side.txt" 2>/dev/null || true
      perf report -i "$pdir/perf-$side.data" --no-children --sort dso --stdio -g none \
        >"$pdir/perf-$side-dso.txt" 2>/dev/null || true
      perf report -i "$pdir/perf-$side.data" --children --sort sym --stdio -g none \
        --percent-limit 2 >"$pdir/perf-$side-children.txt" 2>/dev/null || true
    done
    sleep 1
    # The whole machine (both daemons, iperf3, kernel softirqs) during another 1-stream run.
    local ppid
    perf record -a -e cpu-clock -F 999 -g -o "$pdir/perf-sys.data" >"$pdir/perf-sys.log" 2>&1 &
    ppid=$!; record_pid "$ppid"
    sleep 0.5
    run_iperf 1 "$pdir/iperf-sys.json"; echo "$IPERF_RESULT" >"$pdir/perf-sys-run.json"
    stop_tracer "$ppid"
    perf report -i "$pdir/perf-sys.data" --no-children --sort comm --stdio -g none \
      >"$pdir/perf-sys-comm.txt" 2>/dev/null || true
    perf report -i "$pdir/perf-sys.data" --no-children --sort comm,dso,sym --stdio -g none \
      --percent-limit 0.7 >"$pdir/perf-sys-sym.txt" 2>/dev/null || true
    # the same restricted to this benchmark's processes (the machine may be shared)
    local comms
    comms=$(perf report -i "$pdir/perf-sys.data" --no-children --sort comm --stdio -g none 2>/dev/null |
      awk '$1 ~ /%$/ {print $2}' | grep -E '^(link-|agentd|tokio|iperf3|ksoftirqd|ip$|ping$)' | paste -sd, || true)
    if [ -n "$comms" ]; then
      perf report -i "$pdir/perf-sys.data" --no-children --comms "$comms" --sort comm,dso,sym --stdio \
        -g none --percent-limit 0.7 >"$pdir/perf-sys-ours.txt" 2>/dev/null || true
    fi
    sleep 1
  else
    log "perf not installed (apt-get install linux-perf): skipping the perf profile"
  fi

  # 3) strace -c -f on both daemons: syscalls per packet
  if command -v strace >/dev/null 2>&1; then
    local side pid spids=()
    for side in a b; do
      pid=$([ $side = a ] && echo "$PID_A" || echo "$PID_B")
      strace -c -f -p "$pid" -o "$pdir/strace-$side.txt" >/dev/null 2>&1 &
      spids+=("$!"); record_pid "$!"
    done
    sleep 0.5
    run_iperf 1 "$pdir/iperf-strace.json"; echo "$IPERF_RESULT" >"$pdir/strace-run.json"
    for pid in "${spids[@]}"; do stop_tracer "$pid"; done
  fi
  "$NETCTL" --socket "$RUN_DIR/agentd-a/agentd.sock" --json links >"$pdir/links-a.json" 2>/dev/null || true
  "$NETCTL" --socket "$RUN_DIR/agentd-b/agentd.sock" --json links >"$pdir/links-b.json" 2>/dev/null || true
}

profile_report() {
  local pdir=$1
  "$PY" - "$pdir" "$CLK_TCK" "$MTU" <<'EOF'
import json, os, sys
d, hz, mtu = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
def threads(p):
    out = {}
    for l in open(p):
        tid, comm, u, s = l.split()
        out[tid] = (comm, int(u), int(s))
    return out
plain = json.load(open(os.path.join(d, "plain.json")))
pkts = (plain.get("bytes") or 0) / (mtu - 52)  # wire packets of TCP payload (MSS = MTU - 40 - 12)
print("1-stream run without tracing: %.2f Gbit/s, %d retransmits, ~%.0f tunnel packets" % (
    plain["gbps"] or 0, plain.get("retrans") or 0, pkts))
for side, role in (("a", "sender: TUN read -> encrypt -> UDP send"), ("b", "receiver: UDP recv -> decrypt -> TUN write")):
    b, a = threads(os.path.join(d, "threads-%s.before" % side)), threads(os.path.join(d, "threads-%s.after" % side))
    print("\nagentd %s (%s): per-thread CPU seconds during the run" % (side.upper(), role))
    tu = ts = 0
    for tid, (comm, u, s) in sorted(a.items()):
        u0, s0 = b.get(tid, (comm, 0, 0))[1:]
        du, ds = (u - u0) / hz, (s - s0) / hz
        tu += du; ts += ds
        if du + ds > 0:
            print("  %-16s tid %-8s user %6.2f  sys %6.2f" % (comm, tid, du, ds))
    tot = tu + ts
    if tot:
        print("  total user %.2f s (%.0f%%), sys %.2f s (%.0f%%); %.2f µs CPU per packet" % (
            tu, 100 * tu / tot, ts, 100 * ts / tot, 1e6 * tot / pkts if pkts else 0))
for side in ("a", "b"):
    p = os.path.join(d, "strace-%s.txt" % side)
    r = os.path.join(d, "strace-run.json")
    if not os.path.exists(p):
        continue
    run = json.load(open(r)); n = (run.get("bytes") or 0) / (mtu - 52)
    print("\nstrace -c -f agentd %s (run: %.2f Gbit/s under strace, ~%.0f packets):" % (side.upper(), run.get("gbps") or 0, n))
    calls = 0
    for l in open(p):
        f = l.split()
        if len(f) >= 5 and f[0][0].isdigit() and f[-1] not in ("total",):
            try:
                c = int(f[3]); name = f[-1]
            except ValueError:
                continue
            calls += c
            if c * 100 >= 1:
                print("  %-12s %9d calls  %.3f per packet" % (name, c, c / n if n else 0))
    if n:
        print("  all syscalls: %.3f per packet" % (calls / n))
EOF
}

profile() {
  need_tools
  build
  check_names_free
  trap cleanup EXIT; trap 'exit 130' INT; trap 'exit 143' TERM
  RUN_DIR=$(mktemp -d /tmp/isthmus-bench.XXXXXX)
  : >"$RUN_DIR/pids"
  snapshot_bins
  [ -n "$OUT" ] || OUT=$(mktemp -d /tmp/isthmus-profile.XXXXXX)
  mkdir -p "$OUT"
  versions | tee "$OUT/versions.txt" >&2
  log "profiling agentd, 1 stream, ${DURATION}s per run -> $OUT"
  case_in_subshell profile_case "$OUT"
  [ "$CASE_RC" = 0 ] || die "profiling failed"
  profile_report "$OUT" | tee "$OUT/profile.txt"
  echo
  for s in a b; do
    [ -f "$OUT/perf-$s.txt" ] || continue
    echo "perf (cpu-clock) agentd ${s^^}, by DSO:"
    grep -v '^#' "$OUT/perf-$s-dso.txt" | grep -v '^$' | head -8
    echo "perf (cpu-clock) agentd ${s^^}, top symbols (self):"
    grep -v '^#' "$OUT/perf-$s.txt" | grep -v '^$' | head -25
    echo
  done
  if [ -f "$OUT/perf-sys-comm.txt" ]; then
    echo "perf (cpu-clock) whole machine during a 1-stream run, by command:"
    grep -v '^#' "$OUT/perf-sys-comm.txt" | grep -v '^$' | head -10
    echo "whole machine, top symbols of this benchmark's processes (% of all samples):"
    grep -v '^#' "$OUT/perf-sys-ours.txt" 2>/dev/null | grep -v '^$' | head -30
    echo
  fi
  echo "raw data: $OUT (perf report -i $OUT/perf-a.data)"
}

# ---------------------------------------------------------------- main

main() {
  local cmd=${1:-run}
  case $cmd in
    run) ;;
    profile) profile; return ;;
    summarize)
      if [ -z "$OUT" ] || [ ! -f "$OUT/raw.jsonl" ]; then die "summarize needs OUT=dir with raw.jsonl"; fi
      RESULTS=$OUT/raw.jsonl; summarize; return ;;
    cleanup)
      [ "$RUN_ID" != $$ ] || die "cleanup needs RUN_ID=<pid of the killed run> (see the netns names isb<PID>a/b)"
      leftover_cleanup; return ;;
    -h|--help|help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; return ;;
    *) die "unknown command $cmd (run, profile, summarize, cleanup)" ;;
  esac

  need_tools
  build
  local impls=() impl
  for impl in $IMPLS; do
    if [ "$impl" = boringtun ] && [ ! -x "$BORINGTUN" ]; then
      log "boringtun-cli not found at $BORINGTUN: skipping it (cargo install boringtun-cli)"
      continue
    fi
    impls+=("$impl")
  done
  [ ${#impls[@]} -gt 0 ] || die "nothing to measure"

  check_names_free
  trap cleanup EXIT; trap 'exit 130' INT; trap 'exit 143' TERM
  RUN_DIR=$(mktemp -d /tmp/isthmus-bench.XXXXXX)
  : >"$RUN_DIR/pids"
  snapshot_bins
  if [ -z "$OUT" ]; then OUT=$RUN_DIR/out; KEEP_OUT=0; fi
  mkdir -p "$OUT"
  : >"$OUT/raw.jsonl"
  RESULTS=$OUT/raw.jsonl
  versions | tee "$OUT/versions.txt"
  echo
  local r failed=0
  for r in $(seq 1 "$ROUNDS"); do
    for impl in "${impls[@]}"; do
      case_in_subshell run_case "$impl" "$r"
      if [ "$CASE_RC" != 0 ]; then log "round $r: $impl FAILED"; failed=$((failed + 1)); fi
      sleep 2
    done
  done
  [ -s "$RESULTS" ] || die "no case succeeded"
  summarize | tee "$OUT/summary.md"
  [ "$KEEP_OUT" = 1 ] && echo && echo "raw data: $OUT"
  [ "$failed" = 0 ] || { log "$failed case(s) failed"; exit 1; }
}

# Sourcing the file (for experiments) defines the functions without running anything.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then main "$@"; fi
