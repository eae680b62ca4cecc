# shellcheck shell=bash
# scripts/testenv.d/common.sh: settings, logging, the lock, pid files, ports, daemons and the
# generic start/wait/stop loop every component uses. Sourced by scripts/testenv.
#
# A component is a name NAME (its directory is $TE/NAME) and these functions, with
# FN = NAME with '-' replaced by '_':
#   FN_ensure       build or install what it needs, only if missing
#   FN_launch       start the daemon (on fresh ports unless told otherwise), no waiting
#   FN_probe        one quick readiness check (exit 0 = ready); no side effects
#   FN_ready        the check of a running component, when stricter than FN_probe (optional)
#   FN_diagnose     extra diagnosis printed when it does not become ready (optional)
#   FN_describe     the rest of its `status` line when ready
# and the generic verbs below: ready NAME, wait_ready NAME, start NAME, stop NAME...

TE="$ROOT/target/testenv"

K8S_VERSION=v1.34.3
ETCD_VERSION=v3.6.4
KWOK_VERSION=v0.8.0
MOTO_VERSION=5.2.5

CACHE_ROOT="${SEALCRED_CACHE_DIR:-$HOME/.cache/sealcred}"
BIN_DIR="$CACHE_ROOT/controlplane/k8s-$K8S_VERSION-etcd-$ETCD_VERSION"
GO_MODCACHE="${SEALCRED_GOMODCACHE:-$CACHE_ROOT/go/mod}"
GO_BUILDCACHE="${SEALCRED_GOCACHE:-$CACHE_ROOT/go/build}"
VENV="$ROOT/.venv"

READY_TIMEOUT="${SEALCRED_TESTENV_TIMEOUT:-60}" # seconds, per server
LOCK_TIMEOUT="${SEALCRED_TESTENV_LOCK_TIMEOUT:-3600}"
NODES="${SEALCRED_TESTENV_NODES:-3}"
POLL=0.05 # seconds between readiness checks

REGION=us-east-1
KMS_ALIAS=alias/sealcred-test
KMS_KEY_DESCRIPTION="sealcred-test pinned key (scripts/testenv)"
DUMMY_AWS_KEY=testing
DUMMY_AWS_SECRET=testing
SERVICE_CIDR=10.0.0.0/24
POD_CIDR=10.64.0.0/16 # KWOK hands out pod IPs from here
SA_ISSUER=https://kubernetes.default.svc.cluster.local

ETCD_BIN="$BIN_DIR/etcd"
APISERVER_BIN="$BIN_DIR/kube-apiserver"
KCM_BIN="$BIN_DIR/kube-controller-manager"
SCHEDULER_BIN="$BIN_DIR/kube-scheduler"
KWOK_BIN="$BIN_DIR/kwok-$KWOK_VERSION"
KWOK_STAGES="$BIN_DIR/kwok-$KWOK_VERSION-stages.yaml"
KUBECONFIG_FILE="$TE/kubeconfig"

log() { echo "testenv: $*" >&2; }
die() {
	echo "testenv: error: $*" >&2
	exit 1
}

need_tools() {
	local t missing=()
	for t in "$@"; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
	[ "${#missing[@]}" -eq 0 ] || die "missing tools: ${missing[*]} (install them and retry)"
}

now_ms() { echo $((${EPOCHREALTIME/./} / 1000)); }

# py ARGS...: python for small helpers; the venv's interpreter when it exists (python3 may
# be a slow pyenv shim), without site packages
py() {
	if [ -x "$VENV/bin/python" ]; then "$VENV/bin/python" -S "$@"; else python3 -S "$@"; fi
}

# ---------------------------------------------------------------------------
# locking, pids, ports

take_lock() {
	mkdir -p "$TE"
	exec 9>"$TE/lock"
	if ! flock -n 9; then
		log "waiting for another scripts/testenv (lock $TE/lock)"
		flock -w "$LOCK_TIMEOUT" 9 || die "timed out after ${LOCK_TIMEOUT}s waiting for $TE/lock"
	fi
}

read_file() { if [ -s "$1" ]; then cat "$1"; fi; }

# proc_field PID INDEX: a field of /proc/PID/stat after the command name
# (0 = state, 19 = start time in clock ticks since boot)
proc_field() {
	local stat fields
	stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
	read -r -a fields <<<"${stat##*) }"
	echo "${fields[$2]}"
}

# pid_of COMPONENT: prints the pid if the process recorded in COMPONENT/pid is still alive
# (not a zombie, and the same process: its start time is recorded next to the pid)
pid_of() {
	local pid="" start="" state
	[ -s "$TE/$1/pid" ] || return 0
	read -r pid start <"$TE/$1/pid" || true
	[ -n "$pid" ] || return 0
	state="$(proc_field "$pid" 0)" || return 0
	[ "$state" != "Z" ] || return 0
	if [ -n "$start" ] && [ "$(proc_field "$pid" 19)" != "$start" ]; then return 0; fi
	echo "$pid"
}

# free_ports N: N distinct free loopback ports, one per line (the kernel's choice for port 0)
free_ports() {
	py -c '
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print("\n".join(str(s.getsockname()[1]) for s in socks))' "$1"
}
free_port() { free_ports 1; }

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

port_of() { read_file "$TE/$1/port"; }

# start_daemon COMPONENT CMD...: runs CMD in its own session, output to COMPONENT/log.
# The child does not inherit the lock (fd 9) nor our stdout/stderr.
start_daemon() {
	local name="$1" pidfile="$TE/$1/pid" pid
	shift
	mkdir -p "$TE/$name"
	rm -f "$pidfile"
	# shellcheck disable=SC2016
	# The wrapper closes every inherited descriptor above 2 (e.g. a test harness' pipes),
	# records its pid (= the session and process-group id), then execs the server.
	setsid bash -c 'for f in /proc/$$/fd/*; do f="${f##*/}"; [ "$f" -le 2 ] || eval "exec $f>&-" 2>/dev/null || true; done
echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$pidfile" "$@" \
		</dev/null >"$TE/$name/log" 2>&1 9>&- &
	for _ in $(seq 1 200); do
		if [ -s "$pidfile" ]; then
			pid="$(cat "$pidfile")"
			echo "$pid $(proc_field "$pid" 19 || true)" >"$pidfile.tmp" && mv -f "$pidfile.tmp" "$pidfile"
			return 0
		fi
		sleep 0.02
	done
	die "$name did not start (no pid file); see $TE/$name/log"
}

# stop NAME...: SIGTERM to each process group at once, SIGKILL to what is left after 10 s
stop() {
	local name pid left
	for name in "$@"; do
		pid="$(pid_of "$name")"
		[ -z "$pid" ] || kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
	done
	for _ in $(seq 1 200); do
		left=""
		for name in "$@"; do [ -z "$(pid_of "$name")" ] || left+=" $name"; done
		[ -n "$left" ] || break
		sleep 0.05
	done
	for name in "$@"; do
		pid="$(pid_of "$name")"
		if [ -n "$pid" ]; then
			log "$name (pid $pid) did not exit after SIGTERM; sending SIGKILL"
			kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
			sleep 0.2
		fi
		rm -f "$TE/$name/pid"
	done
}

tail_log() {
	local logf="$TE/$1/log"
	echo "---- last lines of $logf ----" >&2
	tail -n "${2:-30}" "$logf" >&2 2>/dev/null || true
	echo "----" >&2
}

port_conflict_in_log() { grep -qiE 'address already in use|bind: address' "$TE/$1/log" 2>/dev/null; }

# ---------------------------------------------------------------------------
# the generic verbs

# ready NAME: its process is alive and FN_ready (if defined; else FN_probe) passes
ready() {
	local f="${1//-/_}"
	[ -n "$(pid_of "$1")" ] || return 1
	if declare -F "${f}_ready" >/dev/null; then "${f}_ready"; else "${f}_probe"; fi
}

# wait_ready NAME: polls the probe; 0 ready, 2 if the process died of a port conflict, dies
# with its log (and FN_diagnose) if it died otherwise or is not ready in READY_TIMEOUT s
wait_ready() {
	local name="$1" f="${1//-/_}" deadline=$((SECONDS + READY_TIMEOUT))
	while :; do
		if "${f}_probe"; then return 0; fi
		if [ -z "$(pid_of "$name")" ]; then
			if port_conflict_in_log "$name"; then return 2; fi
			tail_log "$name" 40
			die "$name exited during start-up"
		fi
		if [ "$SECONDS" -ge "$deadline" ]; then
			if declare -F "${f}_diagnose" >/dev/null; then "${f}_diagnose" >&2 || true; fi
			tail_log "$name" 40
			die "$name not ready after ${READY_TIMEOUT}s"
		fi
		sleep "$POLL"
	done
}

# start NAME [LAUNCH ARGS...]: launch and wait; on a port race relaunch on fresh ports (3 tries;
# with LAUNCH ARGS, i.e. fixed ports, a conflict is fatal)
start() {
	local name="$1" f="${1//-/_}" attempt rc
	shift
	for attempt in 1 2 3; do
		"${f}_launch" "$@"
		rc=0
		wait_ready "$name" || rc=$?
		[ "$rc" -ne 0 ] || return 0
		stop "$name"
		[ "$#" -eq 0 ] || {
			tail_log "$name"
			die "$name: port $* is in use; cannot restart it there"
		}
		log "$name: port race, retrying ($attempt)"
	done
	tail_log "$name"
	die "$name could not bind its ports after 3 attempts"
}

# finish NAME: wait for a component launched earlier (by FN_launch); relaunch on a port race
finish() {
	local rc=0
	wait_ready "$1" || rc=$?
	[ "$rc" -eq 0 ] && return 0
	stop "$1"
	log "$1: port race, retrying"
	start "$1"
}

# write_kubeconfig OUT PORT USER TOKEN
write_kubeconfig() {
	local out="$1" port="$2" user="$3" token="$4"
	cat >"$out.tmp.$$" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: sealcred-testenv
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority-data: $(base64 -w0 <"$TE/pki/ca.crt")
users:
- name: $user
  user:
    token: $token
contexts:
- name: sealcred-testenv
  context:
    cluster: sealcred-testenv
    user: $user
current-context: sealcred-testenv
EOF
	chmod 600 "$out.tmp.$$"
	mv -f "$out.tmp.$$" "$out"
}

# https_code PORT PATH: the HTTP status of an anonymous GET to a component's secure port
# (serving certificate from the test CA)
https_code() {
	curl -s --max-time 2 --cacert "$TE/pki/ca.crt" -o /dev/null -w '%{http_code}' \
		"https://127.0.0.1:$1$2" 2>/dev/null || true
}
