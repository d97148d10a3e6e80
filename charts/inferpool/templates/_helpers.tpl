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

{{/* The gateway's objects: its Deployment, Service, ServiceAccount, roles, PDB, HPA. */}}
{{- define "inferpool.gatewayName" -}}
{{- printf "%s-gateway" (include "inferpool.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- /* The gateway's pods have a name of their own: the controller Deployment's selector
must not match them, and the agents' NetworkPolicy admits gRPC from them and from the
controller's pods (app.kubernetes.io/name: inferpool-operator) alone. */}}
{{- define "inferpool.gatewaySelectorLabels" -}}
app.kubernetes.io/name: inferpool-gateway
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "inferpool.commonLabels" -}}
app.kubernetes.io/part-of: inferpool
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "inferpool.gatewayLabels" -}}
{{ include "inferpool.gatewaySelectorLabels" . }}
app.kubernetes.io/component: gateway
{{ include "inferpool.commonLabels" . }}
{{- end -}}

{{- define "inferpool.labels" -}}
{{ include "inferpool.selectorLabels" . }}
app.kubernetes.io/component: controller
{{ include "inferpool.commonLabels" . }}
{{- end -}}

{{- define "inferpool.image" -}}
{{- printf "%s:%s" .repository (default $.appVersion .tag) -}}
{{- end -}}
