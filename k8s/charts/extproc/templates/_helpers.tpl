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
{{- if eq .root.Values.processor.authentication "mtls" }}
{{- $dir := include "extproc.grpcTlsPath" . }}
{{- $_ := set $fixed.service "grpc_tls" (dict
  "cert_file" (printf "%s/tls.crt" $dir)
  "key_file" (printf "%s/tls.key" $dir)
  "client_ca_file" (printf "%s/ca.crt" $dir)
  "allowed_peers" .root.Values.processor.tls.allowedPeers) }}
{{- else }}
{{- /* mesh or insecure-none, said explicitly (checked by extproc.checkProcessor) */}}
{{- $_ := set $fixed.service "unauthenticated_grpc" true }}
{{- end }}
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

{{/* Where processor mode mounts the ext_proc port's TLS Secret. */}}
{{- define "extproc.grpcTlsPath" -}}
/etc/extproc-grpc-tls
{{- end }}

{{/* Processor mode only with its callers authenticated, or explicitly not. */}}
{{- define "extproc.checkProcessor" -}}
{{- $auth := .Values.processor.authentication }}
{{- if not $auth }}
{{- fail "processor mode: set processor.authentication: mtls (client certificates, processor.tls), mesh (the mesh's mutual TLS and authorization policy) or insecure-none (any pod networkPolicy admits can read the provider keys)" }}
{{- end }}
{{- if and (eq $auth "mtls") (or (not .Values.processor.tls.secretName) (not .Values.processor.tls.allowedPeers)) }}
{{- fail "processor.authentication mtls needs processor.tls.secretName and processor.tls.allowedPeers" }}
{{- end }}
{{- end }}

{{/* Whether the NetworkPolicy is rendered: networkPolicy.enabled, or by mode when null. */}}
{{- define "extproc.networkPolicyEnabled" -}}
{{- $enabled := .Values.networkPolicy.enabled }}
{{- if kindIs "invalid" $enabled }}{{ ternary "true" "" (ne .Values.mode "sidecar") }}{{ else }}{{ ternary "true" "" $enabled }}{{ end }}
{{- end }}

{{/*
The TCP ports the pod connects to, from the config it runs, as JSON {"00080": ["80",
"field"]} (keys in numeric order):
the backends' URLs in gateway mode (its Envoy calls them; in processor mode the Envoy
configured elsewhere does), and the Redis of accounting.store and cache in both modes
(the service calls it). A URL without a port has its scheme's; a Unix socket has none.
*/}}
{{- define "extproc.egressPorts" -}}
{{- $config := .Values.config }}
{{- $urls := list }}
{{- if eq .Values.mode "gateway" }}
{{- range $i, $backend := $config.backends }}
{{- $urls = append $urls (list (printf "config.backends[%d].url" $i) $backend.url) }}
{{- end }}
{{- end }}
{{- $store := dig "accounting" "store" "redis" "url" "" $config }}
{{- $urls = append $urls (list "config.accounting.store.redis.url" $store) }}
{{- $cache := dig "cache" "redis" "url" "" $config }}
{{- $urls = append $urls (list "config.cache.redis.url" $cache) }}
{{- $defaults := dict "http" "80" "https" "443" "redis" "6379" "rediss" "6379" }}
{{- $ports := dict }}
{{- range $urls }}
{{- $field := index . 0 }}
{{- $url := index . 1 | default "" | toString }}
{{- if $url }}
{{- $parsed := urlParse $url }}
{{- $port := regexFind ":[0-9]+$" $parsed.host | trimPrefix ":" }}
{{- $port = $port | default (get $defaults $parsed.scheme) }}
{{- if $port }}
{{- $key := printf "%05d" (int $port) }}
{{- if not (hasKey $ports $key) }}
{{- $_ := set $ports $key (list $port $field) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- toJson $ports }}
{{- end }}

{{/*
Whether rules (networkPolicy.egress) allow TCP port .port to some peer: "true" or "".
A rule without ports, an entry without a port, a range (endPort) or the port itself
does; a named port cannot be told here and does not.
*/}}
{{- define "extproc.egressAllows" -}}
{{- $port := int .port }}
{{- $allowed := false }}
{{- range .rules }}
{{- if not .ports }}
{{- $allowed = true }}
{{- end }}
{{- range .ports }}
{{- if eq (.protocol | default "TCP") "TCP" }}
{{- if not (hasKey . "port") }}
{{- $allowed = true }}
{{- else if kindIs "string" .port }}
{{- else if hasKey . "endPort" }}
{{- if and (le (int .port) $port) (ge (int .endPort) $port) }}
{{- $allowed = true }}
{{- end }}
{{- else if eq (int .port) $port }}
{{- $allowed = true }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- ternary "true" "" $allowed }}
{{- end }}
