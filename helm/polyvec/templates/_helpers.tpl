{{/* Chart name. */}}
{{- define "polyvec.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name; components append a suffix (kept within 63 characters). */}}
{{- define "polyvec.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "polyvec.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels; call with (dict "root" $ "component" "gateway"). */}}
{{- define "polyvec.selectorLabels" -}}
app.kubernetes.io/name: {{ include "polyvec.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Common labels; call with (dict "root" $ "component" "gateway"). */}}
{{- define "polyvec.labels" -}}
helm.sh/chart: {{ include "polyvec.chart" .root }}
{{ include "polyvec.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: polyvec
{{- end }}

{{/* Image reference; call with (dict "root" $ "image" .Values.gateway.image). */}}
{{- define "polyvec.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}

{{- define "polyvec.gateway.fullname" -}}
{{- printf "%s-gateway" (include "polyvec.fullname" .) }}
{{- end }}

{{/* One model's resource name; call with (dict "root" $ "name" "clip"). */}}
{{- define "polyvec.model.fullname" -}}
{{- printf "%s-model-%s" (include "polyvec.fullname" .root) .name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "polyvec.qdrant.fullname" -}}
{{- printf "%s-qdrant" (include "polyvec.fullname" .) }}
{{- end }}

{{- define "polyvec.qdrant.headless" -}}
{{- printf "%s-qdrant-headless" (include "polyvec.fullname" .) }}
{{- end }}

{{/* Secret holding the Qdrant API key (key: api-key), when one is configured. */}}
{{- define "polyvec.qdrant.secretName" -}}
{{- printf "%s-qdrant-apikey" (include "polyvec.fullname" .) }}
{{- end }}

{{- define "polyvec.qdrant.apiKey" -}}
{{- if .Values.qdrant.enabled }}{{ .Values.qdrant.apiKey }}{{ else }}{{ .Values.externalQdrant.apiKey }}{{ end }}
{{- end }}

{{/* QDRANT_URL for the gateway. */}}
{{- define "polyvec.qdrant.url" -}}
{{- if .Values.qdrant.enabled }}
{{- printf "http://%s:6333" (include "polyvec.qdrant.fullname" .) }}
{{- else if .Values.externalQdrant.url }}
{{- .Values.externalQdrant.url }}
{{- else }}
{{- fail "qdrant.enabled is false: set externalQdrant.url to the Qdrant the gateway should use" }}
{{- end }}
{{- end }}

{{/* MODELS for the gateway: name=service:50051,... (fails on duplicate model names). */}}
{{- define "polyvec.gateway.models" -}}
{{- $root := . }}
{{- $seen := dict }}
{{- $pairs := list }}
{{- range .Values.models }}
{{- if hasKey $seen .name }}
{{- fail (printf "models: the name %q is used twice" .name) }}
{{- end }}
{{- $_ := set $seen .name true }}
{{- $pairs = append $pairs (printf "%s=%s:50051" .name (include "polyvec.model.fullname" (dict "root" $root "name" .name))) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/* Name of the Secret with the gateway's API_KEYS. */}}
{{- define "polyvec.gateway.secretName" -}}
{{- default (printf "%s-gateway" (include "polyvec.fullname" .)) .Values.gateway.existingSecret }}
{{- end }}

{{/*
A models entry over modelDefaults, written into .out (a dict):
  {{- $m := dict }}{{- include "polyvec.model.merge" (dict "root" $ "model" $entry "out" $m) }}
Keys the entry sets win, false/0/{}/[] included; image, autoscaling and env are merged one
level deep (the entry's keys win), everything else (resources, nodeSelector, ...) is replaced.
*/}}
{{- define "polyvec.model.merge" -}}
{{- $out := .out }}
{{- range $k, $v := deepCopy .root.Values.modelDefaults }}
{{- $_ := set $out $k $v }}
{{- end }}
{{- range $k, $v := deepCopy .model }}
{{- if and (has $k (list "image" "autoscaling" "env")) (kindIs "map" $v) (kindIs "map" (get $out $k)) }}
{{- $merged := get $out $k }}
{{- range $k2, $v2 := $v }}
{{- $_ := set $merged $k2 $v2 }}
{{- end }}
{{- else }}
{{- $_ := set $out $k $v }}
{{- end }}
{{- end }}
{{- end }}

{{/* An environment variable value as a quoted string; whole numbers stay whole (no 6.7108864e+07). */}}
{{- define "polyvec.envValue" -}}
{{- if and (kindIs "float64" .) (eq . (float64 (int64 .))) }}
{{- int64 . | toString | quote }}
{{- else }}
{{- toString . | quote }}
{{- end }}
{{- end }}
