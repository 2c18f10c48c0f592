{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "agentpool-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name used as the prefix of every object the chart creates. */}}
{{- define "agentpool-operator.fullname" -}}
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

{{- define "agentpool-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable across upgrades, so never add the version here. */}}
{{- define "agentpool-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agentpool-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "agentpool-operator.labels" -}}
helm.sh/chart: {{ include "agentpool-operator.chart" . }}
{{ include "agentpool-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: agentpool
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "agentpool-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "agentpool-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "agentpool-operator.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* kopf peering is used only with more than one replica; one replica runs --standalone. */}}
{{- define "agentpool-operator.peered" -}}
{{- if gt (int .Values.replicaCount) 1 }}true{{ end }}
{{- end }}

{{- define "agentpool-operator.peeringName" -}}
{{- default (include "agentpool-operator.fullname" .) .Values.peering.name }}
{{- end }}

{{/*
Rules the operator needs in every namespace it serves. Shared by the ClusterRole (cluster-wide
mode) and the per-namespace Roles (namespaced mode) so both modes grant exactly the same verbs.
*/}}
{{- define "agentpool-operator.namespacedRules" -}}
# AgentPool and BuildStep: kopf lists and watches them. The operator never writes their spec or
# metadata (no kopf finalizers or progress annotations), so it needs no patch here. It deletes
# finished BuildSteps past their ttlSecondsAfterFinished (with a uid precondition).
- apiGroups: ["agentpool.dev"]
  resources: ["agentpools"]
  verbs: ["list", "watch"]
- apiGroups: ["agentpool.dev"]
  resources: ["buildsteps"]
  verbs: ["list", "watch", "delete"]
# Progress is reported by merge-patching the status subresource only.
- apiGroups: ["agentpool.dev"]
  resources: ["agentpools/status", "buildsteps/status"]
  verbs: ["patch"]
# Agent pods: created from the pool's template, watched for readiness, reaped when idle; read
# one by one to confirm that an agent whose exec fails is really gone before calling it lost.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "delete"]
# Exec over WebSocket is an HTTP GET, which the API server authorizes as "get"; Kubernetes 1.35
# and later also require "create" for WebSocket upgrades, and a POST (SPDY) exec needs "create".
- apiGroups: [""]
  resources: ["pods/exec"]
  verbs: ["create", "get"]
# The operator posts core/v1 Events about pools and steps (kopf's own event posting is off),
# and patches a repeat's count into the existing Event instead of posting another.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/*
kopf peering rules: list/watch to see the peers, patch on the one object this release uses (kopf
never reads it otherwise). Both groups are listed because kopf peers through each of kopf.dev and
zalando.org whose CRDs exist in the cluster.
*/}}
{{- define "agentpool-operator.peeringRules" -}}
{{- $resource := .resource }}
- apiGroups: ["kopf.dev", "zalando.org"]
  resources: [{{ $resource | quote }}]
  verbs: ["list", "watch"]
- apiGroups: ["kopf.dev", "zalando.org"]
  resources: [{{ $resource | quote }}]
  resourceNames: [{{ .name | quote }}]
  verbs: ["patch"]
{{- end }}
