{{- define "baregate.labels" -}}
app.kubernetes.io/name: baregate
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}
{{- define "baregate.selector" -}}
app.kubernetes.io/name: baregate
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
