# shellcheck shell=bash
# scripts/testenv.d/build.sh: what the servers run. The moto venv, and the Go binaries
# cached in BIN_DIR (built from the wrapper modules in tools/controlplane/, only when missing).

# ensure_venv: moto[server] at MOTO_VERSION in VENV. Known installed (without the 1 s of
# importing moto) when pip's records of moto at that version and of boto3 are there.
ensure_venv() {
	local check="import moto, moto.server, boto3, sys; sys.exit(0 if moto.__version__ == '$MOTO_VERSION' else 1)"
	if [ -x "$VENV/bin/python" ] &&
		compgen -G "$VENV/lib/python3*/site-packages/moto-$MOTO_VERSION.dist-info/RECORD" >/dev/null &&
		compgen -G "$VENV/lib/python3*/site-packages/boto3-*.dist-info/RECORD" >/dev/null; then
		return 0
	fi
	if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "$check" >/dev/null 2>&1; then
		return 0
	fi
	need_tools python3
	if ! [ -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
		log "creating $VENV"
		rm -rf "$VENV"
		python3 -m venv "$VENV" || die "python3 -m venv failed (is the python3 venv module installed?)"
	fi
	log "installing moto[server]==$MOTO_VERSION into $VENV"
	"$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q "moto[server]==$MOTO_VERSION" >&2 ||
		die "pip install 'moto[server]==$MOTO_VERSION' failed"
	"$VENV/bin/python" -c "$check" || die "moto $MOTO_VERSION is not importable from $VENV after install"
}

# go_in MODULE_DIR CMD...: runs a go command in tools/controlplane/MODULE_DIR with the caches
# under CACHE_ROOT; go.sum is committed, so no sum database is needed (GOSUMDB=off)
go_in() {
	local dir="$1"
	shift
	(cd "$ROOT/tools/controlplane/$dir" &&
		GOMODCACHE="$GO_MODCACHE" GOCACHE="$GO_BUILDCACHE" GOSUMDB=off GOFLAGS="-mod=mod -buildvcs=false" \
			CGO_ENABLED=0 "$@")
}

# build_go_binary OUT MODULE_DIR [go build args...] PACKAGE: the commands used for the cached
# binaries; written to a temporary name and renamed, so a failed build leaves nothing
build_go_binary() {
	local out="$1" dir="$2" name blog t0
	name="$(basename "$out")"
	blog="$TE/build-$name.log"
	shift 2
	need_tools go
	mkdir -p "$BIN_DIR" "$GO_MODCACHE" "$GO_BUILDCACHE" "$TE"
	log "building $name into $out (cold: minutes on 2 cores; log $blog)"
	t0=$(now_ms)
	if ! go_in "$dir" go build -trimpath -o "$out.tmp.$$" "$@" >"$blog" 2>&1; then
		rm -f "$out.tmp.$$"
		echo "---- last lines of $blog ----" >&2
		tail -n 40 "$blog" >&2 || true
		die "building $name failed (go $(go env GOVERSION 2>/dev/null || echo '?'))"
	fi
	mv -f "$out.tmp.$$" "$out"
	log "built $name in $((($(now_ms) - t0) / 1000)) s"
}

# the version stamp of `make` in kubernetes/kubernetes (hack/lib/version.sh)
k8s_ldflags() {
	local minor="${K8S_VERSION#v1.}"
	minor="${minor%%.*}"
	echo "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
}

build_k8s() { # OUT MODULE_DIR
	build_go_binary "$1" "$2" -tags selinux,notest,grpcnotrace -ldflags "$(k8s_ldflags)" .
}

# KWOK: upstream's own main package (the `tool` of tools/controlplane/kwok/go.mod), stamped
# like its hack/releases.sh; plus its default stages (kwokctl's set: node-initialize,
# node-heartbeat-with-lease, pod-ready, pod-complete, pod-delete), copied from the same module
# version next to the binary, since the kwok binary alone loads no stages
build_kwok() {
	local src
	build_go_binary "$KWOK_BIN" kwok \
		-ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok
	src="$(go_in kwok go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)/kustomize/stage"
	{
		echo "# The default stages of KWOK $KWOK_VERSION ($src), written by scripts/testenv."
		for f in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
			pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
			echo "---"
			cat "$src/$f.yaml" || exit 1
		done
	} >"$KWOK_STAGES.tmp.$$" || die "copying KWOK's default stages from $src failed"
	mv -f "$KWOK_STAGES.tmp.$$" "$KWOK_STAGES"
}

ensure_binaries() {
	[ -x "$ETCD_BIN" ] || build_go_binary "$ETCD_BIN" etcd .
	[ -x "$APISERVER_BIN" ] || build_k8s "$APISERVER_BIN" kube-apiserver
	[ -x "$KCM_BIN" ] || build_k8s "$KCM_BIN" kube-controller-manager
	[ -x "$SCHEDULER_BIN" ] || build_k8s "$SCHEDULER_BIN" kube-scheduler
	{ [ -x "$KWOK_BIN" ] && [ -s "$KWOK_STAGES" ]; } || build_kwok
}
