# shellcheck shell=bash
# scripts/testenv.d/controllers.sh: kube-controller-manager and kube-scheduler, as the admin
# (the kubeconfig apiserver_launch writes), serving /healthz on a loopback port with the test
# serving certificate, no leader election.

# The controllers that cannot work here, disabled instead of retrying and logging errors:
# node-ipam (no --allocate-node-cidrs / cluster CIDR: KWOK assigns pod IPs itself) and the
# cloud ones (no cloud provider).
KCM_DISABLED=(node-ipam-controller cloud-node-lifecycle-controller node-route-controller service-lb-controller)

# component_flags PORT: sets FLAGS to the flags of both: the admin kubeconfig; bearer tokens on
# the secure port checked by kube-apiserver (TokenReview, SubjectAccessReview), without
# reading ConfigMap extension-apiserver-authentication (it has no request-header CA here, and
# they would retry that forever); no leader election; no profiling
component_flags() {
	FLAGS=(--kubeconfig="$KUBECONFIG_FILE"
		--authentication-kubeconfig="$KUBECONFIG_FILE" --authorization-kubeconfig="$KUBECONFIG_FILE"
		--bind-address=127.0.0.1 --secure-port="$1"
		--tls-cert-file="$TE/pki/serving.crt" --tls-private-key-file="$TE/pki/serving.key"
		--authentication-skip-lookup=true --leader-elect=false --profiling=false)
}

# ---------------------------------------------------------------------------
# kube-controller-manager

controller_manager_ensure() { [ -x "$KCM_BIN" ] || build_k8s "$KCM_BIN" kube-controller-manager; }

controller_manager_launch() {
	local port="${1:-$(free_port)}" off FLAGS
	mkdir -p "$TE/controller-manager"
	echo "$port" >"$TE/controller-manager/port"
	off="$(printf ',-%s' "${KCM_DISABLED[@]}")"
	component_flags "$port"
	start_daemon controller-manager "$KCM_BIN" "${FLAGS[@]}" \
		--controllers="*$off" \
		--service-account-private-key-file="$TE/pki/sa.key" \
		--root-ca-file="$TE/pki/ca.crt" \
		--cluster-signing-cert-file="$TE/pki/signing-ca.crt" \
		--cluster-signing-key-file="$TE/pki/signing-ca.key" \
		--use-service-account-credentials=false \
		--kube-api-qps=100 --kube-api-burst=200
}

# healthy, and the serviceaccount controller has made namespace default's ServiceAccount
controller_manager_probe() {
	[ "$(https_code "$(port_of controller-manager)" /healthz)" = 200 ] &&
		[ "$(api_code GET /api/v1/namespaces/default/serviceaccounts/default)" = 200 ]
}

controller_manager_describe() { echo "https://127.0.0.1:$(port_of controller-manager)/healthz"; }

# ---------------------------------------------------------------------------
# kube-scheduler

scheduler_ensure() { [ -x "$SCHEDULER_BIN" ] || build_k8s "$SCHEDULER_BIN" kube-scheduler; }

scheduler_launch() {
	local port="${1:-$(free_port)}" FLAGS
	mkdir -p "$TE/scheduler"
	echo "$port" >"$TE/scheduler/port"
	component_flags "$port"
	start_daemon scheduler "$SCHEDULER_BIN" "${FLAGS[@]}"
}

# /readyz includes the informers' first sync (sched-handler-sync)
scheduler_probe() { [ "$(https_code "$(port_of scheduler)" /readyz)" = 200 ]; }

scheduler_describe() { echo "https://127.0.0.1:$(port_of scheduler)/readyz"; }
