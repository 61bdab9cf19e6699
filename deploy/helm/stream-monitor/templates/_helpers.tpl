{{/* Chart name, at most 63 characters. */}}
{{- define "stream-monitor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name. StatefulSet pod names append "-<ordinal>", so keep it short enough
for the pod's hostname label (63 characters) with room for the ordinal.
*/}}
{{- define "stream-monitor.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "stream-monitor.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "stream-monitor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "stream-monitor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "stream-monitor.labels" -}}
helm.sh/chart: {{ include "stream-monitor.chart" . }}
{{ include "stream-monitor.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "stream-monitor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "stream-monitor.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The TOML file: the user's .Values.config, then the [kafka] table written from .Values.kafka
(librdkafka properties for every client: consumers, producers and the admin client).
Secrets never appear here: they reach the pod as environment variables from Secrets.
*/}}
{{- define "stream-monitor.config" -}}
{{- $k := .Values.kafka -}}
{{- range list "[kafka]" "[kafka." "[security]" }}
{{- if contains . $.Values.config }}
{{- fail (printf "values.config must not set %s: the chart writes [kafka] from values.kafka (kafka.properties for more)" .) }}
{{- end }}
{{- end }}
{{- with .Values.config }}{{ trim . }}{{ "\n\n" }}{{ end -}}
# Written by the chart from values.kafka.
[kafka]
"security.protocol" = {{ $k.securityProtocol | toJson }}
{{- if $k.sasl.mechanism }}
"sasl.mechanism" = {{ $k.sasl.mechanism | toJson }}
{{- end }}
{{- if $k.sasl.username }}
"sasl.username" = {{ $k.sasl.username | toJson }}
{{- end }}
{{- if $k.tls.existingSecret }}
"ssl.ca.location" = {{ printf "/etc/stream-monitor/tls/%s" $k.tls.caKey | toJson }}
{{- end }}
{{- range $name, $value := $k.properties }}
{{ $name | toJson }} = {{ $value | toJson }}
{{- end }}
{{- end }}
