{{/* Name of the operator's objects: the release name, suffixed unless it already says so. */}}
{{- define "inferpool.fullname" -}}
{{- if contains "inferpool" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-inferpool" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "inferpool.selectorLabels" -}}
app.kubernetes.io/name: inferpool-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "inferpool.labels" -}}
{{ include "inferpool.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "inferpool.image" -}}
{{- printf "%s:%s" .repository (default $.appVersion .tag) -}}
{{- end -}}
