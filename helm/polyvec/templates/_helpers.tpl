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

{{/*
A polyvec image reference; call with (dict "root" $ "image" .Values.gateway.image "cuda" false).
The tag defaults to the chart's appVersion (the polyvec version), with "-cuda" for models on GPUs:
the tags scripts/build-images.sh gives. imageRegistry, when set, prefixes the repository.
*/}}
{{- define "polyvec.image" -}}
{{- $tag := .image.tag | default (printf "%s%s" .root.Chart.AppVersion (ternary "-cuda" "" (eq (toString .cuda) "true"))) }}
{{- $repository := .image.repository }}
{{- with .root.Values.imageRegistry }}{{ $repository = printf "%s/%s" (trimSuffix "/" .) $repository }}{{ end }}
{{- printf "%s:%s" $repository $tag }}
{{- end }}

{{/* The ServiceAccount every pod of the chart runs as. */}}
{{- define "polyvec.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "polyvec.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Pod-level settings shared by every workload: ServiceAccount, priority class, pull secrets.
Call with (dict "root" $ "values" $componentValues) at the indentation of the pod spec's keys.
*/}}
{{- define "polyvec.podCommon" -}}
serviceAccountName: {{ include "polyvec.serviceAccountName" .root }}
automountServiceAccountToken: {{ .root.Values.serviceAccount.automountServiceAccountToken }}
{{- with (.values.priorityClassName | default .root.Values.priorityClassName) }}
priorityClassName: {{ . | quote }}
{{- end }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Pod template metadata: the component's labels plus podLabels (global, then the component's), and
podAnnotations (global, then the component's) after any annotations the chart sets itself.
Call with (dict "root" $ "component" "gateway" "values" $g "labels" (dict ...) "annotations" (dict ...)).
*/}}
{{- define "polyvec.podMetadata" -}}
{{- $labels := merge (dict) (default dict .values.podLabels) (default dict .root.Values.podLabels) }}
{{- $annotations := merge (dict) (default dict .annotations) (default dict .values.podAnnotations) (default dict .root.Values.podAnnotations) }}
labels:
  {{- include "polyvec.labels" (dict "root" .root "component" .component) | nindent 2 }}
  {{- with .labels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- with $labels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with $annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
topologySpreadConstraints with the component's selector filled in where a constraint has none.
Call with (dict "root" $ "component" "qdrant" "constraints" $list "labels" (dict extra selector labels)).
*/}}
{{- define "polyvec.topologySpread" -}}
{{- $selector := fromYaml (include "polyvec.selectorLabels" (dict "root" .root "component" .component)) }}
{{- $selector = merge $selector (default dict .labels) }}
{{- $out := list }}
{{- range .constraints }}
{{- $c := deepCopy . }}
{{- if not (hasKey $c "labelSelector") }}
{{- $_ := set $c "labelSelector" (dict "matchLabels" $selector) }}
{{- end }}
{{- $out = append $out $c }}
{{- end }}
{{- with $out }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
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

{{/* "true" when the gateway must send a Qdrant API key (the chart's Qdrant has one, or externalQdrant.apiKey). */}}
{{- define "polyvec.qdrant.apiKeyEnabled" -}}
{{- if .Values.qdrant.enabled }}
{{- if or (eq (toJson .Values.qdrant.apiKey) "true") (and (kindIs "string" .Values.qdrant.apiKey) .Values.qdrant.apiKey) }}true{{ end }}
{{- else if .Values.externalQdrant.apiKey }}true{{ end }}
{{- end }}

{{/*
The Qdrant API key: qdrant.apiKey as given, or with qdrant.apiKey=true a random one, generated once
and then read back from the existing Secret on every upgrade (so it never changes under a running
cluster). externalQdrant.apiKey when the chart runs no Qdrant.
*/}}
{{- define "polyvec.qdrant.apiKey" -}}
{{- if not .Values.qdrant.enabled }}
{{- .Values.externalQdrant.apiKey }}
{{- else if eq (toJson .Values.qdrant.apiKey) "true" }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "polyvec.qdrant.secretName" .) | default dict }}
{{- $data := get $existing "data" | default dict }}
{{- get $data "api-key" | b64dec | default (randAlphaNum 32) }}
{{- else if kindIs "string" .Values.qdrant.apiKey }}
{{- .Values.qdrant.apiKey }}
{{- end }}
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
