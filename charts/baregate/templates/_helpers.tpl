{{- define "baregate.labels" -}}
app.kubernetes.io/name: baregate
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "baregate.selector" -}}
app.kubernetes.io/name: baregate
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The image reference; a digest pins it exactly and wins over the tag. */}}
{{- define "baregate.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}
{{- end }}

{{/* The port of a host:port value. */}}
{{- define "baregate.port" -}}
{{- regexFind "[0-9]+$" . -}}
{{- end }}

{{/* The dashboard port a Service can target: the unauthenticated listener if any, else the loopback one
(kubectl port-forward connects to the pod's loopback, which is the node's with hostNetwork). */}}
{{- define "baregate.uiPort" -}}
{{- include "baregate.port" (.Values.ui.unauthenticatedAddress | default .Values.ui.address) -}}
{{- end }}

{{/* Whether an ingress listener binds a port below 1024, which needs NET_BIND_SERVICE. */}}
{{- define "baregate.privilegedPorts" -}}
{{- if and .Values.ingress.enabled (or (lt (int .Values.ingress.httpPort) 1024) (lt (int .Values.ingress.httpsPort) 1024)) -}}
true
{{- end }}
{{- end }}
