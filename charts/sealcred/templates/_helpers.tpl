{{- define "sealcred.fullname" -}}
{{- printf "%s-sealcred-controller" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- define "sealcred.labels" -}}
app.kubernetes.io/name: sealcred-controller
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
{{- define "sealcred.selector" -}}
app.kubernetes.io/name: sealcred-controller
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{/* The namespace the controller watches ("" = all). */}}
{{- define "sealcred.watchNamespace" -}}
{{- if .Values.controller.namespace -}}
{{ .Values.controller.namespace }}
{{- else if eq .Values.rbac.scope "namespace" -}}
{{ .Release.Namespace }}
{{- end -}}
{{- end -}}
{{/* The controller's identity, as the API server names it (admission policies match it). */}}
{{- define "sealcred.username" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ .Values.serviceAccount.name }}
{{- end -}}
{{- define "sealcred.validate" -}}
{{- if not .Values.kms.allow -}}
{{- fail "kms.allow is empty: set kms.allow to the KMS key ARNs (or ARN prefixes ending in '*') the controller may use, e.g. --set 'kms.allow={arn:aws:kms:eu-west-1:111122223333:key/*}'. With none it would refuse every object." -}}
{{- end -}}
{{- if not (has .Values.rbac.scope (list "cluster" "namespace")) -}}
{{- fail (printf "rbac.scope must be \"cluster\" or \"namespace\", not %q" .Values.rbac.scope) -}}
{{- end -}}
{{- end -}}
{{/*
RBAC rules: the same as deploy/rbac.yaml (kept equal by tests/tests/install_chart.rs; why
each rule exists is written there and in docs/operations.md).
*/}}
{{- define "sealcred.rules" -}}
- apiGroups: ["sealcred.io"]
  resources: ["sealedstoragecreds"]
  verbs: ["list", "watch"]
- apiGroups: ["sealcred.io"]
  resources: ["sealedstoragecreds/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
{{- define "sealcred.clusterRules" -}}
- apiGroups: ["sealcred.io"]
  resources: ["clustersealedstoragecreds"]
  verbs: ["list", "watch"]
- apiGroups: ["sealcred.io"]
  resources: ["clustersealedstoragecreds/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["delete"]
{{- end -}}
{{- define "sealcred.restartRules" -}}
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets", "daemonsets"]
  verbs: ["get", "list", "watch", "patch"]
{{- end -}}
{{- define "sealcred.leaderRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "update"]
{{- end -}}
