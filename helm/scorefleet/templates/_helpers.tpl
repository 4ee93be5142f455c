{{/*
Names and labels. Worker pods carry app.kubernetes.io/name=scorefleet-worker, the label
docs/kubernetes.md and the model namespaces' NetworkPolicy select on.
*/}}
{{- define "scorefleet.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "scorefleet.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: scorefleet
{{- end -}}

{{- define "scorefleet.labels" -}}
{{ include "scorefleet.commonLabels" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* selector labels of one component: (dict "root" $ "component" "worker") */}}
{{- define "scorefleet.selector" -}}
app.kubernetes.io/name: scorefleet-{{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "scorefleet.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default "scorefleet-worker" -}}
{{- end -}}

{{- define "scorefleet.flowerServiceAccountName" -}}
{{- .Values.flower.serviceAccount.name | default "scorefleet-flower" -}}
{{- end -}}

{{- define "scorefleet.beatServiceAccountName" -}}
{{- .Values.beat.serviceAccount.name | default "scorefleet-beat" -}}
{{- end -}}

{{/* A ServiceAccount with its IRSA role:
(dict "root" $ "sa" <values> "name" <name> "path" <values path> "output" <stack output> "automount" <bool>) */}}
{{- define "scorefleet.serviceAccountDoc" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ .name }}
  labels:
    {{- include "scorefleet.labels" .root | nindent 4 }}
  annotations:
    eks.amazonaws.com/role-arn: {{ required (printf "%s.roleArn is required: the %s output of the AWS stack (IRSA)" .path .output) .sa.roleArn | quote }}
    eks.amazonaws.com/sts-regional-endpoints: "true"
    {{- with .sa.annotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
automountServiceAccountToken: {{ .automount }}
{{- end -}}

{{- define "scorefleet.image" -}}
{{- $repo := required "image.repository is required: the registry path of the image built from this repository's Dockerfile" .Values.image.repository -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repo .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* The scoring namespaces of this cluster (the first one is the default). */}}
{{- define "scorefleet.namespaces" -}}
{{- if not .Values.kubernetes.namespaces -}}
{{- fail "kubernetes.namespaces must list at least one namespace that model pods run in" -}}
{{- end -}}
{{- toJson .Values.kubernetes.namespaces -}}
{{- end -}}

{{/* Pod-level security shared by every Deployment (the image's user is 10001). */}}
{{- define "scorefleet.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "scorefleet.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* Environment shared by every role: the settings ConfigMap and the region. */}}
{{- define "scorefleet.envFrom" -}}
- configMapRef:
    name: {{ include "scorefleet.fullname" . }}-config
{{- end -}}

{{/* Changes to the settings roll every pod. */}}
{{- define "scorefleet.configChecksum" -}}
checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- end -}}

{{/* Scheduling fields of a role: (dict "v" .Values.worker) */}}
{{- define "scorefleet.scheduling" -}}
{{- with .v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .v.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}

{{/* Pod Security Admission: the restricted profile enforced, warned and audited
(docs/security.md; the workers check the same label at start-up). */}}
{{- define "scorefleet.podSecurityLabels" -}}
{{- $version := .Values.kubernetes.podSecurityVersion | default "latest" -}}
{{- range $mode := list "enforce" "warn" "audit" }}
pod-security.kubernetes.io/{{ $mode }}: restricted
pod-security.kubernetes.io/{{ $mode }}-version: {{ $version }}
{{- end }}
{{- end -}}
