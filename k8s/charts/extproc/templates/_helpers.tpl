{{- define "extproc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "extproc.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "extproc.injectorName" -}}
{{- printf "%s-injector" (include "extproc.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "extproc.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "extproc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels; pass (dict "root" $ "component" "gateway"). */}}
{{- define "extproc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "extproc.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "extproc.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The service's config.yaml: the user's config with the addresses the pod's containers,
probes and Service agree on. Pass (dict "root" $ "listen" "0.0.0.0").
*/}}
{{- define "extproc.config" -}}
{{- $p := .root.Values.ports }}
{{- $grpc := "unix:///var/run/extproc/extproc.sock" }}
{{- if eq .root.Values.mode "processor" }}
{{- $grpc = printf "0.0.0.0:%d" (int $p.grpc) }}
{{- end }}
{{- $fixed := dict
  "listener" (dict "address" .listen "port" (int $p.http))
  "service" (dict
    "grpc_address" $grpc
    "health_address" (printf "0.0.0.0:%d" (int $p.health))
    "metrics_address" (printf "0.0.0.0:%d" (int $p.metrics)))
  "admin" (dict
    "address" "127.0.0.1"
    "port" (int $p.admin)
    "readiness_address" (printf "0.0.0.0:%d" (int $p.readiness)))
}}
{{- if eq .root.Values.mode "processor" }}
{{- $_ := set $fixed.service "external_envoy" true }}
{{- end }}
{{- toYaml (mergeOverwrite (deepCopy .root.Values.config) $fixed) }}
{{- end }}

{{/* The service's environment: provider credentials from an existing Secret. */}}
{{- define "extproc.serviceEnv" -}}
{{- with .Values.providerSecret }}
envFrom:
  - secretRef:
      name: {{ . }}
{{- end }}
{{- with .Values.extraEnv }}
env:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* How the injector's serving certificate is made: cert-manager or generated. */}}
{{- define "extproc.certificateSource" -}}
{{- $source := .Values.injector.certificate.source }}
{{- if eq $source "auto" }}
{{- if .Capabilities.APIVersions.Has "cert-manager.io/v1/Certificate" }}cert-manager{{ else }}generated{{ end }}
{{- else }}{{ $source }}{{ end }}
{{- end }}

{{/* A gateway pod's preStop: fail Envoy's readiness, drain it, wait for its requests. */}}
{{- define "extproc.drainCommand" -}}
["extproc", "drain", "--admin", "http://127.0.0.1:{{ .Values.ports.admin }}", "--timeout", "{{ .Values.gateway.drainSeconds }}"]
{{- end }}
