{{- define "sealcred.labels" -}}
app.kubernetes.io/name: sealcred-controller
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
{{- define "sealcred.selector" -}}
app.kubernetes.io/name: sealcred-controller
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
