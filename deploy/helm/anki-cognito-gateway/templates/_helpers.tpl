{{/* Names and labels. */}}
{{- define "gateway.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "gateway.labels" -}}
{{ include "gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "gateway.secretName" -}}
{{- .Values.secrets.existingSecret | default (include "gateway.fullname" .) -}}
{{- end -}}

{{- define "gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "gateway.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* The data volume's access mode: as set; else the claim's own when it exists already (the
existing claim named by persistence.existingClaim, or the chart's: a claim's access modes cannot
change, so an upgrade keeps them); else ReadWriteOnce for one pod (a
block volume is enough, and most clusters' default storage class offers no other) and
ReadWriteMany for more, or with the dynamodb registry, whose pods roll over with a surge: the
new pod mounts the volume while the old one still has it, maybe on another node. */}}
{{- define "gateway.accessMode" -}}
{{- $name := .Values.persistence.existingClaim | default (include "gateway.fullname" .) -}}
{{- $claim := lookup "v1" "PersistentVolumeClaim" .Release.Namespace $name -}}
{{- if .Values.persistence.accessMode -}}
{{- .Values.persistence.accessMode -}}
{{- else if and $claim $claim.spec.accessModes -}}
{{- first $claim.spec.accessModes -}}
{{- else if or (gt (int .Values.replicaCount) 1) (eq .Values.registry.backend "dynamodb") -}}
ReadWriteMany
{{- else -}}
ReadWriteOnce
{{- end -}}
{{- end -}}

{{/* Settings that cannot work together fail the render, naming the fix. */}}
{{- define "gateway.check" -}}
{{- if not .Values.cognito.userPoolId -}}
{{- fail "cognito.userPoolId is required" -}}
{{- end -}}
{{- if not .Values.cognito.clientId -}}
{{- fail "cognito.clientId is required" -}}
{{- end -}}
{{- if and (gt (int .Values.replicaCount) 1) (ne .Values.registry.backend "dynamodb") -}}
{{- fail "replicaCount above 1 needs registry.backend: dynamodb (pods share a DynamoDB registry)" -}}
{{- end -}}
{{- if and (gt (int .Values.replicaCount) 1) (ne (include "gateway.accessMode" .) "ReadWriteMany") -}}
{{- fail "replicaCount above 1 needs persistence.accessMode: ReadWriteMany (one collections folder for every pod)" -}}
{{- end -}}
{{- if lt (int .Values.processes) 1 -}}
{{- fail "processes: 1 or more (a pod sees its node's cores, not its CPU limit: say how many)" -}}
{{- end -}}
{{- if and (gt (int .Values.processes) 1) (eq .Values.registry.backend "dynamodb") -}}
{{- fail "processes above 1 needs registry.backend: sqlite (a cluster node runs one gateway process)" -}}
{{- end -}}
{{- if and .Values.portalHost (ne (toString .Values.portal.enabled) "true") -}}
{{- fail "portalHost needs portal.enabled: true (the portal is what that name serves)" -}}
{{- end -}}
{{- if and (not .Values.secrets.existingSecret) (lt (len .Values.secrets.secret) 16) -}}
{{- fail "secrets.secret: 16 or more characters (or secrets.existingSecret)" -}}
{{- end -}}
{{- end -}}
